"""The local bus: a paho-mqtt 2.x client (MQTT v5) with one identity per service.

Topic conventions (every service publishes only under its own name; the broker ACL
enforces it, so a topic's first segment authenticates its sender):

- ``health/<svc>``               retained liveness, with a last will that says offline
- ``<svc>/error``                why a message sent to <svc> was refused
- ``<svc>/evt/<name>``           events; session-scoped ones carry the session id in the topic
- ``<svc>/req/<target>/<op>``    a request from <svc> to <target>
- ``<target>/rep/<svc>``         the reply, matched by MQTT v5 correlation data

Only ``health/<svc>`` is ever retained; payloads are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fieldkit import __version__
from fieldkit.messages import ErrorReply, Health, Message, MessageError, Ping, Pong, decode

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Message)
RequestHandler = Callable[[M, "Incoming"], Message]
EventHandler = Callable[[M, "Incoming"], None]

ENDPOINT_FILE = "broker.json"
CREDENTIALS_DIR = "credentials"


class BusError(Exception):
    """The bus could not do what was asked (connect, publish, request)."""


class RequestTimeout(BusError):
    """No reply arrived in time."""


class RequestRefused(BusError):
    """The other service answered with an error reply."""

    def __init__(self, reply: ErrorReply) -> None:
        super().__init__(f"{reply.service} refused {reply.topic}: {reply.reason}")
        self.reply = reply


@dataclass(frozen=True)
class Endpoint:
    """Where the local broker listens: a loopback TCP port or a unix socket."""

    host: str = "127.0.0.1"
    port: int = 0
    socket: Path | None = None

    def describe(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"{self.host}:{self.port}"

    def to_json(self) -> str:
        return json.dumps(
            {"host": self.host, "port": self.port, "socket": str(self.socket or "") or None}
        )

    @classmethod
    def from_json(cls, text: str) -> Endpoint:
        data = json.loads(text)
        sock = data.get("socket")
        return cls(host=data["host"], port=int(data["port"]), socket=Path(sock) if sock else None)


@dataclass(frozen=True)
class Incoming:
    """Metadata of a received message (never its payload)."""

    topic: str
    sender: str
    response_topic: str | None
    correlation: bytes | None


def read_endpoint(runtime_dir: Path, fallback: Endpoint) -> Endpoint:
    """The endpoint published by the broker launcher, else the configured one."""
    path = runtime_dir / ENDPOINT_FILE
    try:
        return Endpoint.from_json(path.read_text())
    except FileNotFoundError:
        return fallback


def bus_credential_name(identity: str) -> str:
    """The name of the systemd credential that carries an identity's bus password."""
    return f"bus-{identity}"


def read_password(runtime_dir: Path, identity: str) -> str:
    """An identity's bus password: the one systemd handed this unit (``LoadCredential=``, in
    ``$CREDENTIALS_DIRECTORY``: the image, where the files under ``/run`` are root's), else
    the runtime dir's file (the development runner; root's tools on a device)."""
    delivered = os.environ.get("CREDENTIALS_DIRECTORY")
    if delivered:
        try:
            return (Path(delivered) / bus_credential_name(identity)).read_text().strip()
        except FileNotFoundError:
            pass  # a unit handed other credentials only: the runtime dir's, as below
    path = runtime_dir / CREDENTIALS_DIR / identity
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        raise BusError(f"no bus credentials for identity {identity!r} in {path.parent}") from None


class Bus:
    """One service's connection to the local broker."""

    def __init__(
        self,
        identity: str,
        endpoint: Endpoint,
        password: str,
        *,
        keepalive: int = 10,
        announce_health: bool = True,
        max_message_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        self.identity = identity
        self.endpoint = endpoint
        self._announce = announce_health
        self._keepalive = keepalive
        self._max_bytes = max_message_bytes
        self._handlers: dict[str, Callable[[mqtt.MQTTMessage], None]] = {}
        self._observers: dict[str, Callable[[str, bytes, bool], None]] = {}
        self._pending: dict[bytes, Future[tuple[bytes, str]]] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._started = 0.0
        # PUBACK reason codes of refused publishes, by message id (e.g. "Not authorized" from
        # the ACL). paho calls on_publish before it marks the message published, so a waiter
        # finds its entry here; an acknowledged reuse of the id clears a stale one.
        self._refused: dict[int, ReasonCode] = {}
        transport: Literal["tcp", "unix"] = "unix" if endpoint.socket else "tcp"
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{identity}.{os.getpid()}.{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
            transport=transport,
        )
        self._client.username_pw_set(identity, password)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = set_no_delay
        self._initial_subscription: int | None = None
        self._subacks: set[int] = set()
        self._suback_seen = threading.Condition()
        if announce_health:
            will = Health(service=identity, state="offline", pid=os.getpid(), version=__version__)
            self._client.will_set(f"health/{identity}", will.encode(), qos=1, retain=True)
        if announce_health:
            self.handle_request("ping", Ping, self._pong)

    # -- lifecycle ---------------------------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> None:
        """Connect, subscribe to every registered handler and announce health online."""
        self._started = time.time()
        if self.endpoint.socket:
            # paho wants a positive port even for a unix socket; it is not used.
            host, port = str(self.endpoint.socket), 1
        else:
            host, port = self.endpoint.host, self.endpoint.port
        try:
            self._client.connect(host, port, keepalive=self._keepalive)
        except OSError as exc:
            raise BusError(f"cannot reach the broker at {self.endpoint.describe()}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout):
            self._client.loop_stop()
            reason = self._connect_error or "no answer"
            raise BusError(f"{self.identity}: broker refused or did not answer: {reason}")

    def close(self) -> None:
        """Say offline (retained) and disconnect cleanly, so the last will is not sent."""
        if self._connected.is_set() and self._announce:
            info = self._publish_health("offline")
            info.wait_for_publish(timeout=2)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()
        # A request still waiting for its answer will not get one: say so now, not at its
        # timeout, so the thread that sent it can end with the service.
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            with contextlib.suppress(InvalidStateError):  # answered meanwhile
                future.set_exception(BusError("the bus was closed before the answer came"))

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the bus is connected (True) or ``timeout`` passes (False)."""
        return self._connected.wait(timeout)

    def __enter__(self) -> Bus:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- publishing --------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        message: Message,
        *,
        qos: int = 1,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Publish non-retained; raise BusError if the broker refuses (e.g. ACL)."""
        payload = message.encode()
        if len(payload) > self._max_bytes:
            raise BusError(f"message for {topic} is {len(payload)} bytes, over the bus limit")
        info = self._client.publish(topic, payload, qos=qos, retain=False, properties=properties)
        if self._on_bus_thread():
            # Called from a handler: the acknowledgement can only arrive on this very thread,
            # so waiting would deadlock. A refusal is logged by _on_publish instead.
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise BusError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
            return
        self._check_publish(topic, info, timeout)

    def _on_bus_thread(self) -> bool:
        return threading.current_thread() is getattr(self._client, "_thread", None)

    def _publish_health(self, state: str) -> mqtt.MQTTMessageInfo:
        health = Health(service=self.identity, state=state, pid=os.getpid(), version=__version__)
        if state == "online":
            health = health.model_copy(update={"since": self._started})
        # The one retained topic on the bus; it carries no session id and no personal data.
        return self._client.publish(f"health/{self.identity}", health.encode(), qos=1, retain=True)

    def _check_publish(self, topic: str, info: mqtt.MQTTMessageInfo, timeout: float) -> None:
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BusError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise BusError(f"publish to {topic} refused: {exc}") from exc
        if not info.is_published():
            raise BusError(f"publish to {topic} not acknowledged within {timeout}s")
        with self._lock:
            refused = self._refused.pop(info.mid, None)
        if refused is not None:
            raise BusError(f"broker refused publish to {topic}: {refused}")

    # -- handlers ----------------------------------------------------------------------------

    def handle_request(
        self,
        op: str,
        model: type[M],
        handler: RequestHandler[M],
        *,
        worker: Executor | None = None,
    ) -> None:
        """Answer ``<anyone>/req/<me>/<op>`` with the handler's reply.

        With a ``worker``, the request is checked on the bus thread and the handler runs on
        the worker, which sends the reply: a handler that takes seconds (the session wipe)
        never holds up the network thread, so keepalives and other messages go on meanwhile.
        """

        def dispatch(msg: mqtt.MQTTMessage) -> None:
            meta = self._incoming(msg)
            try:
                request = decode(bytes(msg.payload), model)
            except MessageError as exc:
                self._refuse(meta, exc.reason, exc.fields)
                return
            if worker is None:
                answer(request, meta)
                return
            try:
                worker.submit(answer, request, meta)
            except RuntimeError:  # the worker was shut down: the service is stopping
                self._refuse(meta, "the service is stopping", [])

        def answer(request: M, meta: Incoming) -> None:
            try:
                reply = handler(request, meta)
            except MessageError as exc:
                self._refuse(meta, exc.reason, exc.fields)
                return
            except Exception:
                # The reason goes to the log by type only: exception text may carry personal data.
                log.exception("handler for %s failed", meta.topic)
                self._refuse(meta, "internal error while handling the request", [])
                return
            self._reply(meta, reply)

        self._subscribe(f"+/req/{self.identity}/{op}", dispatch)

    def handle_event(self, topic_filter: str, model: type[M], handler: EventHandler[M]) -> None:
        """Call the handler for each valid message on ``topic_filter``."""

        def dispatch(msg: mqtt.MQTTMessage) -> None:
            meta = self._incoming(msg)
            try:
                event = decode(bytes(msg.payload), model)
            except MessageError as exc:
                self._refuse(meta, exc.reason, exc.fields)
                return
            try:
                handler(event, meta)
            except Exception:
                log.exception("handler for %s failed", meta.topic)
                self._refuse(meta, "internal error while handling the event", [])

        self._subscribe(topic_filter, dispatch)

    def observe(self, topic_filter: str, observer: Callable[[str, bytes, bool], None]) -> None:
        """Raw access for audits: ``observer(topic, payload, retained)``, unvalidated."""
        with self._lock:
            self._observers[topic_filter] = observer
        if self._connected.is_set():
            self._late_subscribe(topic_filter)

    def request(
        self, target: str, op: str, message: Message, reply_model: type[R], timeout: float = 5.0
    ) -> R:
        """Send a request and wait for the reply; RequestRefused on an error reply."""
        if self._on_bus_thread():
            raise BusError("request() called from the bus thread would deadlock")
        correlation = uuid.uuid4().bytes
        props = _publish_properties()
        props.ResponseTopic = f"{target}/rep/{self.identity}"
        props.CorrelationData = correlation
        future: Future[tuple[bytes, str]] = Future()
        with self._lock:
            self._pending[correlation] = future
        try:
            # A short request is short also when its PUBACK is late (the watchdog's ping).
            topic = f"{self.identity}/req/{target}/{op}"
            self.publish(topic, message, properties=props, timeout=min(timeout, 5.0))
            try:
                payload, _topic = future.result(timeout)
            except TimeoutError:
                raise RequestTimeout(f"{target} did not answer {op} within {timeout}s") from None
        finally:
            with self._lock:
                self._pending.pop(correlation, None)
        if _message_type(payload) == "error":
            raise RequestRefused(decode(payload, ErrorReply))
        try:
            return decode(payload, reply_model)
        except MessageError as exc:
            raise BusError(f"reply from {target} to {op}: {exc.reason}") from None

    # -- internals ---------------------------------------------------------------------------

    def _subscribe(self, topic_filter: str, dispatch: Callable[[mqtt.MQTTMessage], None]) -> None:
        with self._lock:
            self._handlers[topic_filter] = dispatch
        if self._connected.is_set():
            self._late_subscribe(topic_filter)

    def _late_subscribe(self, topic_filter: str, timeout: float = 5.0) -> None:
        """Subscribe after connect() and return once the broker has acknowledged it.

        Without the wait, a message published right after ``observe`` returned could reach
        the broker before the subscription and never be delivered (seen in CI).
        """
        result, mid = self._client.subscribe(topic_filter, qos=1)
        # Not sent (the connection just dropped): the filter is registered, and the next
        # connect subscribes to it with the rest.
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None or self._on_bus_thread():
            return
        deadline = time.monotonic() + timeout
        with self._suback_seen:
            while mid not in self._subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    # Still registered, and still on its way: say so rather than fail the caller.
                    log.warning("%s: no acknowledgement yet for %s", self.identity, topic_filter)
                    return
                self._suback_seen.wait(left)
            self._subacks.discard(mid)

    def _incoming(self, msg: mqtt.MQTTMessage) -> Incoming:
        props = msg.properties
        response = getattr(props, "ResponseTopic", None) if props else None
        correlation = getattr(props, "CorrelationData", None) if props else None
        return Incoming(
            topic=msg.topic,
            sender=msg.topic.split("/", 1)[0],
            response_topic=response,
            correlation=correlation,
        )

    def _reply(self, meta: Incoming, reply: Message) -> None:
        if not meta.response_topic:
            return
        if not meta.response_topic.startswith(f"{self.identity}/rep/"):
            log.warning("ignoring response topic outside %s/rep/ on %s", self.identity, meta.topic)
            return
        props = _publish_properties()
        if meta.correlation is not None:
            props.CorrelationData = meta.correlation
        try:
            self._client.publish(meta.response_topic, reply.encode(), qos=1, properties=props)
        except ValueError:
            log.exception("reply to %s could not be sent", meta.topic)

    def _refuse(self, meta: Incoming, reason: str, fields: list[str]) -> None:
        """Tell the sender (and anyone watching ``<me>/error``) why a message was refused."""
        log.warning("refused message on %s: %s", meta.topic, reason)
        error = ErrorReply(service=self.identity, topic=meta.topic, reason=reason, fields=fields)
        self._client.publish(f"{self.identity}/error", error.encode(), qos=1)
        self._reply(meta, error)

    def _pong(self, _: Ping, __: Incoming) -> Pong:
        return Pong(service=self.identity, pid=os.getpid())

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.error("%s: broker refused the connection: %s", self.identity, reason)
            return
        with self._lock:
            filters = [*self._handlers, *self._observers]
            filters.append(f"+/rep/{self.identity}")
            # connect() returns only once the broker has acknowledged every subscription, so
            # a request sent right after start-up is not lost.
            _, self._initial_subscription = client.subscribe([(f, 1) for f in filters])
        if self._announce:
            self._publish_health("online")

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            log.error("%s: broker refused a subscription: %s", self.identity, ", ".join(failed))
        if mid == self._initial_subscription:
            self._connected.set()
            return
        with self._suback_seen:
            if len(self._subacks) > 1024:  # acknowledgements nobody waited for (bus thread)
                self._subacks.clear()
            self._subacks.add(mid)
            self._suback_seen.notify_all()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if reason.is_failure:
            log.warning("%s: disconnected from the broker: %s", self.identity, reason)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            if reason.is_failure:
                log.warning("%s: broker refused message %d: %s", self.identity, mid, reason)
                self._refused[mid] = reason
            else:
                self._refused.pop(mid, None)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if mqtt.topic_matches_sub(f"+/rep/{self.identity}", msg.topic):
            self._resolve_reply(msg)
            return
        with self._lock:
            for topic_filter, observer in self._observers.items():
                if mqtt.topic_matches_sub(topic_filter, msg.topic):
                    observer(msg.topic, bytes(msg.payload), bool(msg.retain))
        if msg.retain and not msg.topic.startswith("health/"):
            log.warning("ignoring a retained message on %s: the bus never retains", msg.topic)
            return
        with self._lock:
            handlers = [
                h for f, h in self._handlers.items() if mqtt.topic_matches_sub(f, msg.topic)
            ]
        for dispatch in handlers:
            dispatch(msg)

    def _resolve_reply(self, msg: mqtt.MQTTMessage) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        with self._lock:
            future = self._pending.get(correlation) if correlation else None
        if future is not None and not future.done():
            with contextlib.suppress(InvalidStateError):  # closed meanwhile: it has its answer
                future.set_result((bytes(msg.payload), msg.topic))


def set_no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on; with delayed ACKs every small request/reply would wait ~40 ms.
    # ssl.SSLSocket is a socket.socket too: the hub link's TLS connection gets it as well.
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _message_type(payload: bytes) -> str | None:
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    return data.get("type") if isinstance(data, dict) else None


def _publish_properties() -> Properties:
    return Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]


def collect_retained(bus: Bus, wait: float = 1.0) -> dict[str, bytes]:
    """Every retained message the broker holds, by topic (``bus`` must read ``#``)."""
    found: dict[str, bytes] = {}
    lock = threading.Lock()

    def keep(topic: str, payload: bytes, retained: bool) -> None:
        if retained:
            with lock:
                found[topic] = payload

    bus.observe("#", keep)
    bus.connect()
    threading.Event().wait(wait)
    bus.close()
    return found


def retained_violations(retained: dict[str, bytes]) -> list[str]:
    """Topics whose retained message breaks the rule: only a valid ``Health`` may be retained."""
    bad = []
    for topic, payload in retained.items():
        if not mqtt.topic_matches_sub("health/+", topic):
            bad.append(topic)
            continue
        try:
            decode(payload, Health)
        except MessageError:
            bad.append(topic)
    return sorted(bad)
