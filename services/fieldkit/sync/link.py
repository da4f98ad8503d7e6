"""A mutual-TLS MQTT connection to the hub broker (the device's or the ingest's)."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from fieldkit.bus import set_no_delay


def tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """Verify the hub against the kit CA only; present our own certificate; TLS 1.2 or later."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(ca))
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def tls_client(client_id: str, context: ssl.SSLContext) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set_context(context)
    client.on_socket_open = set_no_delay
    return client
