"""The print desk: one thread that owns the CUPS connection and every job until it is gone.

Bus handlers hand jobs in and wait (briefly) for CUPS to accept them; the desk submits,
retries what CUPS could not take, follows each job to its end, purges it from cupsd and
checks the spool, and reports the printer's condition whenever it changes. Events go out
through a small publisher thread so the desk never waits on the bus thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

from fieldkit.bus import Bus, BusError
from fieldkit.messages import Message
from fieldkit.printing.condition import PrinterReading
from fieldkit.printing.cupsqueue import (
    FINAL_JOB_STATES,
    JOB_ABORTED,
    JOB_CANCELED,
    JOB_COMPLETED,
    JOB_HELD,
    JOB_PROCESSING,
    JOB_STOPPED,
    CupsQueue,
    CupsUnavailable,
)
from fieldkit.printing.messages import (
    Forgotten,
    JobEvent,
    JobKind,
    JobState,
    PrintAccepted,
    PrinterEvent,
    PrinterStatus,
)
from fieldkit.printing.settings import PrintingSection
from fieldkit.printing.spool import spool_readable, spool_residue

log = logging.getLogger(__name__)

JOB_WORDS: dict[JobState, tuple[str, str]] = {
    "waiting": (
        "プリンターの準備ができるまで、印刷を待っています。",
        "Waiting for the printer to be ready.",
    ),
    "queued": ("印刷の順番を待っています。", "Waiting its turn to print."),
    "printing": ("印刷しています。", "Printing."),
    "held": (
        "印刷が止まっています。係員をお呼びください。",
        "Printing has stopped. Please call staff.",
    ),
    "completed": ("印刷が終わりました。", "Printing is finished."),
    "failed": (
        "印刷できませんでした。係員をお呼びください。",
        "The document could not be printed. Please call staff.",
    ),
    "canceled": ("印刷を取り消しました。", "Printing was canceled."),
}

_CUPS_TO_STATE: dict[int, JobState] = {
    3: "queued",
    # Create-Job holds a job until its document has arrived (job-hold-until-specified); the
    # kiosk must not tell the applicant to call staff for that, so pending-held is queued.
    JOB_HELD: "queued",
    JOB_PROCESSING: "printing",
    JOB_STOPPED: "held",
    JOB_CANCELED: "canceled",
    JOB_ABORTED: "failed",
    JOB_COMPLETED: "completed",
}


@dataclass
class PrintJob:
    """A rendered document on its way to paper. ``document`` is zeroed once CUPS has it."""

    sid: str
    kind: JobKind
    title: str
    options: dict[str, str]
    pages: int
    document: bytearray
    ref: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    state: JobState = "waiting"
    cups_job: int | None = None
    next_try: float = 0.0
    finished_at: float | None = None
    accepted: Future[PrintAccepted] = field(default_factory=Future)

    def forget_document(self) -> None:
        # Best effort in Python: overwrite the one mutable copy we hold, then drop it.
        self.document[:] = bytes(len(self.document))
        self.document.clear()


RETRIES = 50


class EventPublisher:
    """Publishes events from a queue on its own thread (never blocks the caller)."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._queue: queue.Queue[tuple[str, Message] | None] = queue.Queue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="printing-events", daemon=True)
        self._thread.start()

    def put(self, topic: str, message: Message) -> None:
        self._queue.put((topic, message))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            topic, message = item
            # The desk starts before the bus connects (and the bus may reconnect): retry for
            # a while, so the first printer condition is not lost.
            for attempt in range(RETRIES):
                try:
                    self._bus.publish(topic, message)
                    break
                except BusError as exc:
                    if attempt == RETRIES - 1 or self._closing.is_set():
                        log.warning("event on %s not published: %s", topic, exc)
                        break
                    self._closing.wait(0.2)

    def close(self) -> None:
        self._closing.set()
        self._queue.put(None)
        self._thread.join(5)


Publish = Callable[[str, Message], None]


class PrintDesk:
    """Owns the jobs and the CUPS connection; all CUPS calls happen on ``run``'s thread."""

    # The protection (R12): purge each job from cupsd when it ends and when its session is
    # forgotten, whatever cupsd's retention settings say. Without it, forget only cancels.
    purges_jobs = True
    service = "printing"

    def __init__(
        self,
        settings: PrintingSection,
        publish: Publish,
        *,
        cups_host: str,
        cups_port: int,
        spool_dir: Path | None,
        cache_dir: Path | None,
    ) -> None:
        self.settings = settings
        self.publish = publish
        self.cups_host = cups_host
        self.cups_port = cups_port
        self.spool_dir = spool_dir
        self.cache_dir = cache_dir
        self._lock = threading.Lock()
        self._jobs: dict[str, PrintJob] = {}
        self._commands: queue.Queue[Callable[[CupsQueue], None]] = queue.Queue()
        self._wake = threading.Event()
        self._reading: PrinterReading | None = None
        self._spool_pending: dict[str, PrintJob] = {}

    # -- called from bus handlers ------------------------------------------------------------

    def accept(self, job: PrintJob) -> PrintAccepted:
        """Hand a job in; answer once CUPS took it, or after ``accept_wait`` as waiting."""
        with self._lock:
            self._jobs[job.ref] = job
        self._wake.set()
        try:
            return job.accepted.result(self.settings.accept_wait)
        except FutureTimeout:
            return self._accepted_reply(job)

    def forget(self, sid: str, timeout: float = 30.0) -> Forgotten:
        done: Future[Forgotten] = Future()
        self._commands.put(lambda cups: done.set_result(self._forget(cups, sid)))
        self._wake.set()
        return done.result(timeout)

    def status(self) -> PrinterStatus:
        with self._lock:
            reading = self._reading
            waiting = sum(1 for j in self._jobs.values() if j.state == "waiting")
        if reading is None:
            return PrinterStatus(
                queue=self.settings.queue,
                condition="cups-unreachable",
                words_ja="プリンターの状態を確かめています。",
                words_en="Checking the printer.",
                waiting_jobs=waiting,
            )
        return PrinterStatus(
            queue=self.settings.queue,
            condition=reading.condition,
            words_ja=reading.words_ja,
            words_en=reading.words_en,
            reasons=list(reading.reasons),
            waiting_jobs=waiting,
        )

    # -- the desk's own thread ---------------------------------------------------------------

    def run(self, stopping: threading.Event) -> None:
        cups = CupsQueue(self.cups_host, self.cups_port, self.settings.queue)
        last_poll = 0.0
        try:
            while not stopping.is_set():
                try:
                    self._run_commands(cups)
                    self._submit_due(cups)
                    now = time.monotonic()
                    if now - last_poll >= self.settings.poll_interval:
                        last_poll = now
                        self._follow(cups)
                    self._check_spools(cups)
                except Exception:
                    # The desk keeps going: a bad round must not strand the jobs it holds.
                    log.exception("print desk: unexpected error; continuing")
                self._wake.wait(self.settings.poll_interval)
                self._wake.clear()
        finally:
            cups.close()

    def _run_commands(self, cups: CupsQueue) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            command(cups)

    def _submit_due(self, cups: CupsQueue) -> None:
        now = time.monotonic()
        with self._lock:
            due = [j for j in self._jobs.values() if j.state == "waiting" and j.next_try <= now]
        for job in due:
            try:
                job.cups_job = cups.submit(job.document, job.title, job.options)
            except CupsUnavailable as exc:
                job.next_try = now + self.settings.retry_interval
                log.warning("job %s waits: %s", job.ref, exc)
                self._refresh_reading(cups)
                if not job.accepted.done():
                    job.accepted.set_result(self._accepted_reply(job))
                    self._job_event(job)
                continue
            job.forget_document()
            self._set_state(job, "queued")
            if not job.accepted.done():
                job.accepted.set_result(self._accepted_reply(job))

    def _follow(self, cups: CupsQueue) -> None:
        self._refresh_reading(cups)
        try:
            notices = cups.notices()
        except CupsUnavailable:
            return
        with self._lock:
            by_cups = {j.cups_job: j for j in self._jobs.values() if j.cups_job is not None}
        for notice in notices:
            job = by_cups.get(notice.job_id)
            if job is None or job.finished_at is not None:
                continue
            self._set_state(job, _CUPS_TO_STATE.get(notice.state, job.state))
            if notice.state in FINAL_JOB_STATES:
                self._finished(job)
        # A notice can be missed (cupsd restarted, subscription lost): ask about the rest.
        for job in by_cups.values():
            if job.finished_at is not None or job.cups_job is None:
                continue
            try:
                state = cups.job_state(job.cups_job)
            except CupsUnavailable:
                return
            if state is None:
                # cupsd keeps no history (PreserveJobHistory No): gone means it ended.
                self._set_state(job, "completed")
                self._finished(job)
            elif state in FINAL_JOB_STATES:
                self._set_state(job, _CUPS_TO_STATE[state])
                self._finished(job)
            else:
                self._set_state(job, _CUPS_TO_STATE.get(state, job.state))

    def _finished(self, job: PrintJob) -> None:
        job.finished_at = time.monotonic()
        self._spool_pending[job.ref] = job

    def _check_spools(self, cups: CupsQueue) -> None:
        for ref, job in list(self._spool_pending.items()):
            if job.cups_job is None or job.finished_at is None:
                del self._spool_pending[ref]
                continue
            if self.purges_jobs:
                cups.purge(job.cups_job)
            verdict: bool | None = None
            if self.spool_dir is not None and spool_readable(self.spool_dir):
                residue = spool_residue(self.spool_dir, self.cache_dir, [job.cups_job])
                if residue and time.monotonic() - job.finished_at < self.settings.spool_settle:
                    continue  # cupsd may still be removing them; look again next round
                verdict = not residue
                if residue:
                    log.error(
                        "job %d left %d file(s) in the CUPS spool", job.cups_job, len(residue)
                    )
            del self._spool_pending[ref]
            self._job_event(job, spool_clean=verdict)

    def _forget(self, cups: CupsQueue, sid: str) -> Forgotten:
        with self._lock:
            jobs = [j for j in self._jobs.values() if j.sid == sid]
        cups_ids = [j.cups_job for j in jobs if j.cups_job is not None]
        for job in jobs:
            if job.cups_job is not None and self.purges_jobs:
                cups.purge(job.cups_job)
            elif job.cups_job is not None and job.finished_at is None:
                cups.cancel(job.cups_job)
            job.forget_document()
            if not job.accepted.done():
                job.accepted.set_result(self._accepted_reply(job))
        checked = spool_readable(self.spool_dir)
        residue: list[str] = []
        if checked and cups_ids and self.spool_dir is not None:
            deadline = time.monotonic() + self.settings.spool_settle
            while True:
                residue = spool_residue(self.spool_dir, self.cache_dir, cups_ids)
                if not residue or time.monotonic() >= deadline:
                    break
                time.sleep(0.1)
        with self._lock:
            for job in jobs:
                self._jobs.pop(job.ref, None)
                self._spool_pending.pop(job.ref, None)
        if cups_ids and not cups.overwrite_receive_buffer():
            log.warning("cupsd did not take the scrub upload: its receive buffer may still hold")
        if residue:
            log.error("session forget: %d file(s) of its jobs remain in the spool", len(residue))
        return Forgotten(
            sid=sid,
            jobs=len(jobs),
            spool_checked=checked,
            spool_clean=checked and not residue,
            residue=residue,
        )

    # -- state and events --------------------------------------------------------------------

    def _refresh_reading(self, cups: CupsQueue) -> None:
        reading = cups.reading()
        with self._lock:
            changed = reading != self._reading
            self._reading = reading
            waiting = sum(1 for j in self._jobs.values() if j.state == "waiting")
        if changed:
            log.info("printer %s: %s", self.settings.queue, reading.condition)
            self.publish(
                f"{self.service}/evt/printer",
                PrinterEvent(
                    queue=self.settings.queue,
                    condition=reading.condition,
                    words_ja=reading.words_ja,
                    words_en=reading.words_en,
                    reasons=list(reading.reasons),
                    waiting_jobs=waiting,
                ),
            )

    def _set_state(self, job: PrintJob, state: JobState) -> None:
        if state == job.state:
            return
        job.state = state
        if state not in {"completed", "failed", "canceled"}:
            self._job_event(job)

    def _job_words(self, job: PrintJob) -> tuple[str, str]:
        with self._lock:
            reading = self._reading
        if job.state == "waiting" and reading is not None and not reading.can_print:
            return reading.words_ja, reading.words_en
        return JOB_WORDS[job.state]

    def _accepted_reply(self, job: PrintJob) -> PrintAccepted:
        words_ja, words_en = self._job_words(job)
        return PrintAccepted(
            sid=job.sid,
            job=job.ref,
            kind=job.kind,
            state=job.state,
            cups_job=job.cups_job,
            pages=job.pages,
            words_ja=words_ja,
            words_en=words_en,
        )

    def _job_event(self, job: PrintJob, spool_clean: bool | None = None) -> None:
        words_ja, words_en = self._job_words(job)
        self.publish(
            f"{self.service}/evt/session/{job.sid}/job",
            JobEvent(
                sid=job.sid,
                job=job.ref,
                kind=job.kind,
                state=job.state,
                cups_job=job.cups_job,
                words_ja=words_ja,
                words_en=words_en,
                spool_clean=spool_clean,
            ),
        )
