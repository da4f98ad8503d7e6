"""Logging for every fieldkit process, with a last-line guard against personal data.

Code must never put personal data in a log line (architecture §3). As a second line of
defence the formatter masks long digit runs — an application ID is 23 digits, a My Number
12 — in the final text, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

DIGIT_RUN = re.compile(r"(?<![0-9])[0-9][0-9 \-]{10,}[0-9](?![0-9])")
MASK = "[digits masked]"


def redact(text: str) -> str:
    """Mask digit runs of 12 or more (spaces and hyphens allowed between digits)."""

    def mask(match: re.Match[str]) -> str:
        digits = sum(ch.isdigit() for ch in match.group(0))
        return MASK if digits >= 12 else match.group(0)

    return DIGIT_RUN.sub(mask, text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not when the handler was
    made: a process that swaps stderr (pytest's capture, a daemon) never gets a log line
    written to a closed stream by a thread that outlived the swap."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(level: int = logging.INFO, *, redacting: bool = True) -> None:
    handler = StderrHandler()
    formatter_class = RedactingFormatter if redacting else logging.Formatter
    handler.setFormatter(formatter_class(FORMAT, "%Y-%m-%dT%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # paho logs nothing useful at INFO; keep it quiet.
    logging.getLogger("paho").setLevel(logging.WARNING)
