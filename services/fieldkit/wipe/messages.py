"""The wipe service's bus messages (requests to ``wipe``; events under ``wipe/evt/``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldkit.messages import Message
from fieldkit.models import SESSION_ID_PATTERN

CANARY_PATTERN = r"^[A-Za-z0-9_-]{16,64}$"


class SessionMarkers(Message):
    """What lets the wipe recognise a session's residue. Personal data: in flight only.

    Several senders may give markers for one session (the kiosk, the card service); they add up.

    ``photo_fragments_b64`` are a few short slices of the photo's compressed data
    (``fieldkit.wipe.markers.fragments_b64``), not the photo.
    """

    type: Literal["session-markers"] = "session-markers"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    application_id: str | None = Field(default=None, pattern=r"^[0-9]{23}$")
    photo_fragments_b64: list[str] = Field(default_factory=list, max_length=8)
    canary: str | None = Field(default=None, pattern=CANARY_PATTERN)
    # From the card service: the read certificate's serial (hex) and subject (its longest
    # attribute value), the card canaries of the residue catalogue (docs/card.md).
    card_serial_hex: str | None = Field(default=None, pattern=r"^[0-9a-f]{16,80}$")
    card_subject: str | None = Field(default=None, min_length=8, max_length=256)


class WipeSession(Message):
    """Erase session ``sid`` everywhere; the kiosk sends it when the applicant's session ends."""

    type: Literal["wipe-session"] = "wipe-session"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    operator: str = Field(min_length=1, max_length=64)
    markers: SessionMarkers | None = None


class MarkersAccepted(Message):
    type: Literal["markers-accepted"] = "markers-accepted"
    sid: str


class WipeResult(Message):
    """The reply to ``wipe-session``: the record's verdict, naming what failed."""

    type: Literal["wipe-result"] = "wipe-result"
    sid: str
    ok: bool
    record_id: str
    record_hash: str
    failures: list[str] = Field(default_factory=list)
    seconds: float


class UnprovenQuery(Message):
    """Which sessions' erasure is not proven: asked by a kiosk when it starts."""

    type: Literal["unproven-query"] = "unproven-query"


class UnprovenSession(Message):
    type: Literal["unproven-session"] = "unproven-session"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    operator: str


class UnprovenSessions(Message):
    """Sessions whose latest erasure record failed, oldest first (evidence: no personal data)."""

    type: Literal["unproven-sessions"] = "unproven-sessions"
    sessions: list[UnprovenSession] = Field(default_factory=list)
