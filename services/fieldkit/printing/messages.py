"""Bus messages of the printing service (requests, replies, events)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from fieldkit.messages import Message
from fieldkit.models import SESSION_ID_PATTERN
from fieldkit.wipe.messages import CANARY_PATTERN

# Session ids are random hex tokens, never derived from personal data (architecture §4).
APPLICATION_ID = r"^[0-9]{23}$"
# The receipt's reception number (fieldkit.kiosk.reception): prefix, day's number, check digit.
RECEPTION_NUMBER = r"^[0-9]{7}$"

JobKind = Literal["receipt", "photo-sheet"]
JobState = Literal["waiting", "queued", "printing", "held", "completed", "failed", "canceled"]
PrinterCondition = Literal[
    "ready",
    "printing",
    "offline",
    "out-of-paper",
    "paper-jam",
    "door-open",
    "out-of-ink",
    "paused",
    "queue-missing",
    "cups-unreachable",
    "error",
]


class PrintReceipt(Message):
    """Print the application receipt (申請情報の控え), two copies. R5"""

    type: Literal["print-receipt"] = "print-receipt"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    application_id: str = Field(pattern=APPLICATION_ID)
    applied_at: datetime
    site: str = Field(min_length=1, max_length=100)
    mode: Literal["support", "municipal"]
    electronic_certificate: bool
    braille: bool
    operator_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    # What staff read out on the phone instead of the session id (which the receipt never shows).
    reception_number: str = Field(pattern=RECEPTION_NUMBER)
    # The municipality the application goes to, by name (長野県松本市), never as its code.
    municipality: str = Field(min_length=1, max_length=100)
    # Where the applicant calls with the reception number ([kiosk.contact]); empty when the
    # kit has none configured (the kiosk warns staff; docs/operations.md).
    contact_phone: str = Field(default="", max_length=20)
    contact_hours_ja: str = Field(default="", max_length=100)
    contact_hours_en: str = Field(default="", max_length=100)
    # The session's random canary (never personal data): written into the PDF's metadata, where
    # no compression hides it, so the wipe's scan sees this document in the spool (R12).
    canary: str | None = Field(default=None, pattern=CANARY_PATTERN)


def reception_grouped(number: str) -> str:
    """A reception number as staff read it out: ``01-0007-3`` (prefix, day's number, check)."""
    return f"{number[:2]}-{number[2:-1]}-{number[-1]}"


class PrintPhotoSheet(Message):
    """Print the 45 × 35 mm photo, several copies with cut marks. R3"""

    type: Literal["print-photo-sheet"] = "print-photo-sheet"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    # The print master: a 35:45 (w:h) JPEG, base64. At least 300 dpi at 35 mm (413 px).
    jpeg_b64: str = Field(min_length=4, max_length=11_000_000)
    paper: Literal["l", "a4"] | None = None
    copies: int | None = Field(default=None, ge=1, le=20)
    canary: str | None = Field(default=None, pattern=CANARY_PATTERN)


class PrintAccepted(Message):
    """The reply to a print request: the job is with CUPS, or held here until it can be."""

    type: Literal["print-accepted"] = "print-accepted"
    sid: str
    job: str
    kind: JobKind
    state: JobState
    cups_job: int | None = None
    pages: int
    words_ja: str
    words_en: str


class Forget(Message):
    """Forget everything of a session: held jobs, CUPS jobs, spool files. R6, R12"""

    type: Literal["forget"] = "forget"
    sid: str = Field(pattern=SESSION_ID_PATTERN)


class Forgotten(Message):
    type: Literal["forgotten"] = "forgotten"
    sid: str
    jobs: int
    # True when the spool and the job cache were read and hold no file of the session's jobs.
    spool_checked: bool
    spool_clean: bool
    residue: list[str] = Field(default_factory=list)


class PrinterStatusRequest(Message):
    type: Literal["printer-status"] = "printer-status"


class PrinterState(Message):
    """What the kiosk shows about the printer, in plain words (Japanese first)."""

    queue: str
    condition: PrinterCondition
    words_ja: str
    words_en: str
    reasons: list[str] = Field(default_factory=list)
    waiting_jobs: int = 0


class PrinterStatus(PrinterState):
    """The reply to ``printer-status``."""

    type: Literal["printer-status-reply"] = "printer-status-reply"


class PrinterEvent(PrinterState):
    """Published on ``printing/evt/printer`` whenever the printer's condition changes."""

    type: Literal["printer"] = "printer"


class JobEvent(Message):
    """A job's progress, on ``printing/evt/session/<sid>/job``."""

    type: Literal["print-job"] = "print-job"
    sid: str
    job: str
    kind: JobKind
    state: JobState
    cups_job: int | None = None
    words_ja: str
    words_en: str
    # After completion: whether the spool was checked and found clean of the job's files.
    spool_clean: bool | None = None
