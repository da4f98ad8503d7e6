"""Hub ingest: takes records off the hub broker, checks them, stores each exactly once,
commits, and only then acknowledges to the device (R15, R16, R21, R24).

Checks, in order: the payload is a valid ``Record``; the device id in the record equals the
one in the topic (which the broker's ACL ties to the sender's certificate CN); the device is
enrolled and not revoked; the device's Ed25519 signature verifies; the body is valid for its
kind (and a packet's own signature verifies). A refused record gets a reason on the device's
downlink and a log line with the device, record id and reason, never the content.

Records are taken in batches: one transaction (one fsync) for many records is what lets a
single ingest keep up with a burst; the acks for a batch go out after its commit.

Ingest also delivers the operator roster (R13, R22): it reads the handler registry every
``roster_poll`` seconds, pushes a changed roster to every enrolled device, and answers a
device's roster request (sent by sync on every connect) unless the device is up to date.
The hub broker keeps no retained messages, so these two paths are the whole delivery.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fieldkit.hub.db import (
    AuditRow,
    ErasureRow,
    HealthRow,
    RecordRow,
    RefusalRow,
    SealedPacketRow,
    StatisticsRow,
    make_engine,
    upgrade,
)
from fieldkit.hub.roster import read_operators
from fieldkit.hub.settings import HubSection
from fieldkit.messages import MessageError, decode
from fieldkit.models import RECORD_ID_PATTERN
from fieldkit.pki import INGEST_IDENTITY, KitPki, RosterEntry, read_roster
from fieldkit.sealing import SealedPacket, SealingError, unb64, verify_packet
from fieldkit.sync.link import tls_client, tls_context
from fieldkit.sync.wire import (
    BODY_MODELS,
    Ack,
    Acks,
    AuditEvent,
    DeviceHealth,
    ErasureEvidence,
    OperatorRoster,
    Record,
    RosterRequest,
    Statistics,
    down_topic,
    roster_topic,
    roster_version,
)
from fieldkit.wipe.record import ErasureRecord, record_problems

log = logging.getLogger(__name__)


class Refused(Exception):
    """A record the hub will not store; ``reason`` goes back to the device."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Checked:
    record: Record
    digest: str
    body: Any
    # For an erasure record: the wipe's signature verifies with the device's enrolled key.
    signed: bool = False


class Roster:
    """The enrolled devices, re-read when the PKI's roster file changes (enrol, revoke)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._entries: dict[str, RosterEntry] = {}
        self._keys: dict[str, ed25519.Ed25519PublicKey] = {}

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime != self._mtime:
            self._entries = read_roster(self.path)
            self._keys = {
                name: ed25519.Ed25519PublicKey.from_public_bytes(e.signing_public)
                for name, e in self._entries.items()
            }
            self._mtime = mtime

    def get(self, device_id: str) -> tuple[RosterEntry, ed25519.Ed25519PublicKey] | None:
        self._refresh()
        entry = self._entries.get(device_id)
        return (entry, self._keys[device_id]) if entry else None

    def active(self) -> list[str]:
        """Devices enrolled and not revoked."""
        self._refresh()
        return sorted(name for name, entry in self._entries.items() if not entry.revoked)


def check_record(topic: str, payload: bytes, roster: Roster) -> Checked:
    """Validate one uplink message; raise Refused with a reason fit for the device and log."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "fieldkit" or parts[2:] != ["up", "record"]:
        raise Refused(f"unexpected topic {topic}")
    sender = parts[1]
    try:
        record = decode(payload, Record)
    except MessageError as exc:
        raise Refused(exc.reason) from None
    if record.device_id != sender:
        raise Refused(f"record names device {record.device_id} but was sent by {sender}")
    found = roster.get(sender)
    if found is None:
        raise Refused(f"device {sender} is not enrolled")
    entry, key = found
    if entry.revoked:
        raise Refused(f"device {sender} is revoked")
    try:
        record.verify(key)
    except SealingError as exc:
        raise Refused(str(exc)) from None
    model = BODY_MODELS[record.kind]
    try:
        body = model.model_validate(record.body)
    except Exception as exc:  # pydantic.ValidationError: report fields, never values
        fields = sorted(
            {
                ".".join(str(p) for p in e["loc"])
                for e in getattr(exc, "errors", lambda **_: [])(
                    include_input=False, include_url=False
                )
            }
        )
        raise Refused(f"invalid {record.kind} body: {', '.join(fields) or 'unreadable'}") from None
    if isinstance(body, SealedPacket):
        if body.record_id != record.record_id or body.device_id != sender:
            raise Refused("sealed packet does not belong to this record")
        try:
            verify_packet(body, key)
        except SealingError as exc:
            raise Refused(str(exc)) from None
    digest = hashlib.sha256(record.signed_part()).hexdigest()
    signed = isinstance(body, ErasureEvidence) and erasure_signed(body, key)
    return Checked(record=record, digest=digest, body=body, signed=signed)


def erasure_signed(evidence: ErasureEvidence, key: ed25519.Ed25519PublicKey) -> bool:
    """The wipe's record inside hashes to itself and is signed by the enrolled device key.

    Not a reason to refuse: a record signed before the tablet was enrolled is still evidence,
    shown as not verified by the hub."""
    try:
        record = ErasureRecord.model_validate(evidence.record)
    except ValueError:
        return False
    enrolled = key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    return not record_problems(record, enrolled)


def rows_for(checked: Checked, received_at: float) -> dict[type[Any], dict[str, Any]]:
    """The rows one record becomes: its ledger entry and the row of its kind, by table."""
    record = checked.record
    rid, dev = record.record_id, record.device_id
    rows: dict[type[Any], dict[str, Any]] = {
        RecordRow: {
            "record_id": rid,
            "device_id": dev,
            "kind": record.kind,
            "created_at": record.created_at,
            "received_at": received_at,
            "digest": checked.digest,
            "signature": record.signature,
        }
    }
    body = checked.body
    if isinstance(body, SealedPacket):
        rows[SealedPacketRow] = {
            "record_id": rid,
            "municipality": body.municipality,
            "device_id": dev,
            "suite": body.suite,
            "receiver_key": body.receiver_key,
            "ciphertext": unb64(body.ciphertext, "ciphertext"),
            "signature": body.signature,
        }
    elif isinstance(body, Statistics):
        rows[StatisticsRow] = {"record_id": rid, "device_id": dev, **body.model_dump()}
    elif isinstance(body, ErasureEvidence):
        rows[ErasureRow] = {
            "record_id": rid,
            "device_id": dev,
            "signed": checked.signed,
            **body.model_dump(),
        }
    elif isinstance(body, AuditEvent):
        rows[AuditRow] = {"record_id": rid, "device_id": dev, **body.model_dump()}
    elif isinstance(body, DeviceHealth):
        rows[HealthRow] = {
            "record_id": rid,
            "device_id": dev,
            "at": body.at,
            "report": body.model_dump(),
        }
    return rows


class Ingest:
    """The ingest loop: one MQTT client on the hub broker, one database, batches."""

    def __init__(self, settings: HubSection, *, engine: Engine | None = None) -> None:
        self.settings = settings
        pki = KitPki(settings.pki)
        if settings.migrate_on_start and engine is None:
            upgrade(settings.database_url)
        self.engine = engine or make_engine(settings.database_url)
        self.roster = Roster(pki.roster)
        self._queue: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._roster_requests: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.operators: OperatorRoster | None = None
        self._operators_read = -float("inf")
        self._stop = threading.Event()
        self._connected = threading.Event()
        self.stored = 0
        self.duplicates = 0
        self.refused = 0
        context = tls_context(pki.ca_cert, pki.hub_file("ingest.crt"), pki.hub_file("ingest.key"))
        self._client = tls_client(f"{INGEST_IDENTITY}.{threading.get_native_id()}", context)
        self._client.max_inflight_messages_set(1000)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._loop, name="hub-ingest", daemon=True)

    def start(self) -> None:
        self._client.connect_async(
            self.settings.server_name, self.settings.broker_port, keepalive=10
        )
        self._client.loop_start()
        self._thread.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.disconnect()
        self._client.loop_stop()
        self.engine.dispose()

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("hub broker refused ingest: %s", reason)
            return
        client.subscribe([("fieldkit/+/up/record", 1), ("fieldkit/+/up/roster", 1)])
        self._connected.set()
        log.info("ingest connected to the hub broker")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/up/roster"):
            self._roster_requests.put((msg.topic, bytes(msg.payload)))
        else:
            self._queue.put((msg.topic, bytes(msg.payload)))

    def _take_batch(self) -> list[tuple[str, bytes]]:
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.batch_wait
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.serve_roster()
            except SQLAlchemyError as exc:
                log.error("operator roster not read: database unavailable (%s)", type(exc).__name__)
            except Exception:
                log.exception("operator roster round failed")
            batch = self._take_batch()
            if not batch:
                continue
            try:
                acks = self.ingest(batch)
            except SQLAlchemyError as exc:
                # Nothing is acked, so the devices keep their records and send them again.
                log.error(
                    "database unavailable, %d records not acknowledged: %s",
                    len(batch),
                    type(exc).__name__,
                )
                time.sleep(1.0)
                continue
            except Exception:
                # A bug must not stop the ingest; the records were not acked and come again.
                log.exception("ingest of a batch of %d records failed", len(batch))
                time.sleep(1.0)
                continue
            for device_id, items in acks.items():
                self._client.publish(down_topic(device_id), Acks(items=items).encode(), qos=1)

    def serve_roster(self) -> None:
        """Push a changed roster to every enrolled device; answer devices that asked."""
        if time.monotonic() - self._operators_read >= self.settings.roster_poll:
            self._operators_read = time.monotonic()
            with Session(self.engine) as session:
                operators = read_operators(session)
            version = roster_version(operators)
            # An empty registry (none made yet) leaves the tablets with their configured ones.
            if operators and (self.operators is None or self.operators.version != version):
                self.operators = OperatorRoster(
                    version=version, issued_at=time.time(), operators=operators
                )
                devices = self.roster.active()
                log.info(
                    "operator roster %s (%d operators) to %d devices",
                    version[:12],
                    len(operators),
                    len(devices),
                )
                for device_id in devices:
                    self._publish_roster(device_id, self.operators)
        while True:
            try:
                topic, payload = self._roster_requests.get_nowait()
            except queue.Empty:
                return
            device_id = topic.split("/")[1]
            found = self.roster.get(device_id)
            if found is None or found[0].revoked:
                log.warning("roster request from %s refused: not an enrolled device", device_id)
                continue
            try:
                have = decode(payload, RosterRequest).have
            except MessageError as exc:
                log.warning("unreadable roster request from %s: %s", device_id, exc.reason)
                continue
            if self.operators is not None and have != self.operators.version:
                self._publish_roster(device_id, self.operators)

    def _publish_roster(self, device_id: str, roster: OperatorRoster) -> None:
        self._client.publish(roster_topic(device_id), roster.encode(), qos=1)

    def ingest(self, batch: list[tuple[str, bytes]]) -> dict[str, list[Ack]]:
        """Check, store and commit a batch; return the acks to send, by device."""
        acks: dict[str, list[Ack]] = defaultdict(list)
        refusals: list[RefusalRow] = []
        good: dict[str, Checked] = {}
        now = time.time()
        for topic, payload in batch:
            sender = topic.split("/")[1] if topic.count("/") >= 1 else "?"
            try:
                if len(payload) > self.settings.max_record_bytes:
                    raise Refused("record is larger than the hub accepts")
                checked = check_record(topic, payload, self.roster)
            except Refused as exc:
                record_id = _record_id_of(payload)
                log.warning("refused a record from %s (%s): %s", sender, record_id, exc.reason)
                refusals.append(
                    RefusalRow(
                        device_id=sender[:63], record_id=record_id, at=now, reason=exc.reason[:500]
                    )
                )
                if record_id is not None:
                    acks[sender].append(
                        Ack(record_id=record_id, outcome="refused", reason=exc.reason[:500])
                    )
                continue
            rid = checked.record.record_id
            if rid in good:
                if good[rid].digest != checked.digest:
                    self._refuse_replay(checked, refusals, acks, now)
                else:
                    acks[sender].append(Ack(record_id=rid, outcome="duplicate"))
                continue
            good[rid] = checked
        with Session(self.engine) as session, session.begin():
            known: dict[str, str] = {}
            if good:
                query = select(RecordRow.record_id, RecordRow.digest).where(
                    RecordRow.record_id.in_(list(good))
                )
                known = {rid: digest for rid, digest in session.execute(query)}
            stored: list[Checked] = []
            tables: dict[type[Any], list[dict[str, Any]]] = defaultdict(list)
            for rid, checked in good.items():
                if rid in known:
                    if known[rid] == checked.digest:
                        self.duplicates += 1
                        log.info(
                            "duplicate of record %s from %s ignored", rid, checked.record.device_id
                        )
                        acks[checked.record.device_id].append(
                            Ack(record_id=rid, outcome="duplicate")
                        )
                    else:
                        self._refuse_replay(checked, refusals, acks, now)
                    continue
                for table, row in rows_for(checked, now).items():
                    tables[table].append(row)
                stored.append(checked)
            # Bulk inserts, ledger first (the kind tables reference it): one round trip each.
            order: list[type[Any]] = [RecordRow, *[t for t in tables if t is not RecordRow]]
            for model in order:
                if tables.get(model):
                    session.execute(insert(model), tables[model])
            session.add_all(refusals)
        # Committed: now, and only now, the devices may forget these records.
        for checked in stored:
            acks[checked.record.device_id].append(
                Ack(record_id=checked.record.record_id, outcome="stored")
            )
        self.stored += len(stored)
        self.refused += len(refusals)
        return acks

    def _refuse_replay(
        self,
        checked: Checked,
        refusals: list[RefusalRow],
        acks: dict[str, list[Ack]],
        now: float,
    ) -> None:
        rid, dev = checked.record.record_id, checked.record.device_id
        reason = "record id already used for a different record (replay refused)"
        log.warning("refused a record from %s (%s): %s", dev, rid, reason)
        refusals.append(RefusalRow(device_id=dev, record_id=rid, at=now, reason=reason))
        acks[dev].append(Ack(record_id=rid, outcome="refused", reason=reason))


def _record_id_of(payload: bytes) -> str | None:
    """The record id of an unreadable record, if one can be found (to name it in the ack)."""
    import json
    import re

    try:
        value = json.loads(payload).get("record_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and re.fullmatch(RECORD_ID_PATTERN, value) else None
