"""The Japanese font every printed page uses, embedded in the PDF."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFont

log = logging.getLogger(__name__)

EMBEDDED_NAME = "FieldkitGothic"
# reportlab's built-in Adobe-Japan1 CID font: not embedded, the printer must supply glyphs.
CID_FALLBACK = "HeiseiKakuGo-W5"

_lock = threading.Lock()
_registered: dict[Path, str] = {}


def japanese_font(path: Path) -> str:
    """Register the font at ``path`` once and return its reportlab name.

    An embedded TrueType subset makes the PDF self-contained: a printer or CUPS filter
    without Japanese fonts still prints every glyph. If the file is missing the
    non-embedded CID font is used, and the log says so (the text still reads back).
    """
    with _lock:
        if path in _registered:
            return _registered[path]
        if path.is_file():
            name = f"{EMBEDDED_NAME}-{len(_registered)}"
            pdfmetrics.registerFont(TTFont(name, str(path)))
        else:
            log.warning(
                "font %s is missing; using the non-embedded CID font %s", path, CID_FALLBACK
            )
            pdfmetrics.registerFont(UnicodeCIDFont(CID_FALLBACK))
            name = CID_FALLBACK
        _registered[path] = name
        return name
