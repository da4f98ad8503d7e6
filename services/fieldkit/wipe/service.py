"""The wipe service: erase a session everywhere it lived, prove it is gone, keep the evidence.

Bus contract (requests to ``wipe``; the reply goes to the requester only):

- ``session-markers`` SessionMarkers {sid, application_id?, photo_fragments_b64[], canary?}
  -> ``markers-accepted``. Optional, any time during the session: what the residue scan
  should look for. Markers from several senders for the same sid add up.
- ``wipe-session``    WipeSession {sid, operator, markers?} -> ``wipe-result``
  {sid, ok, record_id, record_hash, failures[], seconds}. The kiosk sends it when the
  applicant's session ends; it may carry the markers itself.

The session wipe, in order: broadcast ``ForgetSession`` on ``wipe/evt/session/<sid>/forget``;
wait (``[wipe] holder_timeout``) for ``SessionForgotten`` from every holder the registry names;
purge the catalogue's locations; scan them for the session's markers; append a hash-chained,
signed ``ErasureRecord`` to the evidence store and publish it on ``wipe/evt/record``.
A holder that does not answer, or a residue the scan finds, fails the record visibly: the
reply says ``ok: false`` and names the holder or location.

The wipe runs on a worker thread of its own (one at a time), never on the bus thread.

Events: ``wipe/evt/session/<sid>/forget`` (ForgetSession) and ``wipe/evt/record``
(ErasureRecord: evidence, no personal data). A boot scan and then a daily scan of the whole
catalogue publish their records on the same topic.
"""

from __future__ import annotations

import base64
import binascii
import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fieldkit import watchdog
from fieldkit.bus import Bus, BusError, Incoming, RequestRefused
from fieldkit.erasure import (
    FORGOTTEN_FILTER,
    ForgetSession,
    SessionForgotten,
    forget_topic,
)
from fieldkit.messages import MessageError
from fieldkit.registry import holders, specs_for_role
from fieldkit.runner import ServiceContext, connect_bus
from fieldkit.sync.messages import Accepted, SubmitRecord
from fieldkit.wipe.catalogue import Catalogue
from fieldkit.wipe.markers import MarkerSearch, daily_markers, session_markers
from fieldkit.wipe.messages import (
    MarkersAccepted,
    SessionMarkers,
    UnprovenQuery,
    UnprovenSession,
    UnprovenSessions,
    WipeResult,
    WipeSession,
)
from fieldkit.wipe.record import (
    EVIDENCE_FILE,
    ErasureRecord,
    EvidenceStore,
    HolderResult,
    LocationResult,
    failures_of,
    load_device_key,
    signing_key_path,
)
from fieldkit.wipe.settings import WipeSection

log = logging.getLogger(__name__)
RECORD_TOPIC = "wipe/evt/record"


@dataclass
class HeldMarkers:
    """One session's markers, in buffers that are zeroed once the session is wiped."""

    application_id: bytearray = field(default_factory=bytearray)
    photo_fragments: list[bytearray] = field(default_factory=list)
    canary: bytearray = field(default_factory=bytearray)
    # Card canaries (fieldkit.card): the certificate's serial bytes and subject, per card read.
    card_serials: list[bytearray] = field(default_factory=list)
    card_subjects: list[bytearray] = field(default_factory=list)

    def add(self, markers: SessionMarkers) -> None:
        if markers.application_id:
            self.application_id[:] = markers.application_id.encode("ascii")
        for text in markers.photo_fragments_b64:
            try:
                self.photo_fragments.append(bytearray(base64.b64decode(text, validate=True)))
            except binascii.Error:
                raise MessageError(
                    "a photo fragment is not base64", ["photo_fragments_b64"]
                ) from None
        if markers.canary:
            self.canary[:] = markers.canary.encode("ascii")
        if markers.card_serial_hex or markers.card_subject:
            self.card_serials.append(bytearray.fromhex(markers.card_serial_hex or ""))
            self.card_subjects.append(bytearray((markers.card_subject or "").encode("utf-8")))

    def search(self) -> MarkerSearch:
        return MarkerSearch(
            session_markers(
                self.application_id.decode("ascii") or None,
                [bytes(f) for f in self.photo_fragments],
                self.canary.decode("ascii") or None,
                [
                    (bytes(serial), subject.decode("utf-8"))
                    for serial, subject in zip(self.card_serials, self.card_subjects, strict=True)
                ],
            )
        )

    def merge(self, other: HeldMarkers) -> None:
        if other.application_id:
            self.application_id[:] = other.application_id
        self.photo_fragments += other.photo_fragments
        if other.canary:
            self.canary[:] = other.canary
        self.card_serials += other.card_serials
        self.card_subjects += other.card_subjects
        other.photo_fragments, other.card_serials, other.card_subjects = [], [], []

    def empty(self) -> bool:
        return not (self.application_id or self.photo_fragments or self.canary or self.card_serials)

    def zero(self) -> None:
        buffers = [self.application_id, self.canary, *self.photo_fragments]
        for buffer in [*buffers, *self.card_serials, *self.card_subjects]:
            buffer[:] = bytes(len(buffer))
        self.photo_fragments, self.card_serials, self.card_subjects = [], [], []


def browser_result(stop_problem: str | None, start_problem: str | None) -> HolderResult:
    """The kiosk browser as a holder: its forget is a restart on an emptied profile."""
    problems = [p for p in (stop_problem, start_problem) if p]
    return HolderResult(
        service="browser",
        answered=True,
        ok=not problems,
        erased=[] if stop_problem else ["process memory (restarted on an emptied profile)"],
        problem="; ".join(problems) or None,
    )


def cupsd_result(problem: str | None) -> HolderResult:
    """cupsd as a holder: its forget is a restart once the session's jobs are purged."""
    return HolderResult(
        service="cupsd",
        answered=True,
        ok=problem is None,
        erased=[] if problem else ["process memory (restarted)"],
        problem=problem,
    )


class Wiper:
    """Session wipes and catalogue scans; the bus parts are optional so the CLI can use it."""

    def __init__(
        self,
        settings: WipeSection,
        device: str,
        catalogue: Catalogue | None = None,
        expected_holders: list[str] | None = None,
        key_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.catalogue = catalogue or Catalogue.from_settings(settings)
        self.expected_holders = expected_holders or []
        self.store = EvidenceStore(settings.state_dir / EVIDENCE_FILE)
        self.key = load_device_key(key_path or settings.device_key)
        self._markers: dict[str, HeldMarkers] = {}
        self._answers: dict[str, dict[str, SessionForgotten]] = {}
        self._answered = threading.Condition()
        self._wiping = threading.Lock()
        self._handing = threading.Lock()
        self.sealed = threading.Event()  # a record waits to be handed over
        self.publisher: Bus | None = None

    def close(self) -> None:
        with self._answered:
            for held in self._markers.values():
                held.zero()
            self._markers.clear()
        self.store.close()

    # -- markers and answers -------------------------------------------------------------------

    def add_markers(self, markers: SessionMarkers) -> None:
        with self._answered:
            self._markers.setdefault(markers.sid, HeldMarkers()).add(markers)

    def on_forgotten(self, answer: SessionForgotten, meta: Incoming) -> None:
        # The topic's first segment is the sender (the broker ACL enforces it): a service
        # cannot answer for another.
        if answer.service != meta.sender:
            log.warning(
                "ignoring a forgotten answer from %s naming %s", meta.sender, answer.service
            )
            return
        with self._answered:
            waiting = self._answers.get(answer.sid)
            if waiting is not None:
                waiting[answer.service] = answer
                self._answered.notify_all()

    def _collect_answers(self, sid: str) -> list[HolderResult]:
        if self.publisher is None:
            return [
                HolderResult(service=name, answered=False, ok=False, problem="no bus attached")
                for name in self.expected_holders
            ]
        with self._answered:
            self._answers[sid] = {}
        try:
            self.publisher.publish(forget_topic(sid), ForgetSession(sid=sid))
        except BusError as exc:
            log.error("could not broadcast the forget request: %s", exc)
        deadline = time.monotonic() + self.settings.holder_timeout
        with self._answered:
            while True:
                got = self._answers[sid]
                left = deadline - time.monotonic()
                if all(name in got for name in self.expected_holders) or left <= 0:
                    break
                self._answered.wait(left)
            got = self._answers.pop(sid)
        results = []
        for name in self.expected_holders:
            answer = got.get(name)
            if answer is None:
                results.append(HolderResult(service=name, answered=False, ok=False))
            else:
                results.append(
                    HolderResult(
                        service=name,
                        answered=True,
                        ok=answer.ok,
                        erased=answer.erased,
                        problem=answer.problem,
                    )
                )
        return results

    # -- the wipe ------------------------------------------------------------------------------

    def wipe_session(
        self, sid: str, operator: str, markers: SessionMarkers | None = None
    ) -> ErasureRecord:
        """The whole session wipe; returns the sealed record (already stored and published)."""
        with self._wiping:
            started = time.time()
            if markers is not None:
                self.add_markers(markers)
            with self._answered:
                held = self._markers.pop(sid, HeldMarkers())
            phases: dict[str, float] = {}
            try:
                holder_results = self._collect_answers(sid)
                phases["holders"] = time.time() - started
                if self.settings.cups_restart:
                    problem = self._browser("cups restart", self.settings.cups_restart)
                    holder_results.append(cupsd_result(problem))
                if held.empty() and any(u.sid == sid for u in self.unproven()):
                    # A retry of a failed session whose markers are gone (the wipe restarted):
                    # what it left can only be looked for as applicant data of any session.
                    search = MarkerSearch(daily_markers())
                else:
                    search = held.search()
                # The browser goes down before its profile is emptied (or it could write back
                # what it holds in memory) and comes up on the empty profile afterwards.
                stopped = self._browser("stop", self.settings.browser_stop)
                try:
                    locations = []
                    for loc in self.catalogue.locations:
                        began = time.time()
                        locations.append(self.catalogue.erase(loc, sid, search))
                        phases[loc.name] = time.time() - began
                finally:
                    started_again = self._browser("start", self.settings.browser_start)
                if self.settings.browser_stop or self.settings.browser_start:
                    holder_results.append(browser_result(stopped, started_again))
                # Sealing can fail too (the state disk full): the retry needs the markers then.
                record = self._seal(
                    ErasureRecord(
                        kind="session",
                        sid=sid,
                        device=self.device,
                        operator=operator,
                        started=started,
                        finished=time.time(),
                        holders=holder_results,
                        locations=locations,
                        ok=False,
                    )
                )
            except BaseException:
                self._keep(sid, held)
                raise
        if record.ok:
            held.zero()
        else:
            # A retry (the kiosk asks until one passes) looks for the same residue.
            self._keep(sid, held)
        slowest = sorted(phases.items(), key=lambda item: -item[1])[:3]
        log.info(
            "session %s wiped: %s in %.2fs (%s)",
            sid,
            "ok" if record.ok else "FAILED: " + "; ".join(record.failures),
            record.finished - record.started,
            ", ".join(f"{name} {seconds:.2f}s" for name, seconds in slowest),
        )
        return record

    def unproven(self) -> list[UnprovenSession]:
        """Sessions whose latest record failed, from the evidence store (so a restarted kiosk
        or wipe still knows them), oldest first."""
        latest: dict[str, ErasureRecord] = {}
        for _, record in self.store.records():
            if record.kind == "session" and record.sid:
                latest.pop(record.sid, None)
                latest[record.sid] = record
        return [
            UnprovenSession(sid=sid, operator=record.operator or "")
            for sid, record in latest.items()
            if not record.ok
        ]

    def _keep(self, sid: str, held: HeldMarkers) -> None:
        with self._answered:
            self._markers.setdefault(sid, HeldMarkers()).merge(held)

    def _browser(self, step: str, command: list[str]) -> str | None:
        """Run the browser's stop or start command; None when it worked, else why not."""
        if not command:
            return None
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                timeout=self.settings.browser_timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("kiosk browser %s failed: %s", step, type(exc).__name__)
            return f"{step}: {type(exc).__name__}"
        if done.returncode != 0:
            # systemctl's message names the unit and the reason; it holds no session data.
            reason = done.stderr.decode("utf-8", "replace").strip()[:200]
            log.error("kiosk browser %s exited %d: %s", step, done.returncode, reason)
            return f"{step}: exit {done.returncode}"
        return None

    def scan_catalogue(self) -> ErasureRecord:
        """The daily / boot scan: every location, for applicant data of any session."""
        # The scan only reads, so it runs beside session wipes instead of holding them up for
        # minutes (the kiosk would give up waiting and keep the counter closed meanwhile).
        started = time.time()
        search = MarkerSearch(daily_markers())
        locations = [self.catalogue.scan(loc, search) for loc in self.catalogue.locations]
        with self._wiping:
            record = self._seal(
                ErasureRecord(
                    kind="daily",
                    device=self.device,
                    started=started,
                    finished=time.time(),
                    locations=locations,
                    ok=False,
                )
            )
        log.info("catalogue scan: %s", "clean" if record.ok else "; ".join(record.failures))
        return record

    def _seal(self, record: ErasureRecord) -> ErasureRecord:
        failures = failures_of(record.holders, record.locations)
        sealed = self.store.append(
            record.model_copy(update={"ok": not failures, "failures": failures}), self.key
        )
        if self.publisher is not None:
            try:
                self.publisher.publish(RECORD_TOPIC, sealed)
            except BusError as exc:
                # For listeners only: the record reaches the hub through hand_over.
                log.error("could not publish erasure record %s: %s", sealed.record_id, exc)
        self.sealed.set()
        return sealed

    def hand_over(self) -> int:
        """Give sync every record it has not accepted yet, oldest first, so the hub can follow
        the chain; stop at the first one it does not take (not running, outbox full) and
        return how many still wait. A record made without a bus (``fieldkit wipe scan``)
        goes the same way at the service's next attempt. Sync takes a record ID once, and the
        hub keeps it once: offering one again after a lost answer duplicates nothing."""
        with self._handing:
            waiting = self.store.not_handed_over()
            if self.publisher is None:
                return len(waiting)
            for index, (seq, record) in enumerate(waiting):
                try:
                    self.publisher.request(
                        "sync",
                        "submit",
                        erasure_submission(record),
                        Accepted,
                        timeout=self.settings.handover_timeout,
                    )
                except RequestRefused as exc:
                    fields = ", ".join(exc.reply.fields)
                    if any(field.startswith("body.") for field in exc.reply.fields):
                        # Refused for what the record holds, not for the moment (an outbox
                        # full names no field; a sync too old to know record_id names that):
                        # offering it again would hold every later record back.
                        log.error(
                            "sync refused erasure record %s for good (%s); the hub will show "
                            "a gap in the chain there",
                            record.record_id,
                            fields,
                        )
                        self.store.mark_handed_over(seq, note=f"refused: {fields}")
                        continue
                    return self._still_waiting(waiting, index, exc)
                except BusError as exc:
                    return self._still_waiting(waiting, index, exc)
                self.store.mark_handed_over(seq)
            return 0

    @staticmethod
    def _still_waiting(waiting: list[tuple[int, ErasureRecord]], index: int, why: Exception) -> int:
        left = len(waiting) - index
        log.warning("%d erasure record(s) not yet taken by sync: %s", left, why)
        return left


def erasure_submission(record: ErasureRecord) -> SubmitRecord:
    """The wipe's signed record as sync's ``erasure`` record, under the record's own ID."""
    return SubmitRecord(
        kind="erasure",
        record_id=record.record_id,
        body={
            "at": record.finished,
            "level": record.kind,
            "verified": record.ok,
            "record": record.model_dump(mode="json"),
        },
    )


def result_of(record: ErasureRecord) -> WipeResult:
    return WipeResult(
        sid=record.sid or "",
        ok=record.ok,
        record_id=record.record_id,
        record_hash=record.hash,
        failures=record.failures,
        seconds=round(record.finished - record.started, 3),
    )


def location_summary(location: LocationResult) -> str:
    return f"{location.name}: {location.status} ({location.scanned_files} files)"


def expected_holders_for(ctx: ServiceContext) -> list[str]:
    specs = specs_for_role(ctx.config.device.role, ctx.config.runner.services)
    return [name for name in holders(specs) if name != ctx.spec.name]


def install(ctx: ServiceContext, wiper: Wiper | None = None) -> Wiper:
    """Register the handlers; a second connection collects answers while a wipe waits."""
    settings = ctx.config.wipe
    wiper = wiper or Wiper(
        settings,
        ctx.config.device.id,
        expected_holders=expected_holders_for(ctx),
        key_path=signing_key_path(ctx.config),
    )
    # Request handlers run on the bus's network thread, and the wipe waits for answers that
    # arrive on a bus thread: a second connection of the same identity hears them and sends
    # the broadcast and the record, so the wait cannot block its own input.
    wiper.catalogue.stopping = ctx.stopping
    publisher = connect_bus(ctx.config, ctx.spec.name, announce_health=False)
    publisher.handle_event(FORGOTTEN_FILTER, SessionForgotten, wiper.on_forgotten)
    publisher.connect()
    wiper.publisher = publisher

    def on_markers(request: SessionMarkers, meta: Incoming) -> MarkersAccepted:
        wiper.add_markers(request)
        return MarkersAccepted(sid=request.sid)

    # A wipe stuck past this (every holder's wait, every location's budget, the browser's
    # restart, with room to spare) stops the heartbeat: the watchdog restarts the service.
    longest = (
        settings.holder_timeout
        + 2 * settings.browser_timeout
        + 12 * settings.session_location_budget_seconds
        + 30
    )

    def on_wipe(request: WipeSession, meta: Incoming) -> WipeResult:
        with watchdog.busy("session wipe", longest):
            record = wiper.wipe_session(request.sid, request.operator, request.markers)
        return result_of(record)

    # The wipe takes a second or more: it runs on its own thread, one wipe at a time, so the
    # bus thread keeps the connection alive (a missed keepalive lost the verdict) and keeps
    # answering pings and markers meanwhile.
    work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wipe-work")

    def on_unproven(request: UnprovenQuery, meta: Incoming) -> UnprovenSessions:
        return UnprovenSessions(sessions=wiper.unproven())

    ctx.bus.handle_request("unproven-query", UnprovenQuery, on_unproven, worker=work)
    ctx.bus.handle_request("session-markers", SessionMarkers, on_markers)
    ctx.bus.handle_request("wipe-session", WipeSession, on_wipe, worker=work)

    def scan_daily() -> None:
        if not settings.boot_scan:
            ctx.stopping.wait(settings.daily_scan_hours * 3600)
        while not ctx.stopping.is_set():
            try:
                wiper.scan_catalogue()
            except Exception:
                log.exception("the catalogue scan failed")
            ctx.stopping.wait(settings.daily_scan_hours * 3600)

    scanner = threading.Thread(target=scan_daily, name="wipe-daily-scan", daemon=True)

    def hand_over() -> None:
        while not ctx.stopping.is_set():
            wiper.sealed.clear()
            try:
                wiper.hand_over()
            except Exception:
                # Never the end of the hand-over: the next record or the retry tries again.
                log.exception("handing erasure records to sync failed")
            wiper.sealed.wait(settings.handover_retry)

    courier = threading.Thread(target=hand_over, name="wipe-hand-over", daemon=True)

    def stop() -> None:
        ctx.stopping.set()
        wiper.sealed.set()
        # A wipe under way ends (its scan stops at the next file, reported as interrupted)
        # and sends its verdict; one not yet started is refused.
        work.shutdown(wait=True, cancel_futures=True)
        scanner.join(timeout=60)
        # Closing the connection ends a hand-over request still waiting for sync; a record
        # it could not hand over is offered again at the next start.
        publisher.close()
        courier.join(timeout=5)
        wiper.publisher = None
        wiper.close()

    ctx.on_stop(stop)
    scanner.start()
    courier.start()
    return wiper


def setup(ctx: ServiceContext) -> None:
    install(ctx)
