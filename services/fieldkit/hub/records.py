"""What the hub makes of one record from a device: the checks it must pass and the rows it
becomes (R16, R21, R24).

Checks, in order: the payload is a valid ``Record``; the device id in the record equals the
one in the topic (which the broker's ACL ties to the sender's certificate CN); the device is
enrolled and not revoked; the device's Ed25519 signature verifies; the body is valid for its
kind (and a packet's own signature verifies); a packet is sealed to the key registered for its
municipality (``fieldkit pki receiver import``), else nobody could open it. A refused record's
reason goes back on the device's downlink and into the log with the device and record id,
never the content.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from fieldkit.hub.db import (
    AuditRow,
    ErasureRow,
    HealthRow,
    RecordRow,
    SealedPacketRow,
    StatisticsRow,
)
from fieldkit.messages import MessageError, decode
from fieldkit.models import RECORD_ID_PATTERN
from fieldkit.pki import KitPki, RosterEntry, read_roster
from fieldkit.sealing import SealedPacket, SealingError, unb64, verify_packet
from fieldkit.sync.wire import (
    BODY_MODELS,
    AuditEvent,
    DeviceHealth,
    ErasureEvidence,
    Record,
    Statistics,
)
from fieldkit.wipe.record import ErasureRecord, record_problems


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


class Receivers:
    """The municipalities' registered sealing keys (their key ids), re-read when one is
    imported or replaced."""

    def __init__(self, pki: KitPki) -> None:
        self.pki = pki
        self._stamp: tuple[tuple[str, int], ...] | None = None
        self._ids: dict[str, str] = {}

    def key_id(self, municipality: str) -> str | None:
        folder = self.pki.root / "receivers"
        stamp = tuple((str(p), p.stat().st_mtime_ns) for p in sorted(folder.glob("*/public.pem")))
        if stamp != self._stamp:
            self._ids = self.pki.receiver_key_ids()
            self._stamp = stamp
        return self._ids.get(municipality)


def check_record(topic: str, payload: bytes, roster: Roster, receivers: Receivers) -> Checked:
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
        registered = receivers.key_id(body.municipality)
        if registered is None:
            raise Refused(f"no sealing key is registered for municipality {body.municipality}")
        if body.receiver_key != registered:
            raise Refused(
                f"packet sealed to key {body.receiver_key}, not to municipality "
                f"{body.municipality}'s registered key {registered}"
            )
    digest = hashlib.sha256(record.signed_part()).hexdigest()
    signed = isinstance(body, ErasureEvidence) and erasure_signed(body, entry.signing_keys_hex())
    return Checked(record=record, digest=digest, body=body, signed=signed)


def erasure_signed(evidence: ErasureEvidence, keys: set[str]) -> bool:
    """The wipe's record inside hashes to itself and is signed by one of the keys the hub
    registered for the device (hex): its current enrolment's, an earlier enrolment's, or the
    pre-enrolment key its enrolment request named.

    Not a reason to refuse: a record signed by a key the hub does not know is still evidence,
    shown as not verified by the hub."""
    try:
        record = ErasureRecord.model_validate(evidence.record)
    except ValueError:
        return False
    return record.signer in keys and not record_problems(record, record.signer)


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
            "version": body.v,
            "receipt_commitment": body.receipt_commitment,
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


def record_id_of(payload: bytes) -> str | None:
    """The record id of an unreadable record, if one can be found (to name it in the ack)."""
    try:
        value = json.loads(payload).get("record_id")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and re.fullmatch(RECORD_ID_PATTERN, value) else None
