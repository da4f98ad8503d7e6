"""The capture service's bus contract: its requests, replies and events (see
``fieldkit.capture.service`` for what each does), and the photo's size they carry.

A leaf: pydantic and the application-ID rules only, so the kiosk talks to capture without
loading OpenCV or numpy into its web worker.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fieldkit.capture.appid import RefusalCode
from fieldkit.messages import Message
from fieldkit.models import SESSION_ID_PATTERN

Mode = Literal["idle", "qr", "photo"]

# The printed photo (the official rule: 45 x 35 mm) and its print master's resolution.
PHOTO_HEIGHT_MM = 45.0
PHOTO_WIDTH_MM = 35.0
PRINT_DPI = 600
PRINT_SIZE = (
    round(PHOTO_WIDTH_MM / 25.4 * PRINT_DPI),
    round(PHOTO_HEIGHT_MM / 25.4 * PRINT_DPI),
)  # (827, 1063)

Advice = Literal[
    "no-face",
    "one-person",
    "face-camera",
    "open-eyes",
    "close-mouth",
    "remove-hat",
    "closer",
    "back",
    "lower",
    "higher",
    "move-left",
    "move-right",
    "level",
    "brighter",
    "darker",
    "glare",
    "even-light",
    "background",
    "shadow",
    "hold-still",
    "ok",
]


class ModeRequest(Message):
    type: Literal["mode"] = "mode"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    mode: Mode


class ModeReply(Message):
    type: Literal["mode-reply"] = "mode-reply"
    sid: str
    mode: Mode
    camera: Literal["ok", "unavailable", "starting"]
    camera_reason: str = ""
    preview_url: str | None = None


class SessionRequest(Message):
    """``capture`` and ``retake`` carry only the session id."""

    type: Literal["capture", "retake"]
    sid: str = Field(pattern=SESSION_ID_PATTERN)


class Ack(Message):
    type: Literal["ack"] = "ack"
    sid: str
    detail: str = ""


class ValidateIdRequest(Message):
    type: Literal["validate-id"] = "validate-id"
    sid: str = Field(pattern=SESSION_ID_PATTERN)
    entry: str = Field(max_length=200)


class ApplicationIdResult(Message):
    """An application ID read from the form (or typed), or why none was taken. Personal data."""

    type: Literal["application-id"] = "application-id"
    sid: str
    origin: Literal["qr", "manual"]
    accepted: bool
    application_id: str | None = None
    # The QR's online-application link, when the payload was one (it carries the ID).
    online_url: str | None = Field(default=None, max_length=2048)
    reason: RefusalCode | None = None
    message_ja: str = ""
    message_en: str = ""


class CheckResult(Message):
    type: Literal["check"] = "check"
    name: str
    passed: bool
    measured: float | None
    threshold: str
    unit: str
    # What the applicant should do when the check fails (which side of a range it is on):
    # the kiosk says the result in its own words from it.
    advice: Advice | None = None


class Guidance(Message):
    type: Literal["guidance"] = "guidance"
    sid: str
    advice: Advice
    message_ja: str
    message_en: str
    checks: list[CheckResult]
    steady_frames: int


class PhotoResult(Message):
    """The photo for one session: print master, online JPEG and the check report. Personal data."""

    type: Literal["photo"] = "photo"
    sid: str
    trigger: Literal["auto", "operator"]
    print_jpeg_b64: str
    online_jpeg_b64: str
    width_px: int = PRINT_SIZE[0]
    height_px: int = PRINT_SIZE[1]
    dpi: int = PRINT_DPI
    checks: list[CheckResult]
    all_passed: bool


class CameraState(Message):
    type: Literal["camera"] = "camera"
    state: Literal["ok", "unavailable"]
    reason: str = ""
    source: str
