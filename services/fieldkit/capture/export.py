"""Turning a compliant frame into the two photo files. R3

- Print master: 35 x 45 mm at 600 dpi = 827 x 1063 px, JPEG (quality 95), density 600 dpi in
  the JFIF header so the printing service lays it out at the right size.
- Online-application JPEG: RGB (3 components, never CMYK), 827 x 1063 px (inside 480-6000),
  20 KB - 7 MB (quality is adjusted until it fits), no EXIF/XMP/comment segments.

Both are made in memory; nothing is written to disk.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.capture.messages import PRINT_DPI, PRINT_SIZE
from fieldkit.capture.photo import Guide

Image = npt.NDArray[np.uint8]

ONLINE_MIN_BYTES = 20 * 1024
ONLINE_MAX_BYTES = 7 * 1024 * 1024
ONLINE_MIN_SIDE, ONLINE_MAX_SIDE = 480, 6000


class ExportError(Exception):
    """The photo could not be made to meet the output rules."""


def crop_to_guide(frame: Image, guide: Guide) -> Image:
    """The guide window of the frame at print resolution, as 3-channel BGR."""
    if frame.ndim == 2:
        frame = np.asarray(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), dtype=np.uint8)
    x0, y0 = guide.x, guide.y
    x1, y1 = guide.x + guide.width, guide.y + guide.height
    if x0 < 0 or y0 < 0 or x1 > frame.shape[1] or y1 > frame.shape[0]:
        raise ExportError("the photo window does not fit in the camera frame")
    window = frame[y0:y1, x0:x1]
    grow = PRINT_SIZE[1] > window.shape[0]
    interpolation = cv2.INTER_CUBIC if grow else cv2.INTER_AREA
    return np.asarray(cv2.resize(window, PRINT_SIZE, interpolation=interpolation), dtype=np.uint8)


def _set_jfif_density(jpeg: bytes, dpi: int) -> bytes:
    """Write the pixel density into the JFIF APP0 segment (OpenCV writes 1:1 aspect only)."""
    if jpeg[2:4] != b"\xff\xe0" or jpeg[6:11] != b"JFIF\x00":
        raise ExportError("encoder did not write a JFIF header")
    density = struct.pack(">BHH", 1, dpi, dpi)  # units 1 = dots per inch
    return jpeg[:13] + density + jpeg[18:]


def encode_jpeg(image: Image, quality: int, dpi: int | None = None) -> bytes:
    ok, data = cv2.imencode(
        ".jpg",
        image,
        [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_OPTIMIZE, 1],
    )
    if not ok:
        raise ExportError("JPEG encoding failed")
    jpeg = data.tobytes()
    return _set_jfif_density(jpeg, dpi) if dpi else jpeg


def print_master(photo: Image) -> bytes:
    """The 827 x 1063 print master at 600 dpi."""
    if (photo.shape[1], photo.shape[0]) != PRINT_SIZE:
        raise ExportError("the print master must be 827 x 1063 px")
    return encode_jpeg(photo, 95, PRINT_DPI)


def online_jpeg(photo: Image) -> bytes:
    """The online-application JPEG, with quality chosen to land in 20 KB - 7 MB."""
    height, width = photo.shape[:2]
    if not (
        ONLINE_MIN_SIDE <= width <= ONLINE_MAX_SIDE and ONLINE_MIN_SIDE <= height <= ONLINE_MAX_SIDE
    ):
        raise ExportError("the online photo must be 480-6000 px on each side")
    for quality in (92, 97, 100, 85, 70, 50):
        jpeg = encode_jpeg(photo, quality, PRINT_DPI)
        if ONLINE_MIN_BYTES <= len(jpeg) <= ONLINE_MAX_BYTES:
            return jpeg
    raise ExportError("no JPEG quality gives a file of 20 KB to 7 MB")
