"""The photo sheet: the print master at exactly 45 × 35 mm, repeated with cut marks. R3"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError
from reportlab import rl_config
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import inch, mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas

from fieldkit.printing.fonts import japanese_font

PHOTO_WIDTH = 35 * mm
PHOTO_HEIGHT = 45 * mm
# 300 dpi at 35 mm; below that the print is visibly soft.
MIN_WIDTH_PX = 413
ASPECT_TOLERANCE = 0.01
# Room between photos for the cut marks: each mark starts 1 mm off the photo and is 3 mm long.
GAP = 8 * mm
MARK_OFFSET = 1 * mm
MARK_LENGTH = 3 * mm

Paper = Literal["l", "a4"]
# L-size photo paper as IPP names it (oe_photo-l_3.5x5in = 88.9 × 127 mm), and A4.
PAGE_SIZES: dict[Paper, tuple[float, float]] = {"l": (3.5 * inch, 5 * inch), "a4": A4}
IPP_MEDIA: dict[Paper, str] = {"l": "oe_photo-l_3.5x5in", "a4": "iso_a4_210x297mm"}


# reportlab's ASCII85 switch is process-wide; photo sheets change it one at a time.
_BINARY_STREAMS = threading.Lock()


class PhotoRefused(ValueError):
    """The print master cannot be printed true to size; the message says why (no image data)."""


@dataclass(frozen=True)
class SheetLayout:
    paper: Paper
    columns: int
    rows: int
    origin_x: float
    origin_y: float

    @property
    def capacity(self) -> int:
        return self.columns * self.rows

    def positions(self, copies: int) -> list[tuple[float, float]]:
        """Lower-left corners of ``copies`` photos, filled row by row from the top."""
        spots = []
        for index in range(min(copies, self.capacity)):
            row, column = divmod(index, self.columns)
            x = self.origin_x + column * (PHOTO_WIDTH + GAP)
            y = self.origin_y + (self.rows - 1 - row) * (PHOTO_HEIGHT + GAP)
            spots.append((x, y))
        return spots


def layout_for(paper: Paper, margin: float = 5 * mm) -> SheetLayout:
    """The largest grid of photos (with cut-mark gaps) that fits inside ``margin``."""
    width, height = PAGE_SIZES[paper]
    columns = int((width - 2 * margin + GAP) // (PHOTO_WIDTH + GAP))
    rows = int((height - 2 * margin + GAP) // (PHOTO_HEIGHT + GAP))
    grid_w = columns * PHOTO_WIDTH + (columns - 1) * GAP
    grid_h = rows * PHOTO_HEIGHT + (rows - 1) * GAP
    return SheetLayout(paper, columns, rows, (width - grid_w) / 2, (height - grid_h) / 2)


def check_master(jpeg: bytes) -> tuple[int, int]:
    """Refuse a master that is not a 35:45 RGB or greyscale JPEG of at least 300 dpi."""
    if not jpeg.startswith(b"\xff\xd8"):
        raise PhotoRefused("the photo is not a JPEG")
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            image.verify()
        with Image.open(io.BytesIO(jpeg)) as image:
            fmt, mode, (width, height) = image.format, image.mode, image.size
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise PhotoRefused("the photo is not a readable JPEG") from None
    if fmt != "JPEG":
        raise PhotoRefused("the photo is not a JPEG")
    if mode not in {"RGB", "L"}:
        raise PhotoRefused(f"the photo must be RGB or greyscale, not {mode}")
    if width < MIN_WIDTH_PX:
        raise PhotoRefused(f"the photo is {width} px wide; at least {MIN_WIDTH_PX} px is needed")
    aspect = (width / height) / (35 / 45)
    if abs(aspect - 1) > ASPECT_TOLERANCE:
        raise PhotoRefused(f"the photo is {width}×{height} px; it must be cropped to 35:45")
    return width, height


def render_photo_sheet(
    jpeg: bytes, paper: Paper, copies: int, font_path: Path, canary: str | None = None
) -> bytes:
    """One page with ``copies`` photos at exactly 35 × 45 mm; the JPEG is embedded as is.
    The session's canary, if given, goes into the PDF's keywords (see PrintReceipt)."""
    check_master(jpeg)
    with _binary_streams():
        return _render(jpeg, paper, copies, font_path, canary)


@contextmanager
def _binary_streams() -> Iterator[None]:
    """Build PDF streams without reportlab's default ASCII85 wrapping, for this block only.

    ASCII85 re-encodes the JPEG, so the photo's own bytes would not be in the PDF that
    cupsd spools, and the wipe's residue scan (which looks for slices of the photo, and for
    JPEG headers) could not see a photo sheet left in the spool (R12). A binary stream is
    also smaller, and CUPS takes binary PDFs.
    """
    with _BINARY_STREAMS:
        before = rl_config.useA85
        rl_config.useA85 = 0
        try:
            yield
        finally:
            rl_config.useA85 = before


def _render(jpeg: bytes, paper: Paper, copies: int, font_path: Path, canary: str | None) -> bytes:
    layout = layout_for(paper)
    font = japanese_font(font_path)
    width, height = PAGE_SIZES[paper]
    out = io.BytesIO()
    canvas = Canvas(out, pagesize=(width, height), invariant=True)
    canvas.setTitle("証明写真")
    canvas.setCreator("fieldkit")
    canvas.setAuthor("")
    if canary:
        canvas.setKeywords(canary)
    image = ImageReader(io.BytesIO(jpeg))
    canvas.setLineWidth(0.25)
    for x, y in layout.positions(copies):
        canvas.drawImage(image, x, y, width=PHOTO_WIDTH, height=PHOTO_HEIGHT)
        _cut_marks(canvas, x, y)
    canvas.setFont(font, 6)
    canvas.drawCentredString(
        width / 2, 4 * mm, "縦45mm×横35mm  線に合わせて切り取ってください  Cut along the marks"
    )
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def _cut_marks(canvas: Canvas, x: float, y: float) -> None:
    """Corner marks outside the photo, so a cut along them leaves no white edge."""
    for cx, dx in ((x, -1), (x + PHOTO_WIDTH, 1)):
        for cy, dy in ((y, -1), (y + PHOTO_HEIGHT, 1)):
            start_x = cx + dx * MARK_OFFSET
            canvas.line(start_x, cy, start_x + dx * MARK_LENGTH, cy)
            start_y = cy + dy * MARK_OFFSET
            canvas.line(cx, start_y, cx, start_y + dy * MARK_LENGTH)
