"""Test scenes for the capture service, built from real images.

Faces come from the portrait that ships with scikit-image (``skimage.data.astronaut()``);
QR codes are generated with the ``qrcode`` package, an encoder independent of the decoders.
Nothing here is written to disk by default: scenes are arrays made on the fly.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import qrcode
from skimage import data

from fieldkit.capture.photo import CHIN_BELOW_BOX, CROWN_ABOVE_BOX, Guide

Image = npt.NDArray[np.uint8]

# The Haar face box of the astronaut portrait (x, y, w, h), measured once with the same
# cascade: the scenes place this box where the wanted head geometry puts it.
ASTRONAUT_FACE = (177, 66, 95, 95)
FRAME = (1280, 720)
BACKGROUND = (214, 216, 218)  # plain light grey wall, BGR

# Made-up IDs for tests; no real application ID appears anywhere in the repository.
TEST_ID = "12345678901234567890123"
OTHER_ID = "98765432109876543210987"


def qr_modules(
    payload: bytes, error: int = qrcode.constants.ERROR_CORRECT_M
) -> npt.NDArray[np.bool_]:
    code = qrcode.QRCode(border=0, error_correction=error)
    code.add_data(payload)
    code.make(fit=True)
    return np.array(code.get_matrix(), dtype=bool)


def astronaut_bgr() -> Image:
    return np.asarray(cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR), dtype=np.uint8)


def _person_mask(shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Soft mask of the astronaut's head and suit, leaving her busy background out."""
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (226, 96), (78, 86), 0, 0, 360, 1.0, -1)
    cv2.ellipse(mask, (240, 420), (230, 250), 0, 180, 360, 1.0, -1)
    mask[:172, :] = np.minimum(
        mask[:172, :],
        (cv2.ellipse(np.zeros(shape, np.float32), (226, 96), (78, 86), 0, 0, 360, 1.0, -1))[
            :172, :
        ],
    )
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), 3.0), dtype=np.float32)


def astronaut_frame(
    head_mm: float = 34.0,
    margin_mm: float = 4.0,
    offset_mm: float = 0.0,
    *,
    plain_background: bool = True,
    frame: Image | None = None,
) -> Image:
    """A 1280x720 frame with the astronaut placed for the wanted head geometry in the guide."""
    width, height = FRAME
    guide = Guide.for_frame(width, height)
    mm = guide.px_per_mm
    out = frame.copy() if frame is not None else np.empty((height, width, 3), np.uint8)
    if frame is None:
        out[:] = BACKGROUND
        rng = np.random.default_rng(7)
        out[:] = np.clip(
            out.astype(np.int16) + rng.normal(0, 1.5, out.shape[:2])[..., None], 0, 255
        ).astype(np.uint8)
    fx, fy, fw, fh = ASTRONAUT_FACE
    target_h = head_mm * mm / (CROWN_ABOVE_BOX + CHIN_BELOW_BOX)
    scale = target_h / fh
    crown = guide.y + margin_mm * mm
    box_y = crown + CROWN_ABOVE_BOX * target_h
    cx = guide.centre_x + offset_mm * mm
    src = astronaut_bgr()
    matrix = np.array(
        [[scale, 0, cx - (fx + fw / 2) * scale], [0, scale, box_y - fy * scale]], np.float32
    )
    warped = cv2.warpAffine(src, matrix, (width, height), flags=cv2.INTER_LINEAR)
    if plain_background:
        mask = cv2.warpAffine(_person_mask(src.shape[:2]), matrix, (width, height))[..., None]
    else:
        mask = cv2.warpAffine(np.ones(src.shape[:2], np.float32), matrix, (width, height))[
            ..., None
        ]
    return np.asarray(out * (1 - mask) + warped * mask, dtype=np.uint8)
