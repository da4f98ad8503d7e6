"""The capture service: owns the camera; reads the form's QR code (R1); takes the photo (R3).

Bus contract (requests to ``capture``; replies go to the requester only):

- ``mode``        {sid, mode: idle|qr|photo} -> ``mode-reply`` with the preview URL
- ``capture``     {sid}: the operator takes the photo now, whatever the checks say
- ``retake``      {sid}: drop the photo held for the session, resume live checks
- ``validate-id`` {sid, entry}: manual entry of the application ID, same rules as the QR path

Events (never retained): ``capture/evt/camera`` (camera state, no personal data) and, per
session, ``capture/evt/session/<sid>/application-id``, ``.../guidance`` and ``.../photo``.

Capture is a holder (``holds_personal_data``): on the wipe's ``ForgetSession`` broadcast it
zeroes every frame and photo buffer of the session and answers ``SessionForgotten`` on
``capture/evt/session/<sid>/forgotten`` (``fieldkit.erasure``).
The application ID and the photos are personal data: they exist only in this process's
memory for the active session and in flight on the bus; nothing is logged or written.

The live preview is MJPEG over HTTP on loopback, at ``/preview/<token>.mjpg``; the token is
random per session and handed out only in the ``mode`` reply, so another local process
cannot watch the camera by guessing a URL. Responses carry ``Cache-Control: no-store``.
MJPEG rather than frames over the bus: the browser shows it with a plain ``<img>``, and
preview frames never touch the broker.
"""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fieldkit.bus import BusError, Incoming
from fieldkit.capture.appid import (
    REFUSAL_TEXT,
    ApplicationIdRefused,
    RefusalCode,
    read_application_id,
)
from fieldkit.capture.export import (
    ExportError,
    crop_to_guide,
    online_jpeg,
    print_master,
)
from fieldkit.capture.head import HeadOutline
from fieldkit.capture.messages import (
    Ack,
    Advice,
    ApplicationIdResult,
    CameraState,
    CheckResult,
    Guidance,
    Mode,
    ModeReply,
    ModeRequest,
    PhotoResult,
    SessionRequest,
    ValidateIdRequest,
)
from fieldkit.capture.photo import (
    PhotoAnalyzer,
    PhotoAssessment,
    PhotoCheck,
    guidance_words,
)
from fieldkit.capture.preview import draw_guide, preview_server
from fieldkit.capture.qr import FormReader
from fieldkit.capture.settings import CaptureSection
from fieldkit.capture.sources import CameraUnavailable, FrameSource, source_from_config
from fieldkit.erasure import serve_forget_requests
from fieldkit.messages import Message, MessageError
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
THOROUGH_EVERY = 4


def check_result(check: PhotoCheck) -> CheckResult:
    measured = None if np.isnan(check.measured) else float(check.measured)
    return CheckResult(
        name=check.name,
        passed=check.passed,
        measured=measured,
        threshold=check.threshold,
        unit=check.unit,
        advice=check.advice,
    )


def id_result(
    sid: str, origin: Literal["qr", "manual"], payload: str | bytes
) -> ApplicationIdResult:
    try:
        found = read_application_id(payload)
    except ApplicationIdRefused as refused:
        return refusal_result(sid, origin, refused.code)
    return ApplicationIdResult(sid=sid, origin=origin, accepted=True, application_id=found.digits)


def refusal_result(
    sid: str, origin: Literal["qr", "manual"], code: RefusalCode
) -> ApplicationIdResult:
    ja, en = REFUSAL_TEXT[code]
    return ApplicationIdResult(
        sid=sid, origin=origin, accepted=False, reason=code, message_ja=ja, message_en=en
    )


# ---- session state --------------------------------------------------------------------------


@dataclass
class Session:
    """What the service holds for the one active session; every buffer here can be zeroed."""

    sid: str
    mode: Mode = "idle"
    token: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    last_qr: bytearray = field(default_factory=bytearray)
    steady: int = 0
    previous_centre: tuple[float, float] | None = None
    previous_outline: HeadOutline | None = None  # numbers only: where the crown was
    last_advice: Advice | None = None
    last_guidance_at: float = 0.0
    operator_shot: bool = False
    holding_photo: bool = False
    photo_buffers: list[bytearray] = field(default_factory=list)

    def zero(self) -> None:
        """Overwrite every byte held for the session, then drop the references."""
        for buffer in [self.last_qr, *self.photo_buffers]:
            buffer[:] = bytes(len(buffer))
        self.last_qr = bytearray()
        self.photo_buffers = []
        self.holding_photo = False
        self.operator_shot = False
        self.previous_centre = None
        self.previous_outline = None


class CaptureService:
    """The camera loop, the session state and the bus handlers, sharing one lock."""

    def __init__(self, ctx: ServiceContext, settings: CaptureSection, source: FrameSource) -> None:
        self.ctx = ctx
        self.settings = settings
        self.source = source
        self.reader = FormReader()
        self.analyzer = PhotoAnalyzer(guide_fraction=settings.guide_fraction)
        self.lock = threading.Lock()
        self.session: Session | None = None
        self.frame: Image | None = None  # the latest frame, zeroed on forget
        self.preview = bytearray()  # the latest preview JPEG, zeroed on forget
        self.preview_ready = threading.Condition(self.lock)
        self.camera: Literal["ok", "unavailable", "starting"] = "starting"
        self.camera_reason = ""
        self._open = False
        self._qr_frames = 0
        self._thread = threading.Thread(target=self._run, name="capture-camera", daemon=True)
        self.http: ThreadingHTTPServer | None = None

    # -- lifecycle --

    def start(self) -> None:
        self.http = preview_server(
            self.preview_frame,
            self.latest_preview,
            self.ctx.stopping,
            (self.settings.preview_host, self.settings.preview_port),
        )
        threading.Thread(
            target=self.http.serve_forever, name="capture-preview", daemon=True
        ).start()
        self._thread.start()

    def stop(self) -> None:
        self.ctx.stopping.set()
        with self.lock:
            self.preview_ready.notify_all()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
        self._thread.join(timeout=5)
        with self.lock:
            if self.session is not None:
                self.session.zero()
            self._zero_frames()
        if self._open:
            self.source.close()

    @property
    def preview_base(self) -> str:
        if self.http is None:
            raise RuntimeError("the preview server is not running")
        port = self.http.server_address[1]
        return f"http://{self.settings.preview_host}:{port}"

    # -- bus handlers --

    def on_mode(self, request: ModeRequest, meta: Incoming) -> ModeReply:
        with self.lock:
            if self.session is None or self.session.sid != request.sid:
                # One camera, one applicant: a new session replaces the old one's buffers.
                if self.session is not None:
                    self.session.zero()
                self._zero_frames()
                self.session = Session(request.sid)
            session = self.session
            if session.mode != request.mode:
                session.last_qr[:] = bytes(len(session.last_qr))
                session.last_qr = bytearray()
                session.steady = 0
                session.last_advice = None
            session.mode = request.mode
            url = (
                None
                if request.mode == "idle"
                else f"{self.preview_base}/preview/{session.token}.mjpg"
            )
            return ModeReply(
                sid=request.sid,
                mode=request.mode,
                camera=self.camera,
                camera_reason=self.camera_reason,
                preview_url=url,
            )

    def _session_for(self, sid: str) -> Session:
        if self.session is None or self.session.sid != sid:
            raise MessageError("no active capture session with this sid", ["sid"])
        return self.session

    def on_session_request(self, request: SessionRequest, meta: Incoming) -> Message:
        with self.lock:
            session = self._session_for(request.sid)
            if session.mode != "photo":
                raise MessageError("the session is not in photo mode", ["sid"])
            if request.type == "capture":
                if self.camera != "ok":
                    raise MessageError(f"camera unavailable: {self.camera_reason}", [])
                session.operator_shot = True
                return Ack(sid=request.sid, detail="the photo follows as a photo event")
            for buffer in session.photo_buffers:
                buffer[:] = bytes(len(buffer))
            session.photo_buffers = []
            session.holding_photo = False
            session.steady = 0
            return Ack(sid=request.sid, detail="live checks resumed")

    def forget(self, sid: str) -> list[str]:
        """The wipe's forget handshake: zero the session's buffers; say what was erased."""
        with self.lock:
            held = self.session is not None and self.session.sid == sid
            if held and self.session is not None:
                self.session.zero()
                self.session = None
                self._zero_frames()
        return ["QR reading", "photo buffers", "camera frame", "preview frame"] if held else []

    def on_validate_id(self, request: ValidateIdRequest, meta: Incoming) -> ApplicationIdResult:
        return id_result(request.sid, "manual", request.entry)

    def _zero_frames(self) -> None:
        if self.frame is not None:
            self.frame.fill(0)
            self.frame = None
        self.preview[:] = bytes(len(self.preview))
        self.preview = bytearray()
        self.preview_ready.notify_all()

    # -- camera loop --

    def _set_camera(self, state: Literal["ok", "unavailable"], reason: str = "") -> None:
        if (state, reason) == (self.camera, self.camera_reason):
            return
        self.camera, self.camera_reason = state, reason
        if state == "unavailable":
            log.warning(
                "camera unavailable: %s; retrying every %.0fs", reason, self.settings.retry_seconds
            )
        else:
            log.info("camera ok: %s", self.source.description)
        self._publish(
            "capture/evt/camera",
            CameraState(state=state, reason=reason, source=self.source.description),
        )

    def _publish(self, topic: str, message: Message) -> None:
        try:
            self.ctx.bus.publish(topic, message)
        except BusError as exc:
            # BusError text names the topic and the broker's reason, never the payload.
            log.warning(
                "could not publish on %s: %s", topic.split("/session/")[0], type(exc).__name__
            )

    def _run(self) -> None:
        stopping = self.ctx.stopping
        interval = 1.0 / self.settings.fps
        last_preview = 0.0
        while not stopping.is_set():
            started = time.monotonic()
            with self.lock:
                active = self.session is not None and self.session.mode != "idle"
            if not self._open:
                try:
                    self.source.open()
                    self._open = True
                    self._set_camera("ok")
                except CameraUnavailable as exc:
                    self._set_camera("unavailable", exc.reason)
                    stopping.wait(self.settings.retry_seconds)
                    continue
            if not active:
                stopping.wait(0.05)
                continue
            try:
                frame = self.source.read()
            except CameraUnavailable as exc:
                self.source.close()
                self._open = False
                self._set_camera("unavailable", exc.reason)
                stopping.wait(self.settings.retry_seconds)
                continue
            self._set_camera("ok")
            overlay = self._process(frame)
            if time.monotonic() - last_preview >= 1.0 / self.settings.preview_fps:
                last_preview = time.monotonic()
                self._update_preview(frame, overlay)
            stopping.wait(max(0.0, interval - (time.monotonic() - started)))

    def _process(self, frame: Image) -> PhotoAssessment | None:
        with self.lock:
            session = self.session
            if session is None:
                return None
            if self.frame is not None:
                self.frame.fill(0)
            self.frame = frame
            mode = session.mode
        if mode == "qr":
            self._read_qr(session, frame)
            return None
        if mode == "photo" and not session.holding_photo:
            return self._check_photo(session, frame)
        return None

    def _read_qr(self, session: Session, frame: Image) -> None:
        # Every frame gets the fast decoder; every THOROUGH_EVERY-th frame the whole chain,
        # so an empty view does not keep a core busy.
        self._qr_frames += 1
        reading = self.reader.read(frame, thorough=self._qr_frames % THOROUGH_EVERY == 0)
        if reading.application_id is not None:
            key = bytearray(reading.application_id.digits.encode())
            result = ApplicationIdResult(
                sid=session.sid,
                origin="qr",
                accepted=True,
                application_id=reading.application_id.digits,
                online_url=reading.online_url,
            )
        elif reading.refusal is not None:
            key = bytearray(reading.refusal.encode())
            result = refusal_result(session.sid, "qr", reading.refusal)
        else:
            return
        with self.lock:
            if self.session is not session or session.mode != "qr" or key == session.last_qr:
                key[:] = bytes(len(key))
                return
            session.last_qr[:] = bytes(len(session.last_qr))
            session.last_qr = key
        self._publish(f"capture/evt/session/{session.sid}/application-id", result)

    def _check_photo(self, session: Session, frame: Image) -> PhotoAssessment:
        assessment = self.analyzer.analyse(frame, session.previous_centre, session.previous_outline)
        session.previous_centre = assessment.face_centre
        session.previous_outline = assessment.outline
        session.steady = session.steady + 1 if assessment.passed else 0
        advice = assessment.advice
        now = time.monotonic()
        checks = [check_result(c) for c in assessment.checks]
        if advice != session.last_advice or now - session.last_guidance_at >= 1.0:
            session.last_advice, session.last_guidance_at = advice, now
            ja, en = guidance_words(assessment)
            self._publish(
                f"capture/evt/session/{session.sid}/guidance",
                Guidance(
                    sid=session.sid,
                    advice=advice,
                    message_ja=ja,
                    message_en=en,
                    checks=checks,
                    steady_frames=session.steady,
                ),
            )
        auto = session.steady >= self.settings.auto_capture_frames
        if auto or session.operator_shot:
            self._take_photo(
                session, frame, checks, "auto" if auto else "operator", assessment.passed
            )
        return assessment

    def _take_photo(
        self,
        session: Session,
        frame: Image,
        checks: list[CheckResult],
        trigger: Literal["auto", "operator"],
        passed: bool,
    ) -> None:
        try:
            photo = crop_to_guide(frame, self.analyzer.guide_for(frame))
            master, online = bytearray(print_master(photo)), bytearray(online_jpeg(photo))
            photo.fill(0)
        except ExportError as exc:
            log.warning("photo export failed: %s", exc)
            session.operator_shot = False
            return
        with self.lock:
            if self.session is not session:
                master[:] = bytes(len(master))
                online[:] = bytes(len(online))
                return
            session.operator_shot = False
            session.holding_photo = True
            session.photo_buffers = [master, online]
        result = PhotoResult(
            sid=session.sid,
            trigger=trigger,
            print_jpeg_b64=base64.b64encode(master).decode("ascii"),
            online_jpeg_b64=base64.b64encode(online).decode("ascii"),
            checks=checks,
            all_passed=passed,
        )
        log.info("photo taken (%s, all checks passed: %s)", trigger, passed)
        self._publish(f"capture/evt/session/{session.sid}/photo", result)

    # -- preview --

    def _update_preview(self, frame: Image, assessment: PhotoAssessment | None) -> None:
        with self.lock:
            mode = self.session.mode if self.session is not None else "idle"
        view = draw_guide(frame, self.analyzer.guide_for(frame), mode, assessment)
        ok, data = cv2.imencode(".jpg", view, [cv2.IMWRITE_JPEG_QUALITY, 70])
        view.fill(0)
        if not ok:
            return
        with self.lock:
            self.preview[:] = bytes(len(self.preview))
            self.preview = bytearray(data.tobytes())
            self.preview_ready.notify_all()

    def latest_preview(self) -> bytearray:
        with self.lock:
            return self.preview

    def preview_frame(self, token: str, after: bytearray | None, timeout: float) -> bytes | None:
        """The next preview JPEG for the session holding ``token``, or None when it ended."""
        with self.lock:
            deadline = time.monotonic() + timeout
            while True:
                session = self.session
                if (
                    session is None
                    or session.mode == "idle"
                    or not secrets.compare_digest(session.token, token)
                ):
                    return None
                if self.preview and self.preview is not after:
                    return bytes(self.preview)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.ctx.stopping.is_set():
                    return b""
                self.preview_ready.wait(remaining)


def install(ctx: ServiceContext, service_class: type[CaptureService] = CaptureService) -> None:
    """Build the service from the config, register its handlers and start the camera loop."""
    settings = ctx.config.capture
    source = source_from_config(settings.source, settings.width, settings.height, settings.fps)
    service = service_class(ctx, settings, source)
    ctx.bus.handle_request("mode", ModeRequest, service.on_mode)
    for op in ("capture", "retake"):
        ctx.bus.handle_request(op, SessionRequest, service.on_session_request)
    serve_forget_requests(ctx.bus, service.forget)
    ctx.bus.handle_request("validate-id", ValidateIdRequest, service.on_validate_id)
    service.start()
    ctx.on_stop(service.stop)


def setup(ctx: ServiceContext) -> None:
    install(ctx)
