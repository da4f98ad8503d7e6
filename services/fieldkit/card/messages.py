"""Bus messages of the card service.

Requests (``<sender>/req/card/<op>``):
  ``read``   ReadCard -> CardReport   read the card in the reader now (never waits for one)

A report carries what the staff need and nothing that names the holder: whether a card is
there and readable, whether it is a My Number Card, its user-authentication certificate's
validity and issuer. The certificate's subject and serial never travel in a report; with a
session id they go to the wipe only, as that session's residue markers (docs/card.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldkit.messages import Message
from fieldkit.models import SESSION_ID_PATTERN, Strict

# What the reader and the card said, one word each, for the kiosk to put in plain words.
#   ok              a My Number Card; its user-authentication certificate was read
#   no-service      pcscd does not answer (not running, or its socket is not reachable)
#   no-reader       no card reader is connected
#   several-readers more than one reader and none chosen in [card] reader
#   no-card         the reader is empty
#   not-jpki        a card that is not a My Number Card (its JPKI application is not there)
#   removed         the card left the reader while it was being read
#   unreadable      the card did not answer as the specification says (damaged, or a fault)
CardState = Literal[
    "ok", "no-service", "no-reader", "several-readers", "no-card", "not-jpki", "removed",
    "unreadable",
]  # fmt: skip


class ReadCard(Message):
    """Read the card now. With ``sid``, what was read belongs to that session until its wipe."""

    type: Literal["card-read"] = "card-read"
    sid: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)


class CardCertificate(Strict):
    """The user-authentication certificate's validity, as the staff need it (no holder data)."""

    valid_from: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")  # dates in Japan time (JST)
    valid_to: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    # Whole days from today (JST) to the last valid day; negative once expired.
    days_left: int
    expired: bool
    not_yet_valid: bool
    # The issuing authority (J-LIS for a real card): an organisation, never the holder.
    issuer: str = Field(max_length=300)


class CardReport(Message):
    type: Literal["card-report"] = "card-report"
    state: CardState
    present: bool
    readable: bool
    my_number_card: bool
    certificate: CardCertificate | None = None
    reader: str | None = Field(default=None, max_length=200)
    read_at: float
    seconds: float
