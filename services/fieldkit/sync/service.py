"""The ``sync`` service: accepts records on the local bus, keeps them in the outbox, and
delivers them to the hub over mutual TLS until the hub acknowledges its commit (R15, R16, R21,
R23, R24)."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from fieldkit.antivirus.messages import AntivirusHealth, Finding
from fieldkit.bus import Incoming
from fieldkit.config import DeviceConfig
from fieldkit.messages import Message, MessageError, decode
from fieldkit.models import describe_validation_error, problem_keys
from fieldkit.pki import PkiError, load_ed25519_private, load_x25519_public
from fieldkit.runner import ServiceContext
from fieldkit.sealing import seal
from fieldkit.sync.link import tls_client, tls_context
from fieldkit.sync.messages import (
    FULL_TEXT_EN,
    FULL_TEXT_JA,
    NOT_ENROLLED_JA,
    Accepted,
    OperatorsRequest,
    OutboxStatus,
    StatusRequest,
    SubmitPacket,
    SubmitRecord,
)
from fieldkit.sync.outbox import DuplicateRecord, Outbox, OutboxFull
from fieldkit.sync.settings import SyncSection
from fieldkit.sync.wire import (
    BODY_MODELS,
    Acks,
    OperatorRoster,
    Record,
    RosterRequest,
    down_topic,
    roster_request_topic,
    roster_topic,
    roster_version,
    up_topic,
)

log = logging.getLogger(__name__)


IDLE_CHECKPOINT_S = 2.0
# (kind, sender) of the records offered again under the sender's own ID until sync takes them.
OWN_IDS = frozenset({("erasure", "wipe"), ("audit", "kiosk")})


def new_record_id() -> str:
    # Random, never derived from the applicant's data.
    return uuid.uuid4().hex


class Sealer:
    """Seals application packets to the municipality's public key from the bundle."""

    def __init__(self, bundle: Path, device_id: str) -> None:
        self.bundle = bundle
        self.device_id = device_id
        self.signing_key = load_ed25519_private(bundle / "signing.key")

    def seal_packet(self, request: SubmitPacket, record_id: str) -> dict[str, Any]:
        key_file = self.bundle / "receivers" / f"{request.municipality}.pem"
        if not key_file.exists():
            raise MessageError(
                f"no receiver key for municipality {request.municipality}; enrol it on the hub",
                ["municipality"],
            )
        sealed = seal(
            request.packet.encode(),
            load_x25519_public(key_file),
            self.signing_key,
            record_id=record_id,
            device_id=self.device_id,
            municipality=request.municipality,
        )
        return sealed.model_dump()


class Courier:
    """Outbox + hub link + the delivery loop. Usable without the bus (bench, tests)."""

    def __init__(
        self,
        device_id: str,
        settings: SyncSection,
        *,
        sealer: Sealer | None = None,
        on_change: Callable[[OutboxStatus], None] | None = None,
    ) -> None:
        self.device_id = device_id
        self.settings = settings
        self.sealer = sealer or Sealer(settings.bundle, device_id)
        self.outbox = Outbox(
            settings.outbox, max_records=settings.max_records, max_bytes=settings.max_bytes
        )
        self.on_change = on_change
        self.on_acked: Callable[[list[str]], None] | None = None
        self.on_roster: Callable[[OperatorRoster], None] | None = None
        self.roster = load_roster(settings.roster_path())
        self._roster_lock = threading.Lock()
        self._acks: queue.SimpleQueue[Acks] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        # Sent records awaiting their ack, with when we stop counting them against the window
        # (the outbox's own backoff decides when they are sent again).
        self._in_flight: dict[str, float] = {}
        self._was_full = self.outbox.full
        bundle = settings.bundle
        self._client = tls_client(
            f"{device_id}.sync",
            tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
        )
        self._client.max_inflight_messages_set(settings.window)
        self._client.reconnect_delay_set(1, int(max(1, settings.reconnect_max)))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._deliver_loop, name="sync-deliver", daemon=True)

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._client.connect_async(self.settings.hub_host, self.settings.hub_port, keepalive=10)
        self._client.loop_start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._client.disconnect()
        self._client.loop_stop()
        self.outbox.close()

    @property
    def hub_connected(self) -> bool:
        return self._connected.is_set()

    # submission -------------------------------------------------------------------------------
    def submit_record(self, kind: str, body: dict[str, Any], record_id: str | None = None) -> str:
        """Validate, sign and store a record durably; raise MessageError when refused.

        A ``record_id`` the sender chose may come again (a retry after a lost answer): one
        already in the outbox is accepted without a second copy."""
        given = record_id is not None
        record_id = record_id or new_record_id()
        model = BODY_MODELS[kind]
        try:
            model.model_validate(body)
        except ValidationError as exc:
            fields = ["body." + key for key in problem_keys(exc)]
            reason = describe_validation_error(exc, prefix="body.")
            raise MessageError(f"invalid {kind} record: {reason}", fields) from None
        # A record the sender may offer again must come out byte for byte the same (the hub
        # takes an ID it holds with the same digest as a duplicate, with another as a replay):
        # its time is the body's own, not the moment it was offered.
        at = body.get("at")
        created_at = float(at) if given and isinstance(at, int | float) else time.time()
        record = Record(
            record_id=record_id,
            device_id=self.device_id,
            kind=kind,
            created_at=created_at,
            body=body,
        ).signed(self.sealer.signing_key)
        try:
            self.outbox.submit(record_id, kind, record.encode())
        except OutboxFull as exc:
            self._notify_if_changed()
            raise MessageError(f"{exc} / {FULL_TEXT_JA}") from None
        except DuplicateRecord as exc:
            if given:
                return record_id
            raise MessageError(str(exc), ["record_id"]) from None
        self._wake.set()
        return record_id

    def submit_packet(self, request: SubmitPacket) -> str:
        record_id = new_record_id()
        body = self.sealer.seal_packet(request, record_id)
        return self.submit_record("packet", body, record_id)

    def status(self) -> OutboxStatus:
        state = self.outbox.state()
        return OutboxStatus(
            pending=state.pending,
            sent=state.sent,
            refused=state.refused,
            acked_total=state.acked_total,
            full=state.full,
            hub_connected=self.hub_connected,
            oldest_age_s=(time.time() - state.oldest_created_at)
            if state.oldest_created_at
            else None,
            text_ja=FULL_TEXT_JA if state.full else "",
            text_en=FULL_TEXT_EN if state.full else "",
        )

    def _notify_if_changed(self) -> None:
        full = self.outbox.full
        if full != self._was_full:
            self._was_full = full
            log.warning("outbox is %s", "full" if full else "accepting again")
            if self.on_change is not None:
                self.on_change(self.status())

    # hub link ---------------------------------------------------------------------------------
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("hub refused the connection: %s", reason)
            return
        client.subscribe([(down_topic(self.device_id), 1), (roster_topic(self.device_id), 1)])
        # The hub keeps no retained messages: ask for the roster on every connect.
        have = RosterRequest(have=self.roster.version)
        client.publish(roster_request_topic(self.device_id), have.encode(), qos=1)
        log.info("connected to the hub at %s:%d", self.settings.hub_host, self.settings.hub_port)
        self._connected.set()
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            log.warning("lost the hub link: %s", reason)
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == roster_topic(self.device_id):
            self.apply_roster(bytes(msg.payload))
            return
        try:
            self._acks.put(decode(bytes(msg.payload), Acks))
        except MessageError as exc:
            log.warning("unreadable acknowledgement from the hub: %s", exc.reason)
            return
        self._wake.set()

    def apply_roster(self, payload: bytes) -> bool:
        """Keep a newer operator roster from the hub, on disk first; False if not taken."""
        try:
            roster = decode(payload, OperatorRoster)
        except MessageError as exc:
            log.warning("unreadable operator roster from the hub: %s", exc.reason)
            return False
        if roster.version != roster_version(roster.operators):
            log.warning("operator roster refused: its version does not match its operators")
            return False
        with self._roster_lock:
            if roster.version == self.roster.version or roster.issued_at < self.roster.issued_at:
                return False
            save_roster(self.settings.roster_path(), roster)
            self.roster = roster
        log.info(
            "operator roster %s applied (%d operators)", roster.version[:12], len(roster.operators)
        )
        if self.on_roster is not None:
            self.on_roster(roster)
        return True

    # delivery ---------------------------------------------------------------------------------
    def _apply_acks(self) -> None:
        done: list[str] = []
        while True:
            try:
                acks = self._acks.get_nowait()
            except queue.Empty:
                break
            for ack in acks.items:
                self._in_flight.pop(ack.record_id, None)
                if ack.outcome == "refused":
                    # Not an ack: the record stays, marked, for the operator to see.
                    log.error("hub refused record %s: %s", ack.record_id, ack.reason)
                    self.outbox.refused(ack.record_id, ack.reason)
                else:
                    done.append(ack.record_id)
        if done:
            self.outbox.acked(done)
            if self.on_acked is not None:
                self.on_acked(done)
            self._notify_if_changed()

    def _send(self, record_id: str, payload: bytes) -> bool:
        info = self._client.publish(up_topic(self.device_id), payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        self._in_flight[record_id] = time.monotonic() + self.settings.ack_timeout
        return True

    def _deliver_loop(self) -> None:
        was_connected = False
        idle_checkpointed = False
        last_busy = time.monotonic()
        while not self._stop.is_set():
            self._wake.wait(0.25)
            self._wake.clear()
            try:
                self._apply_acks()
                connected = self._connected.is_set()
                if connected and not was_connected:
                    self._in_flight.clear()
                    self.outbox.retry_sent_now()
                was_connected = connected
                if not connected:
                    continue
                now = time.monotonic()
                self._in_flight = {r: t for r, t in self._in_flight.items() if t > now}
                room = self.settings.window - len(self._in_flight)

                due = self.outbox.take_due(
                    room, self.settings.ack_timeout, self.settings.backoff_max, self._send
                )
                if due or self._in_flight:
                    idle_checkpointed = False
                    last_busy = time.monotonic()
                if due:
                    self._wake.set()
                # Fold the WAL away once the outbox has been quiet for a while (not after every
                # record: a TRUNCATE checkpoint is two fsyncs that would sit in the next
                # submit's way).
                idle_for = time.monotonic() - last_busy
                if not idle_checkpointed and idle_for >= IDLE_CHECKPOINT_S:
                    self.outbox.checkpoint()
                    idle_checkpointed = True
            except Exception:
                log.exception("delivery round failed; retrying")
                time.sleep(0.5)


NO_ROSTER = OperatorRoster(version="", issued_at=0.0)


def load_roster(path: Path) -> OperatorRoster:
    """The roster kept from the hub, or an empty one (none yet, or unreadable: said in the log)."""
    try:
        return decode(path.read_bytes(), OperatorRoster)
    except FileNotFoundError:
        return NO_ROSTER
    except (OSError, MessageError) as exc:
        log.error("kept operator roster at %s unreadable (%s); waiting for the hub", path, exc)
        return NO_ROSTER


def save_roster(path: Path, roster: OperatorRoster) -> None:
    """Write the roster atomically, readable by this service only (it holds password hashes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(roster.encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def setup(ctx: ServiceContext) -> None:
    config: DeviceConfig = ctx.config

    def announce(status: OutboxStatus) -> None:
        # Called from a request handler too: publishing waits for the broker's PUBACK, which
        # the bus thread would deliver, so publish from a thread of its own.
        def publish() -> None:
            try:
                ctx.bus.publish("sync/evt/outbox", status)
            except Exception:
                log.exception("could not announce the outbox state")

        threading.Thread(target=publish, name="sync-announce", daemon=True).start()

    try:
        courier = Courier(config.device.id, config.sync, on_change=announce)
    except (OSError, PkiError) as exc:
        # Stay up and say why on every request, instead of a restart loop nobody reads.
        reason = (
            f"this tablet is not enrolled or its bundle is unreadable ({exc.__class__.__name__}"
        )
        reason += f" at {config.sync.bundle}) / {NOT_ENROLLED_JA}"
        log.error("sync cannot start its outbox: %s", reason)

        def refuse(request: Message, meta: Incoming) -> Message:
            raise MessageError(reason)

        for op, model in (
            ("submit-packet", SubmitPacket),
            ("submit", SubmitRecord),
            ("status", StatusRequest),
            ("operators", OperatorsRequest),
        ):
            ctx.bus.handle_request(op, model, refuse)
        return

    def on_packet(request: SubmitPacket, meta: Incoming) -> Accepted:
        record_id = courier.submit_packet(request)
        return Accepted(record_id=record_id, waiting=courier.outbox.state().pending)

    def on_record(request: SubmitRecord, meta: Incoming) -> Accepted:
        if request.record_id is not None and (request.kind, meta.sender) not in OWN_IDS:
            # Only the wipe (erasure records) and the kiosk (its audit trail's events) offer
            # records again under their own IDs; anyone else choosing an ID could take a place
            # meant for one of theirs.
            raise MessageError(
                "record_id: only the wipe's erasure records and the kiosk's audit events "
                "carry their own ID",
                ["record_id"],
            )
        record_id = courier.submit_record(request.kind, request.body, request.record_id)
        return Accepted(record_id=record_id, waiting=courier.outbox.state().pending)

    def on_status(request: StatusRequest, meta: Incoming) -> OutboxStatus:
        return courier.status()

    def on_operators(request: OperatorsRequest, meta: Incoming) -> OperatorRoster:
        return courier.roster

    def on_roster(roster: OperatorRoster) -> None:
        # Off the hub link's thread: publishing waits for the local broker.
        def publish() -> None:
            try:
                ctx.bus.publish("sync/evt/operators", roster)
                # Evidence on the hub of which tablet applied which roster (R13, R22).
                courier.submit_record(
                    "audit",
                    {
                        "at": time.time(),
                        "actor": "sync",
                        "action": "operators-applied",
                        "detail": {"version": roster.version, "operators": len(roster.operators)},
                    },
                )
            except Exception:
                log.exception("could not pass on the operator roster")

        threading.Thread(target=publish, name="sync-roster", daemon=True).start()

    courier.on_roster = on_roster

    def on_antivirus_health(health: AntivirusHealth, meta: Incoming) -> None:
        # What the hub's device page shows: definitions age, the gate, open findings (R10).
        courier.submit_record("health", antivirus_health_body(health))

    def on_antivirus_finding(finding: Finding, meta: Incoming) -> None:
        courier.submit_record(
            "audit",
            {
                "at": finding.detected_at,
                "actor": "antivirus",
                "action": "av-finding",
                "outcome": "finding",
                "detail": {"signature": finding.signature, "path": finding.path},
            },
        )

    ctx.bus.handle_request("submit-packet", SubmitPacket, on_packet)
    ctx.bus.handle_request("submit", SubmitRecord, on_record)
    ctx.bus.handle_event("antivirus/evt/health", AntivirusHealth, on_antivirus_health)
    ctx.bus.handle_event("antivirus/evt/finding", Finding, on_antivirus_finding)
    ctx.bus.handle_request("status", StatusRequest, on_status)
    ctx.bus.handle_request("operators", OperatorsRequest, on_operators)
    courier.start()
    ctx.on_stop(courier.stop)
    ctx.courier = courier  # type: ignore[attr-defined]


def antivirus_health_body(health: AntivirusHealth) -> dict[str, object]:
    """A device-health record from the antivirus service's own report."""
    antivirus: dict[str, object] = {
        "gate_allowed": health.gate.allowed,
        "gate_reason": health.gate.reason,
        "findings": len(health.last_scan.findings) if health.last_scan else 0,
    }
    if health.gate.definitions_age_hours is not None:
        antivirus["definitions_age_hours"] = round(health.gate.definitions_age_hours, 2)
    if health.last_update is not None:
        antivirus["last_update_ok"] = health.last_update.ok
    return {"at": health.gate.checked_at, "antivirus": antivirus}
