"""The ``[card]`` section of the device config (pydantic only, to avoid import cycles)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from fieldkit.models import Section


class CardSection(Section):
    # Which reader to use when more than one is connected: a part of its PC/SC name. None:
    # the only reader; with several, the report says so instead of guessing.
    reader: str | None = Field(default=None, min_length=1, max_length=200)
    # pcscd's socket for the PC/SC library (PCSCLITE_CSOCK_NAME); None: the library's default
    # (/run/pcscd/pcscd.comm). Tests point it at a pcscd of their own.
    pcscd_socket: Path | None = None
    # Bytes asked for per READ BINARY (short APDUs: at most 256; 0x00 in Le means 256).
    chunk_bytes: int = Field(default=256, ge=16, le=256)

    @field_validator("pcscd_socket")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None
