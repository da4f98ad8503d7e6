"""The applicant session: a server-side state machine with explicit states (R1-R8).

Personal data (application ID, photo, options tied to the person) lives only in an
``ApplicantSession`` in this process's memory, and ``forget()`` zeroes it. Every transition
produces an ``AuditEvent`` that says who did what, never whose data.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Mode = Literal["support", "municipal"]
Sex = Literal["male", "female", "other", "no-answer"]
AGE_BANDS = (
    "0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70-79", "80-89", "90+",
    "no-answer",
)  # fmt: skip


class Step(StrEnum):
    MODE = "mode"
    SCAN = "scan"
    TERMS = "terms"
    PHOTO = "photo"
    OPTIONS = "options"
    STATISTICS = "statistics"
    REVIEW = "review"
    PRINT = "print"
    DONE = "done"
    FORWARD = "forward"  # no form or unknown ID: forwarded to the municipality (R8)
    ENDED = "ended"


class Outcome(StrEnum):
    SUBMITTED = "submitted"
    FORWARDED = "forwarded"
    DECLINED = "declined"
    ABANDONED = "abandoned"


# Forward order of the steps an application walks through.
ORDER = [
    Step.MODE, Step.SCAN, Step.TERMS, Step.PHOTO, Step.OPTIONS, Step.STATISTICS, Step.REVIEW,
    Step.PRINT, Step.DONE,
]  # fmt: skip
# Steps the operator may go back to from a later step, before the application is submitted.
REVISABLE = {Step.MODE, Step.SCAN, Step.TERMS, Step.PHOTO, Step.OPTIONS, Step.STATISTICS}


class FlowError(Exception):
    """A transition that the state machine does not allow; the reason says which."""


@dataclass(frozen=True)
class AuditEvent:
    """Who did what and when (R14) — never whose data."""

    at: float
    operator: str
    sid: str
    action: str
    step_from: str
    step_to: str


@dataclass(frozen=True)
class Statistics:
    """The non-personal record the reports count (R21)."""

    mode: Mode
    outcome: Outcome
    municipality: str | None
    sex: Sex
    age_band: str
    e_certificate: bool | None
    braille: bool | None


@dataclass
class ApplicantSession:
    operator: str
    mode: Mode
    sid: str = field(default_factory=lambda: secrets.token_hex(16))
    # Random, never logged or shown: printed documents carry it in their metadata and the wipe
    # looks for it, so a document of this session left in the spool is found (R12).
    canary: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    step: Step = Step.MODE
    started: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.monotonic)
    # Personal data: memory only, zeroed by forget().
    # repr=False: a session printed in a traceback or assertion must not show them.
    application_id: str | None = field(default=None, repr=False)
    photo: bytearray | None = field(default=None, repr=False)  # print master, 600 dpi
    online_photo: bytearray | None = field(default=None, repr=False)  # online-application JPEG
    online_url: str | None = field(default=None, repr=False)  # the QR's link; carries the ID
    terms_version: str | None = None
    agreed: bool | None = None
    e_certificate: bool | None = None
    braille: bool | None = None
    # Issued at submission (kiosk/reception.py): made from nothing personal, read out on the phone.
    reception_number: str | None = None
    # Statistics: not personal.
    municipality: str | None = None
    sex: Sex = "no-answer"
    age_band: str = "no-answer"
    outcome: Outcome | None = None
    # The visit staff chose for the day on this tablet (kiosk/visit.py); None if none planned.
    visit_id: int | None = None

    def forget(self) -> None:
        """Zero and drop every personal item this session held."""
        for buffer in (self.photo, self.online_photo):
            if buffer is not None:
                buffer[:] = bytes(len(buffer))
        self.photo = self.online_photo = None
        self.application_id = self.online_url = None
        # Not personal, but a marker the wipe looks for in memory: the wipe has it already.
        self.canary = ""
        self.e_certificate = None
        self.braille = None
        self.agreed = None

    def statistics(self) -> Statistics:
        if self.outcome is None:
            raise FlowError("the session has no outcome yet")
        return Statistics(
            mode=self.mode,
            outcome=self.outcome,
            municipality=self.municipality,
            sex=self.sex,
            age_band=self.age_band,
            e_certificate=self.e_certificate if self.outcome is Outcome.SUBMITTED else None,
            braille=self.braille if self.outcome is Outcome.SUBMITTED else None,
        )


class Counter:
    """The tablet's one counter: at most one applicant session at a time."""

    def __init__(
        self,
        audit: Callable[[AuditEvent], None],
        on_close: Callable[[ApplicantSession], list[str]] | None = None,
        reception_number: Callable[[], str] | None = None,
    ) -> None:
        self._audit = audit
        # Whatever else held the session's data (files for the browser) is purged here.
        self._on_close = on_close
        # The receipt's reception number, issued when the application is submitted.
        self._reception_number = reception_number
        self._lock = threading.RLock()
        self.current: ApplicantSession | None = None

    def _move(self, session: ApplicantSession, to: Step, action: str) -> None:
        event = AuditEvent(time.time(), session.operator, session.sid, action, session.step, to)
        session.step = to
        session.last_activity = time.monotonic()
        self._audit(event)

    def start(self, operator: str, mode: Mode) -> ApplicantSession:
        with self._lock:
            if self.current is not None:
                raise FlowError("a session is already open; finish or abandon it first")
            session = ApplicantSession(operator=operator, mode=mode)
            self.current = session
            self._audit(
                AuditEvent(time.time(), operator, session.sid, "start", "", Step.MODE.value)
            )
            self._move(session, Step.SCAN, f"mode:{mode}")
            return session

    def require(self, step: Step) -> ApplicantSession:
        with self._lock:
            session = self.current
            if session is None:
                raise FlowError("no session is open")
            if session.step is not step:
                raise FlowError(f"the session is at {session.step.value}, not {step.value}")
            return session

    def set_application_id(self, application_id: str, online_url: str | None = None) -> None:
        with self._lock:
            session = self.require(Step.SCAN)
            session.application_id = application_id
            session.online_url = online_url
            self._move(session, Step.TERMS, "application-id")

    def correct_application_id(self, application_id: str) -> bool:
        """Staff correct the ID at review, after comparing it with the form (issue 21).

        The QR's link carries the ID it was read with: a different ID drops it, so the
        online hand-off never opens the application of the wrong ID. Returns whether it changed.
        """
        with self._lock:
            session = self.require(Step.REVIEW)
            if application_id == session.application_id:
                return False
            session.application_id = application_id
            session.online_url = None
            self._move(session, Step.REVIEW, "application-id-corrected")
            return True

    def forward(self) -> None:
        """No form, or the ID is unknown: the form goes to the municipality (R8)."""
        with self._lock:
            session = self.require(Step.SCAN)
            self._move(session, Step.FORWARD, "forward")

    def record_forward(self, municipality: str | None) -> ApplicantSession:
        with self._lock:
            session = self.require(Step.FORWARD)
            session.municipality = municipality
            session.outcome = Outcome.FORWARDED
            self._move(session, Step.ENDED, "forwarded")
            return session

    def forward_instead(self, municipality: str) -> ApplicantSession:
        """The applicant lives where this tablet cannot send an application (no receiver key,
        issue 21 item 4): at the statistics step the form is forwarded there instead (R8)."""
        with self._lock:
            session = self.require(Step.STATISTICS)
            session.municipality = municipality
            session.outcome = Outcome.FORWARDED
            self._move(session, Step.ENDED, "forwarded:no-receiver")
            return session

    def answer_terms(self, version: str, agreed: bool) -> None:
        with self._lock:
            session = self.require(Step.TERMS)
            session.terms_version = version
            session.agreed = agreed
            if agreed:
                self._move(session, Step.PHOTO, f"terms-agreed:{version}")
            else:
                # R2: no agreement, no application.
                session.outcome = Outcome.DECLINED
                self._move(session, Step.ENDED, f"terms-declined:{version}")

    def set_photo(self, print_jpeg: bytes, online_jpeg: bytes) -> None:
        with self._lock:
            session = self.require(Step.PHOTO)
            session.photo = bytearray(print_jpeg)
            session.online_photo = bytearray(online_jpeg)
            self._move(session, Step.OPTIONS, "photo-accepted")

    def set_options(self, e_certificate: bool, braille: bool) -> None:
        with self._lock:
            session = self.require(Step.OPTIONS)
            session.e_certificate = e_certificate
            session.braille = braille
            self._move(session, Step.STATISTICS, "options")

    def set_statistics(self, municipality: str | None, sex: Sex, age_band: str) -> None:
        if age_band not in AGE_BANDS:
            raise FlowError("unknown age band")
        with self._lock:
            session = self.require(Step.STATISTICS)
            session.municipality = municipality
            session.sex = sex
            session.age_band = age_band
            self._move(session, Step.REVIEW, "statistics")

    def go_back(self, to: Step) -> None:
        """Revise an earlier answer before the application is submitted."""
        with self._lock:
            session = self.current
            if session is None:
                raise FlowError("no session is open")
            if to not in REVISABLE or session.step not in REVISABLE | {Step.REVIEW}:
                raise FlowError(f"cannot go back from {session.step.value} to {to.value}")
            if ORDER.index(to) >= ORDER.index(session.step):
                raise FlowError(f"{to.value} is not before {session.step.value}")
            self._move(session, to, f"back:{to.value}")

    def submit(self) -> ApplicantSession:
        with self._lock:
            session = self.require(Step.REVIEW)
            missing = [
                name
                for name, value in (
                    ("application ID", session.application_id),
                    ("photo", session.photo),
                    ("terms agreement", session.agreed or None),
                )
                if value is None
            ]
            if missing:
                raise FlowError(f"cannot submit without: {', '.join(missing)}")
            if self._reception_number is not None:
                session.reception_number = self._reception_number()
            session.outcome = Outcome.SUBMITTED
            self._move(session, Step.PRINT, "submitted")
            return session

    def printed(self) -> None:
        with self._lock:
            session = self.require(Step.PRINT)
            self._move(session, Step.DONE, "printed")

    def finish(self) -> ApplicantSession:
        with self._lock:
            session = self.require(Step.DONE)
            self._move(session, Step.ENDED, "done")
            return session

    def abandon(self, reason: str) -> ApplicantSession | None:
        """End the open session wherever it is (button or idle timeout)."""
        with self._lock:
            session = self.current
            if session is None or session.step is Step.ENDED:
                return session
            if session.outcome is None:
                session.outcome = Outcome.ABANDONED
            self._move(session, Step.ENDED, f"abandon:{reason}")
            return session

    def close(self) -> ApplicantSession | None:
        """After the wipe: forget everything and free the counter for the next applicant."""
        with self._lock:
            session = self.current
            if session is None:
                return None
            if session.step is not Step.ENDED:
                raise FlowError("end the session before closing it")
            if self._on_close is not None:
                self._on_close(session)
            session.forget()
            self._audit(AuditEvent(time.time(), session.operator, session.sid, "closed", "", ""))
            self.current = None
            return session

    def touch(self, operator: str) -> None:
        """The session's operator did something at the screen: the session is not idle."""
        with self._lock:
            session = self.current
            if session is not None and session.operator == operator:
                session.last_activity = time.monotonic()

    def idle_expired(self, limit_seconds: float) -> bool:
        """Nobody moved the open session on for ``limit_seconds``. An ended session counts
        too: its data stays in memory until it is closed and wiped."""
        with self._lock:
            session = self.current
            return session is not None and time.monotonic() - session.last_activity > limit_seconds
