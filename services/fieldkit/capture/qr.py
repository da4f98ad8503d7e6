"""Reading the application form's QR code from a camera frame. R1

Two independent decoders, zxing-cpp and zbar (through pyzbar), each with its own strengths:
zxing-cpp is fast and copes with perspective and small codes; zbar recovers some blurred and
noisy codes zxing-cpp misses. ``FormReader`` combines them so that its result is at least
as good as either alone: both run on the frame as it is, and only when neither finds a
code does it try preprocessed variants (contrast equalisation for low contrast and glare,
upscaling for small codes, sharpening for blur). Cheap attempts come first, so a readable
frame costs one decoder call.

Decoded payloads are personal data (they carry the application ID): they stay in memory,
are never logged, and exceptions never quote them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp
from pyzbar import pyzbar  # type: ignore[import-untyped]

from fieldkit.capture.appid import (
    ApplicationId,
    ApplicationIdRefused,
    RefusalCode,
    online_application_url,
    read_application_id,
)

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
Decoder = Callable[[Image], list[bytes]]


def to_gray(frame: Image) -> Image:
    if frame.ndim == 2:
        return frame
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


QR_ONLY = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)


def decode_zxing(gray: Image) -> list[bytes]:
    """QR payloads found by zxing-cpp, as raw bytes (the extractor picks the text encoding)."""
    found = zxingcpp.read_barcodes(gray, formats=QR_ONLY, try_rotate=False)
    return [bytes(code.bytes) for code in found if code.valid]


def decode_zbar(gray: Image) -> list[bytes]:
    """QR payloads found by zbar."""
    found = pyzbar.decode(gray, symbols=[pyzbar.ZBarSymbol.QRCODE])
    return [bytes(code.data) for code in found]


_opencv_detector: Any = None


def decode_opencv(gray: Image) -> list[bytes]:
    """QR payloads found by OpenCV's own detector (measured in the bench; not in the default
    combination, because it was slower and found nothing the other two missed)."""
    global _opencv_detector
    if _opencv_detector is None:
        _opencv_detector = cv2.QRCodeDetector()
    text, _points, _straight = _opencv_detector.detectAndDecode(gray)
    return [text.encode("utf-8")] if text else []


# Preprocessed variants tried when the plain frame yields nothing. Each answers one
# degradation; they are ordered cheapest first.
_clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))


def equalised(gray: Image) -> Image:
    """Local contrast equalisation: lifts low-contrast codes and tames glare gradients."""
    return np.asarray(_clahe.apply(gray), dtype=np.uint8)


def sharpened(gray: Image) -> Image:
    """Unsharp mask: restores module edges of a slightly blurred code."""
    blur = cv2.GaussianBlur(gray, (0, 0), 2.0)
    return np.asarray(cv2.addWeighted(gray, 2.0, blur, -1.0, 0), dtype=np.uint8)


def upscaled(gray: Image) -> Image:
    """Double size: a small code's modules become wide enough for the binarisers."""
    return np.asarray(
        cv2.resize(gray, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC), dtype=np.uint8
    )


def denoised(gray: Image) -> Image:
    """Median filter: removes sensor noise that breaks up small modules."""
    return np.asarray(cv2.medianBlur(gray, 3), dtype=np.uint8)


@dataclass(frozen=True)
class Attempt:
    """One decoder on one (optionally preprocessed) view of the frame."""

    name: str
    decoder: Decoder
    prepare: Callable[[Image], Image] | None = None


DEFAULT_ATTEMPTS: tuple[Attempt, ...] = (
    Attempt("zxing", decode_zxing),
    Attempt("zbar", decode_zbar),
    Attempt("zxing+equalised", decode_zxing, equalised),
    Attempt("zxing+sharpened", decode_zxing, sharpened),
    Attempt("zbar+denoised", decode_zbar, denoised),
    Attempt("zbar+sharpened", decode_zbar, sharpened),
    Attempt("zxing+upscaled", decode_zxing, upscaled),
)


@dataclass
class QrReading:
    """What one frame showed: an ID, a refusal, or no code at all (``code is None``)."""

    application_id: ApplicationId | None = None
    # The form's QR is a link to the online application; kept so the kiosk can open it.
    online_url: str | None = field(default=None, repr=False)
    refusal: RefusalCode | None = None
    codes_seen: int = 0
    attempts: list[str] = field(default_factory=list)

    @property
    def found_code(self) -> bool:
        return self.codes_seen > 0


class FormReader:
    """Finds the one application ID in a frame, trying decoders until one yields a code."""

    def __init__(self, attempts: Sequence[Attempt] = DEFAULT_ATTEMPTS) -> None:
        self.attempts = tuple(attempts)

    def read(self, frame: Image, thorough: bool = True) -> QrReading:
        """Read the frame; ``thorough=False`` makes only the first (cheapest) attempt.

        A frame with no code in view costs every attempt (about 75 ms at 1280x720 on one
        core); the live loop therefore reads quickly on most frames and thoroughly on some.
        """
        gray = to_gray(frame)
        reading = QrReading()
        prepared: dict[str, Image] = {}
        refusals: list[RefusalCode] = []
        for attempt in self.attempts if thorough else self.attempts[:1]:
            view = gray
            if attempt.prepare is not None:
                key = attempt.prepare.__name__
                if key not in prepared:
                    prepared[key] = attempt.prepare(gray)
                view = prepared[key]
            reading.attempts.append(attempt.name)
            payloads = attempt.decoder(view)
            if not payloads:
                continue
            reading.codes_seen = len(payloads)
            ids: list[ApplicationId] = []
            urls: list[str | None] = []
            for payload in payloads:
                try:
                    ids.append(read_application_id(payload))
                except ApplicationIdRefused as refused:
                    refusals.append(refused.code)
                else:
                    urls.append(online_application_url(payload))
            distinct = {i.digits for i in ids}
            if len(distinct) > 1:
                reading.refusal = "several-ids"
                return reading
            if ids:
                reading.application_id = ids[0]
                reading.online_url = urls[0]
                return reading
            # Codes that are not application forms: another decoder may still find the form's
            # code in the same frame, so keep looking before refusing.
        if refusals:
            reading.refusal = refusals[0]
        return reading
