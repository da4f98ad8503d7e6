"""The kiosk's side of the printing service: after submission, print the receipts (two labelled
copies, R5) and, in support mode, the photo sheet (R3); the session moves on when all are done.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fieldkit.bus import Bus, BusError, Incoming
from fieldkit.kiosk.flow import ApplicantSession, Counter, FlowError
from fieldkit.kiosk.settings import ContactDesk
from fieldkit.municipalities import MunicipalityTable
from fieldkit.printing.messages import (
    JobEvent,
    JobState,
    PrintAccepted,
    PrinterEvent,
    PrintPhotoSheet,
    PrintReceipt,
)

log = logging.getLogger(__name__)
FINAL: set[JobState] = {"completed", "failed", "canceled"}
CAN_PRINT = {"ready", "printing"}


@dataclass
class PrintRun:
    """The jobs of one session and what the printer last said about them."""

    sid: str
    jobs: dict[str, JobState] = field(default_factory=dict)
    words_ja: str = ""
    words_en: str = ""
    problem: str | None = None

    @property
    def finished(self) -> bool:
        return bool(self.jobs) and all(state == "completed" for state in self.jobs.values())


class Printer:
    """Sends a submitted session's documents to the printing service and follows the jobs."""

    def __init__(
        self,
        bus: Bus,
        counter: Counter,
        site: str,
        municipalities: MunicipalityTable,
        contact: ContactDesk | None = None,
    ) -> None:
        self.bus = bus
        self.counter = counter
        self.site = site
        self.contact = contact or ContactDesk()
        self.municipalities = municipalities
        self._lock = threading.Lock()
        self.run: PrintRun | None = None
        # The printer's own words while it cannot print (unplugged, out of paper...), else None.
        self.trouble: tuple[str, str] | None = None
        bus.handle_event("printing/evt/session/+/job", JobEvent, self._on_job)
        bus.handle_event("printing/evt/printer", PrinterEvent, self._on_printer)

    def print_session(self, session: ApplicantSession) -> PrintRun:
        """Ask for the receipts (and the photo sheet in support mode); never raises for the
        printer's sake: a problem is shown to the operator, who can ask again."""
        if session.application_id is None:
            raise FlowError("no application ID to print")
        if session.reception_number is None or session.municipality is None:
            raise FlowError("no reception number or municipality to print")
        run = PrintRun(sid=session.sid)
        with self._lock:
            self.run = run
        requests: list[PrintReceipt | PrintPhotoSheet] = [
            PrintReceipt(
                sid=session.sid,
                application_id=session.application_id,
                applied_at=datetime.now(UTC),
                site=self.site,
                mode=session.mode,
                electronic_certificate=bool(session.e_certificate),
                braille=bool(session.braille),
                operator_id=session.operator,
                reception_number=session.reception_number,
                municipality=self.municipalities.get(session.municipality).full_name,
                contact_phone=self.contact.phone,
                contact_hours_ja=self.contact.hours_ja,
                contact_hours_en=self.contact.hours_en,
                canary=session.canary,
            )
        ]
        if session.mode == "support" and session.photo is not None:
            # Support mode: the applicant pastes the printed photo onto the paper form.
            requests.append(
                PrintPhotoSheet(
                    sid=session.sid,
                    jpeg_b64=base64.b64encode(session.photo).decode(),
                    canary=session.canary,
                )
            )
        for request in requests:
            try:
                accepted = self.bus.request(
                    "printing", request.type, request, PrintAccepted, timeout=30
                )
            except BusError as exc:
                run.problem = type(exc).__name__
                log.warning("printing refused %s: %s", request.type, type(exc).__name__)
                continue
            with self._lock:
                # An event may already have reported a later state; keep the later one.
                run.jobs.setdefault(accepted.job, accepted.state)
                run.words_ja, run.words_en = accepted.words_ja, accepted.words_en
        self._advance_if_done(run)
        return run

    def _on_job(self, event: JobEvent, meta: Incoming) -> None:
        with self._lock:
            run = self.run
            if run is None or run.sid != event.sid:
                return
            run.jobs[event.job] = event.state
            run.words_ja, run.words_en = event.words_ja, event.words_en
        self._advance_if_done(run)

    def _on_printer(self, event: PrinterEvent, meta: Incoming) -> None:
        with self._lock:
            can_print = event.condition in CAN_PRINT
            self.trouble = None if can_print else (event.words_ja, event.words_en)

    def _advance_if_done(self, run: PrintRun) -> None:
        session = self.counter.current
        if run.finished and session is not None and session.sid == run.sid:
            # Both jobs' events can arrive together: the second finds the step already moved.
            with contextlib.suppress(FlowError):
                self.counter.printed()

    def forget(self, sid: str) -> list[str]:
        with self._lock:
            if self.run is None or self.run.sid != sid:
                return []
            self.run = None
        return ["print progress in kiosk memory"]

    def status(self, sid: str) -> PrintRun | None:
        """The session's print run as the operator should see it: while jobs wait on a printer
        that cannot print, the printer's words (a job sent before it went away still says
        "printing"), so staff know what to fix."""
        with self._lock:
            run, trouble = self.run, self.trouble
        if run is None or run.sid != sid:
            return None
        if trouble is None or run.finished:
            return run
        return dataclasses.replace(run, words_ja=trouble[0], words_en=trouble[1])
