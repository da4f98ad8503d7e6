"""Synthetic inputs for the printing tests: a session, an application ID, a receipt and a
portrait JPEG."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from PIL import Image, ImageDraw

from fieldkit.printing.messages import PrintReceipt

SID = "5e55104c0ffee1235e55104c0ffee123"
APPLICATION_ID = "12345678901234567890123"
# Prefix 01, the day's 7th number, Luhn check digit 3 (fieldkit.kiosk.reception).
RECEPTION_NUMBER = "0100073"


def sample_jpeg(width: int = 827, height: int = 1063, mode: str = "RGB") -> bytes:
    """A synthetic portrait (an ellipse on a plain background), not a person."""
    image = Image.new(mode, (width, height), "white" if mode != "CMYK" else (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 5, 3 * width // 4, 3 * height // 4), fill="gray")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def sample_receipt(**changes: object) -> PrintReceipt:
    """A valid receipt with synthetic values; ``changes`` override fields."""
    fields: dict[str, object] = {
        "sid": SID,
        "application_id": APPLICATION_ID,
        "applied_at": datetime(2026, 11, 23, 1, 30, tzinfo=UTC),
        "site": "千代田区ふれあい会館",
        "mode": "support",
        "electronic_certificate": True,
        "braille": False,
        "operator_id": "op-007",
        "reception_number": RECEPTION_NUMBER,
        "municipality": "長野県松本市",
        "contact_phone": "0263-00-0000",
        "contact_hours_ja": "平日 9時〜17時",
        "contact_hours_en": "Weekdays 9:00-17:00",
    }
    fields.update(changes)
    return PrintReceipt.model_validate(fields)
