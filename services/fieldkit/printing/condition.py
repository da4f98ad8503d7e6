"""Printer state, as CUPS reports it, in plain words an elderly applicant can read.

CUPS gives ``printer-state`` (3 idle, 4 processing, 5 stopped) and ``printer-state-reasons``
(IPP keywords such as ``media-empty-error``). The kiosk needs one condition and one sentence
in Japanese (first) and English.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fieldkit.printing.messages import PrinterCondition

IPP_PRINTER_IDLE = 3
IPP_PRINTER_PROCESSING = 4
IPP_PRINTER_STOPPED = 5

WORDS: dict[PrinterCondition, tuple[str, str]] = {
    "ready": ("印刷できます。", "The printer is ready."),
    "printing": ("印刷しています。しばらくお待ちください。", "Printing. Please wait a moment."),
    "offline": (
        "プリンターにつながっていません。係員が電源とケーブルを確かめます。",
        "The printer is not connected. Staff will check its power and cable.",
    ),
    "out-of-paper": (
        "用紙がありません。係員が用紙を補充します。",
        "The printer is out of paper. Staff will add paper.",
    ),
    "paper-jam": ("紙がつまりました。係員をお呼びください。", "Paper jam. Please call staff."),
    "door-open": (
        "プリンターのふたが開いています。係員をお呼びください。",
        "A printer cover is open. Please call staff.",
    ),
    "out-of-ink": (
        "インクがありません。係員をお呼びください。",
        "The printer is out of ink. Please call staff.",
    ),
    "paused": (
        "プリンターが止まっています。係員をお呼びください。",
        "The printer is paused. Please call staff.",
    ),
    "queue-missing": (
        "プリンターが設定されていません。係員をお呼びください。",
        "No printer is set up. Please call staff.",
    ),
    "cups-unreachable": (
        "印刷の仕組みが動いていません。係員をお呼びください。",
        "The printing system is not running. Please call staff.",
    ),
    "error": (
        "プリンターに問題があります。係員をお呼びください。",
        "The printer has a problem. Please call staff.",
    ),
}

# Checked in this order: the first match names the condition (the most actionable first).
_REASONS: tuple[tuple[PrinterCondition, frozenset[str]], ...] = (
    ("out-of-paper", frozenset({"media-empty", "media-needed", "input-tray-missing"})),
    ("paper-jam", frozenset({"media-jam"})),
    ("door-open", frozenset({"door-open", "cover-open", "interlock-open"})),
    ("out-of-ink", frozenset({"marker-supply-empty", "toner-empty"})),
    (
        "offline",
        frozenset(
            {"offline", "connecting-to-device", "timed-out", "shutdown", "cups-missing-filter"}
        ),
    ),
)


# CUPS's network backends report a printer that refuses connections only in
# printer-state-message (no state reason), in the server's language; cupsd is ours and speaks
# English. These are the backends' own catalog strings for "cannot reach the printer".
_OFFLINE_MESSAGES = (
    "may not exist or is unavailable",
    "is unreachable",
    "is not responding",
    "waiting for printer to become available",
    "unable to locate printer",
    "unable to connect",
)


def _base(reason: str) -> str:
    for suffix in ("-error", "-warning", "-report"):
        if reason.endswith(suffix):
            return reason.removesuffix(suffix)
    return reason


@dataclass(frozen=True)
class PrinterReading:
    condition: PrinterCondition
    reasons: tuple[str, ...]

    @property
    def words_ja(self) -> str:
        return WORDS[self.condition][0]

    @property
    def words_en(self) -> str:
        return WORDS[self.condition][1]

    @property
    def can_print(self) -> bool:
        return self.condition in {"ready", "printing"}


def read_condition(state: int, reasons: Iterable[str], message: str = "") -> PrinterReading:
    """One condition from CUPS's printer-state, printer-state-reasons and state message."""
    listed = tuple(r for r in reasons if r and r != "none")
    bases = {_base(r) for r in listed}
    for condition, keys in _REASONS:
        if bases & keys:
            return PrinterReading(condition, listed)
    if state == IPP_PRINTER_PROCESSING and any(m in message.lower() for m in _OFFLINE_MESSAGES):
        return PrinterReading("offline", listed)
    if state == IPP_PRINTER_STOPPED:
        if "paused" in bases:
            return PrinterReading("paused", listed)
        return PrinterReading("error", listed)
    if any(r.endswith("-error") for r in listed):
        return PrinterReading("error", listed)
    if state == IPP_PRINTER_PROCESSING:
        return PrinterReading("printing", listed)
    return PrinterReading("ready", listed)


QUEUE_MISSING = PrinterReading("queue-missing", ())
CUPS_UNREACHABLE = PrinterReading("cups-unreachable", ())
