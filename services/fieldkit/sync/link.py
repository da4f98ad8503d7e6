"""The mutual-TLS MQTT link to the hub broker, one for each end: the tablet's courier and the
hub's ingest each hold a ``HubLink`` (R15, R16)."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fieldkit.bus import set_no_delay

log = logging.getLogger(__name__)

KEEPALIVE_S = 10


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


class HubLink:
    """One MQTT v5 session with the hub broker over mutual TLS, kept up by paho's own loop.

    On every connect it subscribes to ``subscriptions`` again (a restarted broker has forgotten
    them), counts as connected, then calls ``on_connect``; every message goes to
    ``on_message(topic, payload)``. Both run on paho's thread: queue, or do quick work only."""

    def __init__(
        self,
        name: str,
        context: ssl.SSLContext,
        host: str,
        port: int,
        *,
        client_id: str,
        subscriptions: Sequence[str],
        on_message: Callable[[str, bytes], None],
        on_connect: Callable[[], None] | None = None,
        max_inflight: int,
        reconnect_max: int,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.subscriptions = list(subscriptions)
        self._receive = on_message
        self._connected_hook = on_connect
        self._connected = threading.Event()
        self._client = tls_client(client_id, context)
        self._client.max_inflight_messages_set(max_inflight)
        self._client.reconnect_delay_set(1, reconnect_max)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect in the background; paho reconnects with backoff for as long as it runs."""
        self._client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Queue one QoS 1 message; False when paho refused it (not connected, queue full)."""
        info = self._client.publish(topic, payload, qos=1)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("%s: the hub broker refused the connection: %s", self.name, reason)
            return
        client.subscribe([(topic, 1) for topic in self.subscriptions])
        log.info("%s: connected to the hub broker at %s:%d", self.name, self.host, self.port)
        self._connected.set()
        if self._connected_hook is not None:
            self._connected_hook()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.warning("%s: lost the hub link: %s", self.name, reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._receive(msg.topic, bytes(msg.payload))
