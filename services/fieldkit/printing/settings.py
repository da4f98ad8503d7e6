"""The ``[printing]`` section of the device config (pydantic only, to avoid import cycles)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fieldkit.models import Section

# Debian's fonts-ipaexfont-gothic. Embedded (subset) in every PDF, so the printer needs no
# Japanese font of its own; see docs/printing.md for why not a non-embedded CID font.
DEFAULT_FONT = Path("/usr/share/fonts/opentype/ipaexfont-gothic/ipaexg.ttf")


class LocalPrinterSection(Section):
    """A printer that needs no hardware: cupsd + ippeveprinter in a directory (demo, tests)."""

    enabled: bool = False
    directory: Path = Path("/run/fieldkit/printer")
    # The simulator keeps what it "printed" as PDF files under <directory>/received, so the
    # demo shows real output. A field device prints to paper and keeps nothing.
    keep_received: bool = True

    @field_validator("directory")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.absolute()


class PrintingSection(Section):
    # The CUPS server: the device's own cupsd on loopback (never a network print server).
    cups_host: str = "127.0.0.1"
    cups_port: int = Field(default=631, ge=1, le=65535)
    queue: str = Field(default="fieldkit", pattern=r"^[A-Za-z0-9_-]{1,127}$")
    # cupsd's RequestRoot and CacheDir, read to prove no file of a job is left (R12).
    # None: the service cannot read them (e.g. a 0710 root:lp spool); the wipe service scans.
    spool_dir: Path | None = None
    cache_dir: Path | None = None
    photo_paper: Literal["l", "a4"] = "l"
    photo_copies: int = Field(default=4, ge=1, le=20)
    font_path: Path = DEFAULT_FONT
    # How long a request waits for CUPS to accept the job before answering "waiting".
    accept_wait: float = Field(default=3.0, gt=0, le=30)
    poll_interval: float = Field(default=0.25, gt=0, le=10)
    # A job CUPS did not take (queue missing, cupsd down) is retried this often, never dropped.
    retry_interval: float = Field(default=2.0, gt=0, le=300)
    # How long after completion the spool may still hold the job's files before it is a fault.
    spool_settle: float = Field(default=2.0, gt=0, le=120)
    local: LocalPrinterSection = LocalPrinterSection()

    @field_validator("cups_host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        # Personal data goes only to the device's own cupsd (architecture §3).
        if host not in {"127.0.0.1", "::1", "localhost"} and not host.startswith("127."):
            raise ValueError("the CUPS server must be on loopback (127.0.0.0/8, ::1 or localhost)")
        return host
