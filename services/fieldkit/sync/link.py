"""A mutual-TLS MQTT connection to the hub broker (the device's or the ingest's)."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


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
    client.on_socket_open = _no_delay
    return client


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Acks are small and latency is what the tablet waits on: no Nagle delay."""
    if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
