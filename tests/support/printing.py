"""Synthetic inputs for the printing tests: an application ID and a portrait JPEG."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

APPLICATION_ID = "12345678901234567890123"


def sample_jpeg(width: int = 827, height: int = 1063, mode: str = "RGB") -> bytes:
    """A synthetic portrait (an ellipse on a plain background), not a person."""
    image = Image.new(mode, (width, height), "white" if mode != "CMYK" else (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 4, height // 5, 3 * width // 4, 3 * height // 4), fill="gray")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()
