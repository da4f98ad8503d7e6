"""Requests other tablet services send to ``sync`` on the local bus, and its replies.

- ``submit-packet`` (kiosk): an application packet in plaintext; sync seals it at once
  (HPKE to the municipality's key) and only the ciphertext reaches the outbox.
- ``submit`` (kiosk, wipe, any service): statistics, erasure evidence, audit or health; with
  the sender's own ``record_id``, a second submit of the same record is accepted once.
- ``status``: the outbox's state; ``full`` means the kiosk must stop and say so.
- ``operators`` (kiosk): the operator roster last received from the hub (an
  ``OperatorRoster``; version "" if none has arrived yet).

Event ``sync/evt/outbox`` (an ``OutboxStatus``) is published whenever ``full`` changes;
``sync/evt/operators`` (an ``OperatorRoster``) whenever a newer roster arrives from the hub.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fieldkit.messages import Message
from fieldkit.models import RECORD_ID_PATTERN
from fieldkit.sealing import MUNICIPALITY_PATTERN

APPLICATION_ID_PATTERN = r"^[0-9]{23}$"

FULL_TEXT_JA = "送信待ちの記録がいっぱいです。係員に知らせてください。"
FULL_TEXT_EN = "The outbox is full. Please tell a staff member."
NOT_ENROLLED_JA = "この端末は登録されていません。係員に知らせてください。"


class ApplicationPacket(Message):
    """The applicant's data for the municipality (personal: sealed before it is stored)."""

    type: Literal["application-packet"] = "application-packet"
    application_id: str = Field(pattern=APPLICATION_ID_PATTERN)
    photo_jpeg: str = Field(description="base64 JPEG", max_length=10 * 1024 * 1024)
    electronic_certificate: bool
    braille: bool
    mode: Literal["support", "reception"]
    created_at: float


class SubmitPacket(Message):
    type: Literal["submit-packet"] = "submit-packet"
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    packet: ApplicationPacket


class SubmitRecord(Message):
    """Statistics, erasure evidence, audit event or device health; body checked by kind."""

    type: Literal["submit"] = "submit"
    kind: Literal["statistics", "erasure", "audit", "health"]
    body: dict[str, Any]
    # The sender's own ID for the record, when it may send it again (the wipe hands over its
    # erasure records until sync accepts them): the same ID is taken once, and the hub keeps
    # a record ID once. Without it, sync gives the record a fresh random ID.
    record_id: str | None = Field(default=None, pattern=RECORD_ID_PATTERN)


class Accepted(Message):
    """The record is on disk (durable) and will reach the hub."""

    type: Literal["accepted"] = "accepted"
    record_id: str
    waiting: int


class StatusRequest(Message):
    type: Literal["sync-status"] = "sync-status"


class OutboxStatus(Message):
    type: Literal["outbox-status"] = "outbox-status"
    pending: int
    sent: int
    refused: int
    acked_total: int
    full: bool
    hub_connected: bool
    oldest_age_s: float | None
    text_ja: str = ""
    text_en: str = ""


class OperatorsRequest(Message):
    type: Literal["operators-request"] = "operators-request"
