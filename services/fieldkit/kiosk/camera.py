"""The kiosk's side of the capture service: camera modes per step, and what capture reports.

Capture events arrive on the bus thread; they move the state machine (an application ID read
from the form's QR) or update what the operator sees (guidance, the candidate photo). The
browser learns of changes by polling ``/live`` (``static/kiosk.js``).
"""

from __future__ import annotations

import base64
import logging
import threading
from dataclasses import dataclass, field

from fieldkit.bus import Bus, BusError, Incoming
from fieldkit.capture.messages import (
    Ack,
    ApplicationIdResult,
    CameraState,
    CheckResult,
    Guidance,
    ModeReply,
    ModeRequest,
    PhotoResult,
    SessionRequest,
)
from fieldkit.kiosk.flow import Counter, FlowError, Step
from fieldkit.kiosk.handoff import allowed_online_url

log = logging.getLogger(__name__)

# The camera mode each step wants; every other step leaves the camera idle.
STEP_MODES = {Step.SCAN: "qr", Step.PHOTO: "photo"}


@dataclass
class LiveView:
    """What the operator's screen shows while the camera works. Photo bytes are personal.

    What it says is kept as what happened (a refusal's code, the checks), not as words: the
    page says it in the operator's language from the kiosk's text catalogue (kiosk/text.py).
    """

    sid: str
    mode: str = "idle"
    preview_url: str | None = None
    camera_problem: str | None = None
    # The last QR refusal (a catalogue key, ``id_refused:<code>``), at the scan step.
    notice: str | None = None
    # The photo step's checks of the last frame (the first that fails is what to do).
    checks: list[CheckResult] = field(default_factory=list)
    candidate_print: bytearray | None = field(default=None, repr=False)
    candidate_online: bytearray | None = field(default=None, repr=False)
    candidate_checks: list[CheckResult] = field(default_factory=list)
    candidate_passed: bool = False
    # Manual entry wins (issue 21 item 2): while staff type an ID (the field has focus or
    # content, the page says so) or a refusal of a typed ID is on screen, a QR read is only
    # offered, never taken. The offer is personal: the ID and the QR's link.
    typing: bool = False
    refusal_open: bool = False
    offer: tuple[str, str | None] | None = field(default=None, repr=False)

    @property
    def manual_entry(self) -> bool:
        return self.typing or self.refusal_open

    def drop_candidate(self) -> None:
        for buffer in (self.candidate_print, self.candidate_online):
            if buffer is not None:
                buffer[:] = bytes(len(buffer))
        self.candidate_print = self.candidate_online = None
        self.candidate_checks = []

    def zero(self) -> None:
        self.drop_candidate()
        self.notice = None
        self.checks = []
        self.offer = None
        self.typing = self.refusal_open = False


class Camera:
    """Asks capture for the right mode at each step and turns its events into kiosk state."""

    def __init__(self, bus: Bus, counter: Counter, online_hosts: list[str]) -> None:
        self.bus = bus
        self.counter = counter
        self.online_hosts = online_hosts
        self._lock = threading.Lock()
        self.live: LiveView | None = None
        bus.handle_event("capture/evt/camera", CameraState, self._on_camera)
        bus.handle_event("capture/evt/session/+/application-id", ApplicationIdResult, self._on_id)
        bus.handle_event("capture/evt/session/+/guidance", Guidance, self._on_guidance)
        bus.handle_event("capture/evt/session/+/photo", PhotoResult, self._on_photo)

    def follow(self) -> LiveView | None:
        """Put the camera in the mode the current step needs (idempotent per step)."""
        session = self.counter.current
        if session is None:
            self._set_idle()
            return None
        mode = STEP_MODES.get(session.step, "idle")
        with self._lock:
            live = self.live
            if live is None or live.sid != session.sid:
                if live is not None:
                    live.zero()
                live = self.live = LiveView(sid=session.sid)
        if live.mode == mode:
            return live
        try:
            reply = self.bus.request(
                "capture", "mode", ModeRequest(sid=session.sid, mode=mode), ModeReply, timeout=5
            )
        except BusError as exc:
            live.camera_problem = str(exc)
            log.warning("capture did not take mode %s: %s", mode, type(exc).__name__)
            return live
        live.preview_url = reply.preview_url
        live.camera_problem = reply.camera_reason or None
        live.mode = mode
        if mode == "idle":
            live.zero()
        return live

    def retake(self) -> None:
        session = self.counter.require(Step.PHOTO)
        with self._lock:
            if self.live is not None:
                self.live.drop_candidate()
        self.bus.request("capture", "retake", SessionRequest(type="retake", sid=session.sid), Ack)

    def take_now(self) -> None:
        session = self.counter.require(Step.PHOTO)
        self.bus.request("capture", "capture", SessionRequest(type="capture", sid=session.sid), Ack)

    def accept_photo(self) -> None:
        """The operator accepts the candidate photo: it moves into the applicant session."""
        with self._lock:
            live = self.live
            if live is None or live.candidate_print is None or live.candidate_online is None:
                raise FlowError("no photo to accept yet")
            self.counter.set_photo(bytes(live.candidate_print), bytes(live.candidate_online))
            live.drop_candidate()

    def manual_entry(self, typing: bool | None = None, refusal_open: bool | None = None) -> None:
        """The scan page says whether staff are typing an ID, or a typed ID's refusal is shown."""
        with self._lock:
            live = self._at_scan()
            if live is None:
                return
            if typing is not None:
                live.typing = typing
            if refusal_open is not None:
                live.refusal_open = refusal_open

    def offered(self) -> bool:
        with self._lock:
            live = self._at_scan()
            return live is not None and live.offer is not None

    def take_offer(self) -> None:
        """Staff chose the QR's ID over what they typed: the session moves on with it."""
        with self._lock:
            live = self._at_scan()
            if live is None or live.offer is None:
                raise FlowError("no QR code is offered")
            application_id, online_url = live.offer
            live.offer = None
            live.typing = live.refusal_open = False
            self.counter.set_application_id(application_id, online_url)

    def decline_offer(self) -> None:
        """Staff keep typing: the QR's ID is dropped (capture sends it again only after another
        code was in view)."""
        with self._lock:
            live = self._at_scan()
            if live is not None:
                live.offer = None

    def _at_scan(self) -> LiveView | None:
        session = self.counter.current
        live = self.live
        if session is None or session.step is not Step.SCAN or live is None:
            return None
        return live if live.sid == session.sid else None

    def forget(self, sid: str) -> list[str]:
        with self._lock:
            live = self.live
            if live is None or live.sid != sid:
                return []
            live.zero()
            self.live = None
        return ["camera view in kiosk memory"]

    def _set_idle(self) -> None:
        with self._lock:
            live, self.live = self.live, None
        if live is not None:
            live.zero()
            if live.mode != "idle":
                try:
                    self.bus.request(
                        "capture", "mode", ModeRequest(sid=live.sid, mode="idle"), ModeReply
                    )
                except BusError:
                    log.warning("capture did not go idle")

    def _live_for(self, sid: str) -> LiveView | None:
        live = self.live
        return live if live is not None and live.sid == sid else None

    def _on_id(self, result: ApplicationIdResult, meta: Incoming) -> None:
        with self._lock:
            live = self._live_for(result.sid)
            session = self.counter.current
            if live is None or session is None or session.sid != result.sid:
                return
            if result.accepted and result.application_id and session.step is Step.SCAN:
                online_url = allowed_online_url(result.online_url, self.online_hosts)
                live.notice = None
                if live.manual_entry:
                    # Offered, never forced: staff typing keep their digits and their refusal.
                    live.offer = (result.application_id, online_url)
                else:
                    self.counter.set_application_id(result.application_id, online_url)
            elif not result.accepted:
                live.notice = f"id_refused:{result.reason}" if result.reason else None

    def _on_camera(self, state: CameraState, meta: Incoming) -> None:
        # Unplugged (or back) while a step uses it: the operator is told at once, not only
        # when the next step asks capture for its mode.
        with self._lock:
            if self.live is not None:
                self.live.camera_problem = state.reason if state.state == "unavailable" else None

    def _on_guidance(self, guidance: Guidance, meta: Incoming) -> None:
        with self._lock:
            live = self._live_for(guidance.sid)
            if live is not None:
                live.checks = guidance.checks

    def _on_photo(self, photo: PhotoResult, meta: Incoming) -> None:
        with self._lock:
            live = self._live_for(photo.sid)
            if live is None:
                return
            live.drop_candidate()
            live.candidate_print = bytearray(base64.b64decode(photo.print_jpeg_b64))
            live.candidate_online = bytearray(base64.b64decode(photo.online_jpeg_b64))
            live.candidate_checks = photo.checks
            live.candidate_passed = photo.all_passed
