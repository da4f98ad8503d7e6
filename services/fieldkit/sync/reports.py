"""sync's side of the tablet's integrity reports (issue 19 items 2, 3): each new kernel audit
summary and file-integrity result the root-run reporters wrote (``fieldkit.integrity``) goes
to the hub as a health record, once.

sync only reads the reports folder (``[sync] reports``; its user is the one member of the
folder's group): it never reads the audit log. A report is checked against ``DeviceHealth``
before it is sent; one that does not pass is logged (which field, never its content) and left
alone, and sync keeps serving. What was sent is remembered by the report's time in
``reports-sent.json`` beside the outbox; the record ID is made from the report's time, so a
report offered again after a crash reaches the hub as a duplicate, not a second record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fieldkit.messages import MessageError
from fieldkit.models import describe_validation_error
from fieldkit.sync.courier import Courier
from fieldkit.sync.wire import DeviceHealth

log = logging.getLogger(__name__)

# The files the reporters write and the field of DeviceHealth each must fill.
REPORTS = {"kernel-audit.json": "kernel_audit", "file-integrity.json": "integrity"}
MAX_REPORT_BYTES = 64 * 1024


class ReportError(Exception):
    """A report that is not what its reporter should write (said without its content)."""


def read_report(path: Path, field: str) -> dict[str, Any]:
    """The report's health body, checked; ``ReportError`` names what is wrong with it."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        raise ReportError(f"unreadable ({exc.__class__.__name__})") from None
    if len(raw) > MAX_REPORT_BYTES:
        raise ReportError(f"larger than {MAX_REPORT_BYTES} bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ReportError("not JSON") from None
    if not isinstance(body, dict):
        raise ReportError("not a JSON object")
    try:
        health = DeviceHealth.model_validate(body)
    except ValidationError as exc:
        raise ReportError(describe_validation_error(exc)) from None
    if getattr(health, field) is None:
        raise ReportError(f"no {field}")
    others = {"kernel_audit", "integrity"} - {field}
    if (
        health.services
        or health.antivirus
        or health.detail
        or any(getattr(health, name) is not None for name in others)
    ):
        raise ReportError(f"holds more than its {field}")
    return body


def record_id_for(device_id: str, name: str, at: float) -> str:
    digest = hashlib.sha256(f"fieldkit report\n{device_id}\n{name}\n{at!r}".encode())
    return digest.hexdigest()[:32]


class ReportForwarder:
    """Polls the reports folder and submits each new report to the courier."""

    def __init__(self, courier: Courier, folder: Path, state: Path, interval: float) -> None:
        self.courier = courier
        self.folder = folder
        self.state = state
        self.interval = interval
        self._sent = self._load()
        self._refused: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads(self.state.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: float(v) for k, v in data.items() if k in REPORTS and isinstance(v, int | float)}

    def _save(self) -> None:
        tmp = self.state.with_name(self.state.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(self._sent, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.state)

    def poll(self) -> list[str]:
        """Send every report newer than the last one sent; the record IDs submitted."""
        submitted = []
        for name, field in REPORTS.items():
            path = self.folder / name
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("report %s: cannot be read (%s)", name, exc.__class__.__name__)
                continue
            if self._refused.get(name) == mtime:
                continue  # the same refused file: said once
            try:
                body = read_report(path, field)
            except ReportError as exc:
                self._refused[name] = mtime
                log.warning("report %s refused, not sent to the hub: %s", name, exc)
                continue
            self._refused.pop(name, None)
            at = float(body["at"])
            if at <= self._sent.get(name, float("-inf")):
                continue
            record_id = record_id_for(self.courier.device_id, name, at)
            try:
                self.courier.submit_record("health", body, record_id)
            except MessageError as exc:
                log.warning("report %s not taken by the outbox: %s", name, exc)
                continue
            self._sent[name] = at
            self._save()
            submitted.append(record_id)
            log.info("report %s of %.0f queued for the hub", name, at)
        return submitted

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("the reports folder could not be polled")
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="sync-reports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
