"""The application ID (申請書ID) on a My Number Card application form. R1

The form's QR code carries the 23-digit ID, usually inside the URL of the online
application; the exact payload is not published. So the ID is taken defensively: the
payload's maximal runs of ASCII digits are found, and exactly one distinct run of exactly
23 digits must be present. A bare 23-digit payload is accepted the same way, and so is
manual entry (full-width digits, spaces and hyphens between digit groups allowed), through
the same function, so the QR path and the keyboard path cannot drift apart.

An ``ApplicationId`` is personal data: its ``repr`` masks the digits, and no refusal reason
ever contains the payload or a digit from it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

APPLICATION_ID_DIGITS = 23
MY_NUMBER_DIGITS = 12
# How the ID is shown for staff to compare with the form: five groups of four digits and one
# of three (the groups the form and the online application's entry boxes use), so a misread
# digit is found group by group instead of in a run of 23.
DISPLAY_GROUPS = (4, 4, 4, 4, 4, 3)
# The demo camera's ID (``sources.DemoSource``): fixed, synthetic, and with mixed digits, so that
# no ordinary file holds it by chance (a run of one digit is in images, logs and .git objects,
# and a residue scan for it would find them). The wipe's scans do not count it as applicant
# data (``fieldkit.wipe.markers.NOT_PERSONAL_IDS``).
DEMO_ID = "43181239386300944961533"

# Maximal runs of ASCII digits (the lookarounds keep a run from being cut out of a longer one).
_DIGIT_RUN = re.compile(r"(?<![0-9])[0-9]+(?![0-9])")
# What a typed-in ID may look like: digit groups separated by single spaces or hyphens.
_SEPARATORS = " -\u2010\uff0d\u30fc"  # space, hyphens, full-width hyphen, long vowel mark
_TYPED = re.compile(f"^[0-9]+(?:[{_SEPARATORS}][0-9]+)*$")
_FULL_WIDTH_DIGITS = {0xFF10 + d: 0x30 + d for d in range(10)}  # full-width digits -> ASCII
_TYPED_SEPARATORS = str.maketrans("", "", _SEPARATORS)

RefusalCode = Literal[
    "unreadable", "not-application-form", "wrong-length", "my-number", "several-ids"
]

# Operator-facing reasons, Japanese first, in plain words. They name what is wrong and what to do.
REFUSAL_TEXT: dict[RefusalCode, tuple[str, str]] = {
    "unreadable": (
        "QRコードを読み取れません。用紙を平らにして、明るい所でもう一度かざしてください。",
        "The QR code cannot be read. Flatten the form and hold it up again in good light.",
    ),
    "not-application-form": (
        "この用紙はマイナンバーカードの交付申請書ではありません。申請書のQRコードをかざしてください。",
        "This is not a My Number Card application form. Show the QR code on the application form.",
    ),
    "wrong-length": (
        "申請書IDは23桁の数字です。桁数が違います。もう一度確認してください。",
        "The application ID has 23 digits; this number has a different length. Check it again.",
    ),
    "my-number": (
        "12桁の番号はマイナンバー(個人番号)です。申請書IDは23桁です。申請書IDを入力してください。",
        "A 12-digit number is the My Number itself, not the 23-digit application ID.",
    ),
    "several-ids": (
        "違う申請書IDが2つ以上写っています。1枚だけかざしてください。",
        "Two or more different application IDs are in view. Show one form at a time.",
    ),
}


@dataclass(frozen=True)
class ApplicationId:
    """A validated 23-digit application ID. ``digits`` is personal data: never log it."""

    digits: str = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.digits) != APPLICATION_ID_DIGITS or not self.digits.isascii():
            raise ValueError("an application ID has exactly 23 ASCII digits")
        if not self.digits.isdigit():
            raise ValueError("an application ID has exactly 23 ASCII digits")

    def __repr__(self) -> str:
        return "ApplicationId(<23 digits>)"

    __str__ = __repr__


class ApplicationIdRefused(ValueError):
    """Why a payload or typed entry yields no application ID. Never carries the payload."""

    def __init__(self, code: RefusalCode, detail: str = "") -> None:
        ja, en = REFUSAL_TEXT[code]
        super().__init__(f"{code}: {en}" + (f" ({detail})" if detail else ""))
        self.code: RefusalCode = code
        self.message_ja = ja
        self.message_en = en
        self.detail = detail


def grouped(digits: str) -> str:
    """The 23 digits in the form's groups, ``1234 5678 9012 3456 7890 123``. Personal data."""
    if len(digits) != APPLICATION_ID_DIGITS:
        raise ValueError("an application ID has exactly 23 digits")
    groups, start = [], 0
    for size in DISPLAY_GROUPS:
        groups.append(digits[start : start + size])
        start += size
    return " ".join(groups)


def payload_text(payload: bytes | str) -> str:
    """The payload as text: UTF-8 first, then Shift-JIS (cp932), else digits-only Latin-1.

    QR codes on Japanese forms may be encoded in Shift-JIS; decoders sometimes hand back
    raw bytes. ASCII digits are the same bytes in all three, and a Shift-JIS trail byte is
    never an ASCII digit, so no digit run is invented by a wrong guess.
    """
    if isinstance(payload, str):
        return payload
    data = payload.removeprefix(b"\xef\xbb\xbf")
    for encoding in ("utf-8", "cp932"):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def read_application_id(payload: bytes | str) -> ApplicationId:
    """Take the one application ID from a QR payload or a typed entry; refuse anything else.

    Raises ``ApplicationIdRefused`` with a code the operator can act on.
    """
    text = payload_text(payload).translate(_FULL_WIDTH_DIGITS)
    stripped = text.strip()
    if not stripped:
        raise ApplicationIdRefused("unreadable", "empty payload")
    typed = _TYPED.match(stripped) is not None
    joined = stripped.translate(_TYPED_SEPARATORS) if typed else ""
    if len(joined) == APPLICATION_ID_DIGITS:
        # Typed entry in groups (or a bare payload): the groups form one number.
        return ApplicationId(joined)
    runs = _DIGIT_RUN.findall(text)
    candidates = {run for run in runs if len(run) == APPLICATION_ID_DIGITS}
    if len(candidates) == 1:
        return ApplicationId(candidates.pop())
    if len(candidates) > 1:
        raise ApplicationIdRefused("several-ids", f"{len(candidates)} different IDs")
    if typed:
        if len(joined) == MY_NUMBER_DIGITS:
            raise ApplicationIdRefused("my-number")
        raise ApplicationIdRefused("wrong-length", f"{len(joined)} digits")
    lengths = sorted({len(run) for run in runs}, reverse=True)
    near = [n for n in lengths if 16 <= n <= 30]
    if near:
        raise ApplicationIdRefused("wrong-length", f"{near[0]} digits")
    raise ApplicationIdRefused("not-application-form")


def online_application_url(payload: bytes | str) -> str | None:
    """The payload itself when it is a web address (the form's QR opens the online application
    with the ID filled in); None for a bare ID. Personal data: it carries the ID."""
    text = payload_text(payload).strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    if (
        parts.scheme not in ("https", "http")
        or not parts.hostname
        or any(c.isspace() for c in text)
    ):
        return None
    return text


def combine_application_ids(ids: list[ApplicationId]) -> ApplicationId:
    """The one ID seen across all the codes in view; refuse two different ones."""
    distinct = {i.digits for i in ids}
    if not distinct:
        raise ApplicationIdRefused("unreadable", "no code in view")
    if len(distinct) > 1:
        raise ApplicationIdRefused("several-ids", f"{len(distinct)} different IDs")
    return ids[0]
