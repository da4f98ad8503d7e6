"""What the kiosk sends to the hub through the sync service's outbox.

- At submission, the application packet (personal: sync seals it to the municipality's key
  before it touches disk, R15, R23). A refusal (outbox full, not enrolled) keeps the session
  at review with sync's reason, so nothing is lost silently.
- When a session closes, its statistics (R21); and every audit event (R14). These are sent from
  a thread of their own: audit events also arise on the bus thread, which must never wait.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import time
from datetime import datetime
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
    # The hub's reports have three outcomes; a declined agreement is an application not made.
    Outcome.DECLINED: "abandoned",
    Outcome.ABANDONED: "abandoned",
}
QUEUE_LIMIT = 10_000


class SubmissionRefused(Exception):
    """sync did not take the application packet; ``reason`` is sync's own words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def statistics_body(session: ApplicantSession, site: str) -> dict[str, str]:
    if session.outcome is None:
        raise ValueError("a session without an outcome has no statistics")
    return {
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


class Outbound:
    """The kiosk's records for the hub, handed to sync."""

    def __init__(self, bus: Bus, site: str) -> None:
        self.bus = bus
        self.site = site
        self._queue: queue.Queue[SubmitRecord | None] = queue.Queue(QUEUE_LIMIT)
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
            raise SubmissionRefused(refused.reply.reason) from None
        except BusError as exc:
            raise SubmissionRefused(type(exc).__name__) from None
        return accepted.record_id

    def statistics(self, session: ApplicantSession) -> None:
        if session.outcome is not None:
            self._put(SubmitRecord(kind="statistics", body=statistics_body(session, self.site)))

    def audit(self, event: AuditEvent) -> None:
        self._put(SubmitRecord(kind="audit", body=audit_body(event)))

    def close(self) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _put(self, record: SubmitRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            log.error("kiosk outbound queue full: a %s record was not kept", record.kind)

    def _run(self) -> None:
        while (record := self._queue.get()) is not None:
            delay = 0.5
            while not self._offer(record):
                # sync not there yet, busy or full: wait and offer it again; nothing is
                # dropped while the kiosk runs.
                if self._closing.wait(delay):
                    log.error("kiosk stopping: a %s record did not reach sync", record.kind)
                    return
                delay = min(delay * 2, 30.0)

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
