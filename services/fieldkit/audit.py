"""The device's audit trail: who did what and when (R14), never whose data.

An append-only JSON-lines file; each entry carries the SHA-256 of the previous entry and its own
hash over both, so an edited, removed or reordered entry breaks the chain from that point on
(``fieldkit audit verify``). The same events also travel to the hub through sync.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def _digest(prev: str, event: dict[str, Any]) -> str:
    canonical = json.dumps(event, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{prev}\n{canonical}".encode()).hexdigest()


class AuditLog:
    """Appends hash-chained entries to ``path`` (created 0600); safe across threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._last = GENESIS
        self._seq = 0
        if path.exists():
            for entry in entries(path):
                self._last, self._seq = entry["hash"], entry["seq"]

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Append ``event``; returns its entry (``seq``, ``hash``: what names it for ever)."""
        with self._lock:
            seq = self._seq + 1
            digest = _digest(self._last, {"seq": seq, "event": event})
            entry = {"seq": seq, "event": event, "prev": self._last, "hash": digest}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            self._last, self._seq = digest, seq
            return entry


def entries(path: Path) -> list[dict[str, Any]]:
    """Every entry of the trail at ``path``, oldest first (none when there is no trail yet)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


@dataclass(frozen=True)
class ChainCheck:
    entries: int
    problem: str | None  # None: the chain is whole

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(path: Path) -> ChainCheck:
    """Walk the chain; report the first entry that does not follow from the one before."""
    prev, seq, count = GENESIS, 0, 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line:
            continue
        try:
            entry = json.loads(line)
            expected = _digest(prev, {"seq": entry["seq"], "event": entry["event"]})
            broken = entry["prev"] != prev or entry["seq"] != seq + 1 or entry["hash"] != expected
        except (ValueError, KeyError, TypeError):
            return ChainCheck(count, f"line {number}: not an audit entry")
        if broken:
            return ChainCheck(
                count, f"line {number}: the chain is broken (edited, removed or moved)"
            )
        prev, seq, count = entry["hash"], entry["seq"], count + 1
    return ChainCheck(count, None)
