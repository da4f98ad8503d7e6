"""The kiosk's section of the device config."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

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


class KioskSection(Section):
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8080, ge=1, le=65535)
    operators: list[OperatorEntry] = []
    terms: TermsOfUse = TermsOfUse()
    default_mode: Literal["support", "municipal"] = "support"
    # R13: lock an operator ID after this many failed logins, for this long.
    lockout_failures: int = Field(default=5, ge=1)
    lockout_minutes: float = Field(default=10.0, gt=0)
    operator_idle_minutes: float = Field(default=15.0, gt=0)
    applicant_idle_minutes: float = Field(default=10.0, gt=0)
    # While the last session's erasure is not proven, the kiosk asks the wipe again this often.
    wipe_retry_seconds: float = Field(default=15.0, gt=0)
    prefectures: list[str] = Field(default=["20"], min_length=1)
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
