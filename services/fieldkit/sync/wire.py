"""What travels between a tablet and the hub: signed records up, acknowledgements and the
operator roster down.

Hub topics (the hub broker's ACL makes the second segment the sender's certificate CN)::

    fieldkit/<device>/up/record        one Record per message, QoS 1
    fieldkit/<device>/down/acks        Acks from hub-ingest, after its database commit
    fieldkit/<device>/up/roster        RosterRequest: the roster version the tablet holds
    fieldkit/<device>/down/operators   OperatorRoster: who may log in (argon2id hashes only)

The hub broker keeps no retained messages (R23), so the roster reaches a tablet two ways:
pushed by hub-ingest whenever the registry changes, and asked for by sync on every connect.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, Field

from fieldkit.messages import Message
from fieldkit.models import OPERATOR_ID_PATTERN, RECORD_ID_PATTERN, Strict
from fieldkit.sealing import (
    DEVICE_PATTERN,
    MUNICIPALITY_PATTERN,
    SealedPacket,
    SealingError,
    b64,
    canonical,
    unb64,
)

RecordKind = Literal["packet", "statistics", "erasure", "audit", "health"]
KINDS: tuple[RecordKind, ...] = ("packet", "statistics", "erasure", "audit", "health")


def up_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/up/record"


def down_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/down/acks"


def roster_request_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/up/roster"


def roster_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/down/operators"


class Statistics(Strict):
    """One applicant's counted outcome (R21): no names, no ids, nothing that identifies."""

    site: str = Field(max_length=200)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    sex: Literal["female", "male", "other", "unknown"]
    age_band: str = Field(pattern=r"^(\d{1,3}-\d{1,3}|\d{1,3}\+|unknown)$")
    mode: Literal["support", "reception"]
    outcome: Literal["applied", "forwarded", "abandoned"]


class AuditEvent(Strict):
    """Who did what (R14), never whose data."""

    at: float
    actor: str = Field(max_length=100)
    action: str = Field(max_length=100)
    outcome: str = Field(default="ok", max_length=100)
    detail: dict[str, str | int | float | bool] = {}


class ErasureEvidence(Strict):
    """A signed erasure record from the wipe service (R24), carried as the wipe wrote it."""

    at: float
    level: Literal["session", "daily", "contract-end"]
    verified: bool
    record: dict[str, Any] = {}


class DeviceHealth(Strict):
    at: float
    services: dict[str, str] = {}
    antivirus: dict[str, str | int | float | bool] = {}
    detail: dict[str, str | int | float | bool] = {}


BODY_MODELS: dict[str, type[BaseModel]] = {
    "packet": SealedPacket,
    "statistics": Statistics,
    "erasure": ErasureEvidence,
    "audit": AuditEvent,
    "health": DeviceHealth,
}


class Record(Message):
    """The unit the outbox keeps and the hub stores exactly once, signed by the device."""

    type: Literal["record"] = "record"
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_PATTERN)
    kind: RecordKind
    created_at: float
    body: dict[str, Any]
    signature: str = ""

    def signed_part(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))

    def signed(self, key: ed25519.Ed25519PrivateKey) -> Record:
        return self.model_copy(update={"signature": b64(key.sign(self.signed_part()))})

    def verify(self, key: ed25519.Ed25519PublicKey) -> None:
        try:
            key.verify(unb64(self.signature, "signature"), self.signed_part())
        except InvalidSignature:
            raise SealingError("record signature does not verify") from None


class Ack(Strict):
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    outcome: Literal["stored", "duplicate", "refused"]
    reason: str = ""


class Acks(Message):
    """The hub's answer for a batch of records, sent only after its database commit."""

    type: Literal["acks"] = "acks"
    items: list[Ack]


class RosterOperator(Strict):
    """One tablet operator from the hub's handler registry (R13, R22)."""

    id: str = Field(pattern=OPERATOR_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    duty: Literal["responsible", "handler"]
    password_hash: str = Field(pattern=r"^\$argon2id\$", max_length=200)
    disabled: bool


class OperatorRoster(Message):
    """Every operator of the programme, as the hub's registry holds them.

    ``version`` is a digest of the operators (the same registry gives the same version);
    ``issued_at`` is when the hub first saw that version, so a tablet keeps the newest.
    An empty ``version`` means "no roster yet" (sync's answer before the hub has sent one).
    """

    type: Literal["operator-roster"] = "operator-roster"
    version: str = Field(pattern=r"^([0-9a-f]{64})?$")
    issued_at: float
    operators: list[RosterOperator] = Field(default=[], max_length=10_000)


def roster_version(operators: list[RosterOperator]) -> str:
    ordered = sorted((o.model_dump() for o in operators), key=lambda o: str(o["id"]))
    return hashlib.sha256(canonical({"operators": ordered})).hexdigest()


class RosterRequest(Message):
    """Sent by sync on every connect: the hub answers unless the tablet is up to date."""

    type: Literal["roster-request"] = "roster-request"
    have: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
