"""The kiosk's section of the device config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fieldkit.models import OPERATOR_ID_PATTERN, Section

# Operator IDs, as the hub's handler registry issues them and the kiosk's config lists them.


class OperatorEntry(Section):
    """One operator who may log in on this tablet (R13). Passwords only as argon2 hashes."""

    id: str = Field(pattern=OPERATOR_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    password_hash: str = Field(pattern=r"^\$argon2id\$")
    disabled: bool = False


class TermsOfUse(Section):
    """The versioned terms the applicant agrees to (R2)."""

    version: str = Field(default="2026-04", min_length=1, max_length=32)
    text_ja: str = Field(
        default=(
            "この端末は、マイナンバーカードの申請をお手伝いするためのものです。"
            "入力した内容と撮影した写真は、申請が終わるとこの端末から自動で消去されます。"
            "申請の件数などの統計(お住まいの市町村、性別、年代)は、個人が分からない形で記録します。"
        )
    )
    text_en: str = Field(
        default=(
            "This tablet helps you apply for the My Number Card. What you enter and the photo "
            "taken are erased from this tablet automatically when the application ends. "
            "Statistics (municipality, sex, age band) are recorded without identifying you."
        )
    )


# A Japanese telephone number as printed for the public: area code, exchange, line, with
# hyphens (0263-34-3000, 03-1234-5678, 0120-123-456, 050-1234-5678).
PHONE_PATTERN = r"^0[0-9]{1,4}-[0-9]{1,4}-[0-9]{3,4}$"


class ContactDesk(Section):
    """Where applicants call about their application: printed on every receipt (R5).

    Empty by default, because only the contractor knows it; a kit in the field must have it
    (the ready page warns staff while it is missing; docs/operations.md)."""

    phone: str = Field(default="", max_length=20, description="e.g. 0263-00-0000")
    hours_ja: str = Field(default="", max_length=100, description="e.g. 平日 9時〜17時")
    hours_en: str = Field(default="", max_length=100, description="e.g. Weekdays 9:00-17:00")

    @model_validator(mode="after")
    def _phone_and_hours(self) -> ContactDesk:
        if self.phone and not re.fullmatch(PHONE_PATTERN, self.phone):
            raise ValueError(
                "contact phone must be a Japanese number with hyphens, e.g. 0263-00-0000"
            )
        digits = sum(c.isdigit() for c in self.phone)
        if self.phone and digits not in (10, 11):
            raise ValueError("contact phone must have 10 or 11 digits")
        if bool(self.phone) != bool(self.hours_ja.strip()):
            raise ValueError("contact phone and hours_ja go together: set both or neither")
        return self

    @property
    def configured(self) -> bool:
        return bool(self.phone)


class KioskSection(Section):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=1, le=65535)
    operators: list[OperatorEntry] = []
    terms: TermsOfUse = TermsOfUse()
    default_mode: Literal["support", "municipal"] = "support"
    # R13: lock an operator ID after this many failed logins, for this long.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_minutes: float = Field(default=10.0, gt=0)
    # The timeouts run on the server (issue 17): an operator who does nothing for this long is
    # logged out (the page's polls are not activity), and an applicant session nobody moves on
    # for this long is abandoned and wiped. The idle timer looks this often.
    operator_idle_minutes: float = Field(default=15.0, gt=0)
    applicant_idle_minutes: float = Field(default=10.0, gt=0)
    idle_check_seconds: float = Field(default=5.0, gt=0, le=60)
    # While the last session's erasure is not proven, the kiosk asks the wipe again this often.
    wipe_retry_seconds: float = Field(default=15.0, gt=0)
    prefectures: list[str] = Field(default=["20"], min_length=1)
    # The first two digits of this tablet's reception numbers (kiosk/reception.py): give each
    # tablet of a kit its own, so a number names one application per day across the kit.
    reception_prefix: str = Field(default="01", pattern=r"^[0-9]{2}$")
    contact: ContactDesk = ContactDesk()
    # Hosts the QR's online-application URL may open (R16); anything else is refused.
    online_application_hosts: list[str] = ["app.net.kojinbango-card.go.jp"]
    # Whether this site finishes applications online in the kiosk browser (issue 6, hand-off).
    online_handoff: bool = False
    # Per-session folders for files the browser uploads; a tmpfs on the images. Default:
    # <bus.runtime_dir>/sessions.
    session_dir: Path | None = None
    # The hash-chained audit trail (R14); `fieldkit audit verify` checks it. Default:
    # <bus.runtime_dir>/kiosk-audit.jsonl; the images point it at persistent storage.
    audit_log: Path | None = None
