"""The kiosk's Flask app factory. Nothing runs at import; gunicorn's worker attaches the bus."""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from flask import Flask, Response, g, render_template, request, session, url_for
from flask_login import LoginManager, current_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from fieldkit.audit import AuditLog, entries
from fieldkit.bus import BusError
from fieldkit.config import DeviceConfig, load_config
from fieldkit.erasure import SessionForgotten, serve_forget_requests
from fieldkit.kiosk.camera import Camera
from fieldkit.kiosk.flow import ApplicantSession, AuditEvent, Counter, FlowError, Step
from fieldkit.kiosk.handoff import SessionFolders
from fieldkit.kiosk.operators import OperatorRegistry
from fieldkit.kiosk.outbound import HandedCursor, Outbound
from fieldkit.kiosk.printer import Printer
from fieldkit.kiosk.reception import ReceptionNumbers
from fieldkit.kiosk.seat import Seat
from fieldkit.kiosk.text import Lang, age_band_label, check_words, say
from fieldkit.kiosk.wiping import FORGOTTEN_TOPIC, WipeWatch
from fieldkit.messages import Ping, Pong
from fieldkit.municipalities import MunicipalityTable
from fieldkit.registry import holders, specs_for_role
from fieldkit.runner import ServiceContext, stop_service
from fieldkit.wipe.fragments import fragments_b64
from fieldkit.wipe.messages import (
    MarkersAccepted,
    SessionMarkers,
    UnprovenQuery,
    UnprovenSession,
    UnprovenSessions,
    WipeResult,
    WipeSession,
)

log = logging.getLogger(__name__)
EXTENSION = "fieldkit.kiosk"
# The wipe waits up to its holder timeout for the handshake, then purges and scans.
WIPE_REPLY_TIMEOUT = 60.0
# A holder that does not answer a ping within this refuses a new session.
HOLDER_PING_TIMEOUT = 2.0

csrf = CSRFProtect()
login_manager = LoginManager()


@dataclass
class UnprovenWipe:
    """A closed session whose erasure record is missing or failed. Its markers (the wipe's
    way to recognise the session's residue) stay here, in memory only, until the wipe
    service has taken them; it keeps them until a wipe of the session passes."""

    sid: str
    operator: str
    markers: SessionMarkers | None = field(default=None, repr=False)
    attempts: int = 0


@dataclass
class Kiosk:
    """Everything the kiosk's views share, attached to the app (never a module global)."""

    config: DeviceConfig
    operators: OperatorRegistry
    counter: Counter
    municipalities: MunicipalityTable
    audit_log: list[AuditEvent] = field(default_factory=list)
    service: ServiceContext | None = None
    camera: Camera | None = None
    printer: Printer | None = None
    folders: SessionFolders | None = None
    outbound: Outbound | None = None
    trail: AuditLog | None = None
    # The last session while its erasure is not proven (R6): no new session until it is.
    unproven: UnprovenWipe | None = None
    # More sessions whose erasure is not proven (known from the wipe when the kiosk starts).
    backlog: list[UnprovenSession] = field(default_factory=list)
    # The services that must answer the forget handshake (and the wipe): pinged at each start.
    holders: list[str] = field(default_factory=list)
    # The one operator logged in on this tablet (R13, issue 17).
    seat: Seat = field(default_factory=Seat)
    # Why the last session ended with nobody at the screen (the ready page says it once).
    timed_out: str | None = None
    # The visit staff chose for each day (date -> visit id, None: not on the schedule).
    visit_chosen: dict[str, int | None] = field(default_factory=dict)
    # The wipe as staff watch it: who has erased the session so far, then the verdict.
    wipe_watch: WipeWatch = field(default_factory=lambda: WipeWatch([]))
    _wipe_lock: threading.RLock = field(default_factory=threading.RLock)

    def record(self, event: AuditEvent) -> None:
        """Audit events say who did what, never whose data (R14)."""
        self.audit_log.append(event)
        entry = None
        if self.trail is not None:
            entry = self.trail.append(
                {
                    "at": event.at,
                    "operator": event.operator,
                    "session": event.sid,
                    "action": event.action,
                    "from": event.step_from,
                    "to": event.step_to,
                }
            )
        if self.outbound is not None:
            self.outbound.audit(event, entry)
        log.info(
            "audit: operator=%s sid=%s action=%s %s->%s",
            event.operator,
            event.sid,
            event.action,
            event.step_from,
            event.step_to,
        )

    def record_login(self, operator: str, action: str) -> None:
        # The ID typed at a refused login is recorded as typed: it is an operator ID, not
        # applicant data, and the audit needs it to see guessing (R14).
        self.record(AuditEvent(time.time(), operator[:32], "", action, "", ""))

    def session_closed(self, session: ApplicantSession) -> list[str]:
        """A session closes: its files go, its statistics go to the hub (R6, R21)."""
        if self.outbound is not None:
            self.outbound.statistics(session)
        return self.purge_files(session.sid)

    def purge_files(self, sid: str) -> list[str]:
        return self.folders.purge(sid) if self.folders is not None else []

    def close_and_wipe(self) -> bool | None:
        """Close the ended session and ask the wipe service to erase it everywhere (R6).

        Returns the wipe's verdict, or None when no bus is attached (the kiosk's own tests):
        closing the session has then zeroed what the kiosk held, and nothing else ran. None
        too when another thread (the idle timer, a request) closed the session first.
        A session whose wipe is not proven stays *unproven*: no new session starts until a
        retry of its wipe passes (``session_refusal``, ``retry_wipe``).
        """
        session = self.counter.current
        if session is None:
            return None
        if self.service is None:
            self.counter.close()
            return None
        with self._wipe_lock:
            # The timer and a request may both end the session: one of them closes it.
            if self.counter.current is not session:
                return None
            if session.step is not Step.ENDED:
                raise FlowError("end the session before closing it")
            # Unproven before the counter frees up: no new session starts in between.
            self.unproven = UnprovenWipe(session.sid, session.operator, session_markers(session))
            self.counter.close()
            # Only the pending wipe holds the markers now, and it hands them to the wipe.
            del session
            return self.retry_wipe()

    def foreign_session(self, operator: str) -> bool:
        """Whether the open session is another operator's: they may not see, move or end it."""
        session = self.counter.current
        return session is not None and session.operator != operator

    def end_session(self, reason: str) -> bool | None:
        """Abandon whatever session is open and have it wiped; the wipe's verdict (or None)."""
        if self.counter.current is None:
            return None
        self.counter.abandon(reason)
        return self.close_and_wipe()

    def expire_idle(self) -> None:
        """The timeouts, run on the server (issue 17): by the idle timer with nobody at the
        screen, and before each request. An applicant session nobody moved on for
        ``applicant_idle_minutes`` is abandoned and wiped; an operator who did nothing for
        ``operator_idle_minutes`` is logged out, and their open session ends with the login.
        Both are audited (``abandon:idle``, ``logout:idle``) and say whose data never."""
        settings = self.config.kiosk
        if self.counter.idle_expired(settings.applicant_idle_minutes * 60):
            # Said before the wipe runs: the page reloads as soon as the session is closed.
            self.timed_out = "applicant_timed_out"
            self.end_session("idle")
        operator = self.seat.end_if_idle(settings.operator_idle_minutes * 60)
        if operator is not None:
            self.record_login(operator, "logout:idle")
            session = self.counter.current
            if session is not None and session.operator == operator:
                self.end_session("operator-idle")

    def retry_wipe(self) -> bool:
        """Ask the wipe service (again) to erase the unproven session; True once it passed."""
        with self._wipe_lock:
            pending = self.unproven
            if pending is None:
                return True
            if self.service is None:
                return False
            pending.attempts += 1
            bus = self.service.bus
            self.wipe_watch.begin(pending.sid)
            request = WipeSession(sid=pending.sid, operator=pending.operator)
            try:
                if pending.markers is not None:
                    # The wipe keeps the markers until the session is proven erased; the
                    # kiosk holds no copy while the wipe scans its memory.
                    bus.request("wipe", "session-markers", pending.markers, MarkersAccepted)
                    pending.markers = None
                    gc.collect()
                result = bus.request(
                    "wipe", "wipe-session", request, WipeResult, timeout=WIPE_REPLY_TIMEOUT
                )
            except BusError as exc:
                log.error("session %s: the wipe could not be asked: %s", pending.sid, exc)
                ok = False
            else:
                ok = result.ok
                if not ok:
                    log.error(
                        "session %s: wipe failed: %s", pending.sid, "; ".join(result.failures)
                    )
            del request
            self.wipe_watch.finished(pending.sid, ok)
            action = "wiped" if ok else "wipe-failed"
            if pending.attempts > 1:
                action += f":attempt-{pending.attempts}"
            self.record(AuditEvent(time.time(), pending.operator, pending.sid, action, "", ""))
            if not ok:
                return False
            self.unproven = None
            if self.backlog:
                # Sessions ended before a restart whose erasure is not proven either: each
                # one's wipe must pass before the counter opens.
                waiting = self.backlog.pop(0)
                self.unproven = UnprovenWipe(waiting.sid, waiting.operator)
                return self.retry_wipe()
            return True

    def session_refusal(self, lang: Lang) -> tuple[str, str] | None:
        """Why no new applicant session may start now, as (code, words for staff); None when
        one may. Fails closed: an unproven erasure (retried here once more), a holder or the
        wipe that does not answer, or the antivirus gate refusing or silent."""
        if self.unproven is not None and not self.retry_wipe():
            return "wipe-unproven", say("wipe_unproven", lang)
        if self.service is None:
            return None
        silent = []
        for name in self.holders:
            try:
                self.service.bus.request(name, "ping", Ping(), Pong, timeout=HOLDER_PING_TIMEOUT)
            except BusError:
                silent.append(name)
        if silent:
            return "holder-offline", say("holder_offline", lang).format(services=", ".join(silent))
        return None

    def forget_session(self, sid: str) -> list[str]:
        """The wipe handshake: zero the applicant session ``sid`` if this kiosk still holds it."""
        erased = self.camera.forget(sid) if self.camera is not None else []
        erased += self.purge_files(sid)
        erased += self.printer.forget(sid) if self.printer is not None else []
        session = self.counter.current
        if session is None or session.sid != sid:
            return erased
        self.counter.abandon("wipe")
        self.counter.close()
        return [*erased, "applicant session in kiosk memory"]


def session_markers(session: ApplicantSession) -> SessionMarkers:
    """What lets the wipe recognise this session's residue (sent on the bus, never stored).

    Both JPEGs: the print master goes to the printer, the online JPEG (a separate encoding,
    sharing no bytes with it) to the session folder for the online hand-off.
    """
    photo = [
        fragment
        for jpeg in (session.photo, session.online_photo)
        if jpeg
        for fragment in fragments_b64(bytes(jpeg))
    ]
    return SessionMarkers(
        sid=session.sid,
        application_id=session.application_id,
        photo_fragments_b64=photo,
        canary=session.canary,
    )


def kiosk_audit_path(config: DeviceConfig) -> Path:
    return config.kiosk.audit_log or config.bus.runtime_dir / "kiosk-audit.jsonl"


def unproven_in_trail(path: Path) -> UnprovenWipe | None:
    """The last session of the kiosk's audit trail when no wipe of it passed (R6).

    A kiosk process that dies during a session never asks for its wipe, so the wipe's records
    know nothing of it; the trail, which outlives the process, does. Its markers are gone
    with the old process: the retry erases the session's places and asks every holder to
    forget it, but its scan has none of the session's own markers to look for."""
    last: UnprovenWipe | None = None
    for entry in entries(path):
        event = entry.get("event", {})
        action = str(event.get("action", ""))
        if action == "start":
            last = UnprovenWipe(str(event.get("session", "")), str(event.get("operator", "")))
        elif last is not None and event.get("session") == last.sid and proves_erasure(action):
            last = None
    return last


def proves_erasure(action: str) -> bool:
    """An audit action that says a passing wipe of its session was recorded."""
    return action == "wiped" or action.startswith("wiped:")


def kiosk(app: Flask | None = None) -> Kiosk:
    from flask import current_app

    return cast(Kiosk, (app or current_app).extensions[EXTENSION])


def attach_service(app: Flask, ctx: ServiceContext) -> None:
    state = kiosk(app)
    state.service = ctx
    trail_path = kiosk_audit_path(state.config)
    state.outbound = Outbound(
        ctx.bus,
        state.config.device.site or state.config.device.id,
        HandedCursor(trail_path.with_name(trail_path.name + ".handed")),
    )
    # Events of the trail a kiosk before this one did not hand to sync (it died with them).
    state.outbound.resume(entries(trail_path))
    state.camera = Camera(ctx.bus, state.counter, state.config.kiosk.online_application_hosts)
    state.printer = Printer(
        ctx.bus,
        state.counter,
        state.config.device.site or state.config.device.id,
        state.municipalities,
        state.config.kiosk.contact,
    )
    serve_forget_requests(ctx.bus, state.forget_session)
    state.operators.follow(ctx.bus)
    specs = specs_for_role(state.config.device.role, state.config.runner.services)
    state.holders = sorted({*holders(specs), "wipe"} - {ctx.spec.name})
    # Staff see each holder's answer to the wipe's forget handshake as it comes (item 6).
    state.wipe_watch = WipeWatch(holders(specs))
    ctx.bus.handle_event(
        FORGOTTEN_TOPIC, SessionForgotten, lambda answer, _: state.wipe_watch.forgotten(answer)
    )
    # A session this kiosk (or the one before it, if it restarted) ended whose erasure the
    # wipe has not proven stays unproven across the restart.
    try:
        known = ctx.bus.request("wipe", "unproven-query", UnprovenQuery(), UnprovenSessions)
    except BusError as exc:
        log.warning("could not ask the wipe for unproven sessions: %s", exc)
    else:
        if known.sessions:
            first, *rest = known.sessions
            state.unproven = UnprovenWipe(first.sid, first.operator)
            state.backlog = rest
    # A session the previous kiosk process left open (it died before asking for the wipe).
    left = unproven_in_trail(kiosk_audit_path(state.config))
    known_sids = {b.sid for b in state.backlog}
    if state.unproven is not None:
        known_sids.add(state.unproven.sid)
    if left is not None and left.sid not in known_sids:
        if state.unproven is None:
            state.unproven = left
        else:
            state.backlog.append(UnprovenSession(sid=left.sid, operator=left.operator))
    # An unproven erasure is retried by itself, not only when staff press start.
    retry = threading.Thread(
        target=retry_unproven, args=(state, ctx.stopping), name="kiosk-wipe-retry", daemon=True
    )
    retry.start()
    # The timeouts run whether or not anyone touches the screen (issue 17). This runs in
    # gunicorn's one worker (post_worker_init), the process that holds the session.
    timer = threading.Thread(
        target=watch_idle, args=(state, ctx.stopping), name="kiosk-idle-timer", daemon=True
    )
    timer.start()


def retry_unproven(state: Kiosk, stopping: threading.Event) -> None:
    while not stopping.wait(state.config.kiosk.wipe_retry_seconds):
        if state.unproven is not None:
            try:
                state.retry_wipe()
            except Exception:
                log.exception("retrying the unproven wipe failed")


def watch_idle(state: Kiosk, stopping: threading.Event) -> None:
    while not stopping.wait(state.config.kiosk.idle_check_seconds):
        try:
            state.expire_idle()
        except Exception:
            log.exception("the idle timer failed")


def detach_service(app: Flask) -> None:
    state = kiosk(app)
    if state.service is not None:
        # Records still queued for sync (an audit event of the last login) go out first,
        # while the bus is still up.
        if state.outbound is not None:
            state.outbound.close()
            state.outbound = None
        stop_service(state.service)
        state.service = None
        state.camera = None
        state.printer = None


SECURITY_HEADERS = {
    # No inline script anywhere; nothing from outside the kiosk.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; "
        # The camera preview is MJPEG from the capture service, on loopback only.
        "img-src 'self' data: http://127.0.0.1:*; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # R11: the browser must not keep applicant pages in its cache or history snapshots.
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
}


def page_follows(state: Kiosk) -> dict[str, str] | None:
    """What kiosk.js polls to keep the operator's page in step with the server (base.html);
    None where nothing is to follow: nobody logged in, or another operator's session."""
    if not current_user.is_authenticated or state.foreign_session(current_user.id):
        return None
    session = state.counter.current
    return {
        "live": url_for("counter.live"),
        "step": session.step.value if session else "",
        "unproven": "1" if state.unproven is not None else "",
    }


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the kiosk app; a test passes ``FIELDKIT`` (a DeviceConfig) and any Flask keys."""
    app = Flask(__name__)
    app.config.from_mapping(
        # A fresh key per start: no operator login survives a restart of the kiosk.
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        WTF_CSRF_TIME_LIMIT=3600,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    config: DeviceConfig = app.config.get("FIELDKIT") or load_config()
    settings = config.kiosk
    # Today's numbers issued before a restart are in the trail: the count goes on from there.
    numbers = ReceptionNumbers(settings.reception_prefix, entries(kiosk_audit_path(config)))
    state = Kiosk(
        config=config,
        operators=OperatorRegistry(
            settings.operators,
            max_failures=settings.lockout_failures,
            lockout_seconds=settings.lockout_minutes * 60,
        ),
        counter=Counter(
            audit=lambda e: state.record(e),
            on_close=lambda s: state.session_closed(s),
            reception_number=numbers.issue,
        ),
        municipalities=MunicipalityTable.load(settings.prefectures),
    )
    state.trail = AuditLog(kiosk_audit_path(config))
    state.folders = SessionFolders(settings.session_dir or config.bus.runtime_dir / "sessions")
    app.extensions[EXTENSION] = state

    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    # Flask-Login's own prompt is English; the kiosk says it from its catalogue.
    login_manager.login_message = "login_needed"
    login_manager.localize_callback = lambda key: say(key, g.get("lang", "ja"))

    from fieldkit.kiosk import auth, card, counter, enrol, visit

    app.register_blueprint(enrol.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(counter.bp)
    app.register_blueprint(card.bp)
    app.register_blueprint(visit.bp)

    @app.before_request
    def choose_language() -> None:
        if request.args.get("lang") in ("ja", "en"):
            session["lang"] = request.args["lang"]
        g.lang = session.get("lang", "ja")

    @app.context_processor
    def helpers() -> dict[str, Any]:
        lang: Lang = g.get("lang", "ja")
        return {
            "follow": page_follows(state),
            "t": lambda key: say(key, lang),
            "lang": lang,
            "age_label": lambda band: age_band_label(band, lang),
            "check_words": lambda check: check_words(check, lang),
        }

    @app.errorhandler(CSRFError)
    def page_expired(error: CSRFError) -> tuple[str, int]:
        # An old page (its token timed out, or the wall clock stepped): say so, and what to do.
        return render_template("expired.html"), 400

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    return app
