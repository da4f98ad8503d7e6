"""What the kiosk sends to the hub through the sync service's outbox.

- At submission, the application packet (personal: sync seals it to the municipality's key
  before it touches disk, R15, R23). A refusal (outbox full, not enrolled) keeps the session
  at review with sync's reason, so nothing is lost silently.
- When a session closes, its statistics (R21); and every audit event (R14). These are sent from
  a thread of their own: audit events also arise on the bus thread, which must never wait.
- An audit event is offered under an ID fixed by its entry in the kiosk's hash-chained trail, and
  a cursor file beside the trail keeps the last entry sync took. A kiosk that dies (killed by the
  watchdog, or stopped while the broker is away) loses its queue, not the events: the next kiosk
  offers the trail's entries past the cursor again, and sync and the hub take each ID once.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fieldkit.bus import Bus, BusError, RequestRefused
from fieldkit.kiosk.flow import ApplicantSession, AuditEvent, Outcome
from fieldkit.sync.messages import Accepted, ApplicationPacket, SubmitPacket, SubmitRecord

log = logging.getLogger(__name__)

JST = ZoneInfo("Asia/Tokyo")
# The hub counts every applicant; one who did not name a municipality is counted under this
# code, which fails the check digit and so can never be a real municipality.
UNANSWERED_MUNICIPALITY = "000000"
MODE = {"support": "support", "municipal": "reception"}
OUTCOME = {
    Outcome.SUBMITTED: "applied",
    Outcome.FORWARDED: "forwarded",
    # The applicant did not agree to the terms (R2): counted apart from a stopped session.
    Outcome.DECLINED: "declined",
    Outcome.ABANDONED: "abandoned",
}
QUEUE_LIMIT = 10_000


class SubmissionRefused(Exception):
    """sync did not take the application packet; ``reason`` is sync's own words (for the log),
    ``fields`` the parts of the request it refused (what the page says is chosen by them)."""

    def __init__(self, reason: str, fields: list[str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.fields = fields or []


def statistics_body(session: ApplicantSession, site: str) -> dict[str, str | int]:
    if session.outcome is None:
        raise ValueError("a session without an outcome has no statistics")
    visit: dict[str, str | int] = {"visit_id": session.visit_id} if session.visit_id else {}
    return visit | {
        "site": site,
        "date": datetime.fromtimestamp(session.started, JST).date().isoformat(),
        "municipality": session.municipality or UNANSWERED_MUNICIPALITY,
        "sex": "unknown" if session.sex == "no-answer" else session.sex,
        "age_band": "unknown" if session.age_band == "no-answer" else session.age_band,
        "mode": MODE[session.mode],
        "outcome": OUTCOME[session.outcome],
    }


def audit_body(event: AuditEvent) -> dict[str, object]:
    detail: dict[str, object] = {"from": event.step_from, "to": event.step_to}
    if event.sid:
        detail["session"] = event.sid
    return {"at": event.at, "actor": event.operator, "action": event.action, "detail": detail}


def trail_event(entry: dict[str, Any]) -> AuditEvent:
    """The audit event a trail entry holds (as ``Kiosk.record`` wrote it)."""
    event = entry["event"]
    return AuditEvent(
        at=event["at"],
        operator=event["operator"],
        sid=event["session"],
        action=event["action"],
        step_from=event["from"],
        step_to=event["to"],
    )


def trail_record_id(entry: dict[str, Any]) -> str:
    """The record ID of a trail entry's event: from its chain hash, so the same event offered
    again by another kiosk process is the same record (sync and the hub keep it once)."""
    return str(entry["hash"])[:32]


class HandedCursor:
    """The ``seq`` of the last trail entry sync took, in a file beside the trail.

    Written after sync took the entry (atomically, by rename); losing it only means entries are
    offered again, which sync and the hub take as the same records."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> int:
        try:
            return int(self.path.read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def write(self, seq: int) -> None:
        if seq <= self.read():
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(f"{seq}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            # A full disk: the entry is offered again after a restart, never lost.
            log.warning("could not keep the audit cursor: %s", exc.strerror)
            with contextlib.suppress(OSError):
                tmp.unlink()


class Outbound:
    """The kiosk's records for the hub, handed to sync."""

    def __init__(self, bus: Bus, site: str, cursor: HandedCursor | None = None) -> None:
        self.bus = bus
        self.site = site
        self.cursor = cursor
        self._queue: queue.Queue[tuple[SubmitRecord, int] | None] = queue.Queue(QUEUE_LIMIT)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kiosk-outbound", daemon=True)
        self._thread.start()

    def submit_packet(self, session: ApplicantSession) -> str:
        """Hand the application to sync (it seals it); returns the record id."""
        if session.application_id is None or session.online_photo is None:
            raise SubmissionRefused("the application ID and the photo are needed")
        if session.municipality is None:
            raise SubmissionRefused("municipality")
        packet = ApplicationPacket(
            application_id=session.application_id,
            photo_jpeg=base64.b64encode(session.online_photo).decode(),
            electronic_certificate=bool(session.e_certificate),
            braille=bool(session.braille),
            mode="reception" if session.mode == "municipal" else "support",
            created_at=time.time(),
        )
        request = SubmitPacket(municipality=session.municipality, packet=packet)
        try:
            accepted = self.bus.request("sync", "submit-packet", request, Accepted, timeout=15)
        except RequestRefused as refused:
            raise SubmissionRefused(refused.reply.reason, refused.reply.fields) from None
        except BusError as exc:
            raise SubmissionRefused(type(exc).__name__) from None
        return accepted.record_id

    def statistics(self, session: ApplicantSession) -> None:
        if session.outcome is not None:
            self._put(SubmitRecord(kind="statistics", body=statistics_body(session, self.site)))

    def audit(self, event: AuditEvent, entry: dict[str, Any] | None = None) -> None:
        """Offer an audit event; with its trail ``entry``, under the ID the entry fixes."""
        if entry is None:
            self._put(SubmitRecord(kind="audit", body=audit_body(event)))
            return
        record = SubmitRecord(
            kind="audit", body=audit_body(event), record_id=trail_record_id(entry)
        )
        self._put(record, int(entry["seq"]))

    def resume(self, trail: list[dict[str, Any]]) -> int:
        """Offer again the trail's entries sync has not taken (a kiosk before this one died
        with them queued); returns how many. Call before new events are recorded."""
        if self.cursor is None:
            return 0
        handed = self.cursor.read()
        left = [entry for entry in trail if int(entry["seq"]) > handed]
        for entry in left:
            try:
                event = trail_event(entry)
            except (KeyError, TypeError):
                log.error("audit trail entry %s is not a kiosk event; not offered", entry["seq"])
                continue
            self.audit(event, entry)
        if left:
            log.info("offering %d audit event(s) again that sync had not taken", len(left))
        return len(left)

    def close(self) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _put(self, record: SubmitRecord, seq: int = 0) -> None:
        try:
            self._queue.put_nowait((record, seq))
        except queue.Full:
            log.error("kiosk outbound queue full: a %s record was not kept", record.kind)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            record, seq = item
            delay = 0.5
            while not self._offer(record):
                # sync not there yet, busy or full: wait and offer it again; nothing is
                # dropped while the kiosk runs (and an audit event not even when it stops).
                if self._closing.wait(delay):
                    log.error("kiosk stopping: a %s record did not reach sync", record.kind)
                    return
                delay = min(delay * 2, 30.0)
            if seq and self.cursor is not None:
                self.cursor.write(seq)

    def _offer(self, record: SubmitRecord) -> bool:
        """Hand one record to sync; False when it must be offered again later."""
        try:
            self.bus.request("sync", "submit", record, Accepted, timeout=10)
        except RequestRefused as refused:
            if not refused.reply.fields:
                # Refused for the moment (the outbox or its disk is full), not for what it holds.
                log.warning("sync cannot take a %s record now: %s", record.kind, refused)
                return False
            # A record sync will never take (a field is wrong): keep the reason, not the record.
            log.error("sync refused a %s record: %s", record.kind, refused.reply.reason)
        except BusError:
            return False
        return True
