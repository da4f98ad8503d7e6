"""The capture service on a real broker: modes, QR result, auto-capture, preview, forgetting.

R1 (QR to application ID), R3 (photo), R6/R12 (buffers zeroed on forget), R9 (camera), R29.
"""

from __future__ import annotations

import base64
import http.client
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from fieldkit.bus import RequestRefused, collect_retained, retained_violations
from fieldkit.capture.messages import (
    Ack,
    ApplicationIdResult,
    CameraState,
    Guidance,
    ModeReply,
    ModeRequest,
    PhotoResult,
    SessionRequest,
    ValidateIdRequest,
)
from fieldkit.capture.service import CaptureService, install
from fieldkit.capture.sources import DEMO_ID
from fieldkit.capture.synthetic import photographed_form
from fieldkit.config import load_config
from fieldkit.erasure import ForgetSession, SessionForgotten, forget_topic, forgotten_topic
from fieldkit.messages import Message, decode
from fieldkit.registry import ServiceSpec, load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from tests.bus_events import BusEvents, Seen
from tests.capture_scenes import TEST_ID, applicant_frame, qr_modules
from tests.conftest import BusFactory, write_config

FACE = applicant_frame()  # passes every photo check

SID = "5e5510000000000000000000abcdef01"  # the kiosk's form: 32 hex digits


def forget(make_bus: BusFactory, sid: str = SID) -> SessionForgotten:
    """Play the wipe: broadcast ForgetSession and wait for capture's answer."""
    answers: list[SessionForgotten] = []
    arrived = threading.Event()

    def keep(topic: str, payload: bytes, retained: bool) -> None:
        answers.append(decode(payload, SessionForgotten))
        arrived.set()

    wipe = make_bus("wipe", connect=False)
    wipe.observe(forgotten_topic("capture", sid), keep)
    wipe.connect()
    wipe.publish(forget_topic(sid), ForgetSession(sid=sid))
    assert arrived.wait(10), "capture did not answer the forget broadcast"
    wipe.close()
    return answers[0]


class Events(BusEvents):
    """Session events seen by an auditor that reads everything."""

    def wait_for(self, suffix: str, model: type[Message], timeout: float = 20.0) -> Message:
        def pick(items: list[Seen]) -> Message | None:
            for item in items:
                if item[0].endswith(suffix):
                    items.remove(item)
                    return decode(item[1], model)
            return None

        return self.wait_until(pick, timeout, f"event {suffix}")


def _start(tmp_path: Path, source: str) -> ServiceContext:
    config = load_config(
        write_config(
            tmp_path,
            f"""
            [capture]
            source = "{source}"
            fps = 10
            retry_seconds = 0.3
            auto_capture_frames = 3
            """,
        )
    )
    (spec,) = load_specs(["capture"])
    return start_service(spec, config)


def _service(ctx: ServiceContext) -> CaptureService:
    stop = ctx._on_stop[-1]
    service = getattr(stop, "__self__", None)
    assert isinstance(service, CaptureService)
    return service


@pytest.fixture
def scene_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "scenes"
    folder.mkdir()
    return folder


@pytest.fixture
def capture_ctx(broker: object, tmp_path: Path, scene_dir: Path) -> Iterator[ServiceContext]:
    ctx = _start(tmp_path, f"images:{scene_dir}")
    yield ctx
    stop_service(ctx)


def _events(make_bus: BusFactory) -> Events:
    events = Events()
    make_bus("audit").observe("capture/evt/#", events)
    time.sleep(0.2)
    return events


def test_qr_mode_publishes_the_application_id_to_the_session(
    broker: object,
    tmp_path: Path,
    scene_dir: Path,
    make_bus: BusFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    form = photographed_form(
        qr_modules(f"https://example.jp/apply?id={TEST_ID}".encode()),
        "perspective",
        np.random.default_rng(4),
    )
    cv2.imwrite(str(scene_dir / "form.png"), form)
    ctx = _start(tmp_path, f"images:{scene_dir}")
    try:
        events = _events(make_bus)
        tester = make_bus("tester")
        reply = tester.request("capture", "mode", ModeRequest(sid=SID, mode="qr"), ModeReply)
        assert reply.mode == "qr" and reply.preview_url is not None
        result = events.wait_for(f"session/{SID}/application-id", ApplicationIdResult)
        assert isinstance(result, ApplicationIdResult)
        assert result.accepted and result.application_id == TEST_ID and result.origin == "qr"

        # Manual entry goes through the same rules.
        typed = tester.request(
            "capture",
            "validate-id",
            ValidateIdRequest(sid=SID, entry="1234 5678"),
            ApplicationIdResult,
        )
        assert not typed.accepted and typed.reason == "wrong-length" and typed.message_ja

        # Nothing is retained, and the ID is in no log line.
        retained = collect_retained(make_bus("audit", connect=False), wait=0.3)
        assert retained_violations(retained) == []
        assert all(TEST_ID not in r.getMessage() for r in caplog.records)
    finally:
        stop_service(ctx)


def test_photo_mode_guides_then_auto_captures_a_compliant_photo_and_retake_works(
    capture_ctx: ServiceContext, scene_dir: Path, make_bus: BusFactory
) -> None:
    cv2.imwrite(str(scene_dir / "face.png"), FACE)
    events = _events(make_bus)
    tester = make_bus("tester")
    tester.request("capture", "mode", ModeRequest(sid=SID, mode="photo"), ModeReply)

    guidance = events.wait_for(f"session/{SID}/guidance", Guidance)
    assert isinstance(guidance, Guidance) and len(guidance.checks) == 17
    photo = events.wait_for(f"session/{SID}/photo", PhotoResult)
    assert isinstance(photo, PhotoResult)
    assert photo.trigger == "auto" and photo.all_passed
    master = cv2.imdecode(np.frombuffer(base64.b64decode(photo.print_jpeg_b64), np.uint8), 1)
    assert master.shape == (1063, 827, 3)
    assert 20 * 1024 <= len(base64.b64decode(photo.online_jpeg_b64)) <= 7 * 1024 * 1024

    ack = tester.request("capture", "retake", SessionRequest(type="retake", sid=SID), Ack)
    assert ack.sid == SID
    again = events.wait_for(f"session/{SID}/photo", PhotoResult)
    assert isinstance(again, PhotoResult)

    # The operator can take the photo whatever the checks say.
    tester.request("capture", "retake", SessionRequest(type="retake", sid=SID), Ack)
    tester.request("capture", "capture", SessionRequest(type="capture", sid=SID), Ack)
    events.wait_for(f"session/{SID}/photo", PhotoResult)


def test_preview_is_mjpeg_with_no_store_and_needs_the_session_token(
    capture_ctx: ServiceContext, scene_dir: Path, make_bus: BusFactory
) -> None:
    cv2.imwrite(str(scene_dir / "face.png"), FACE)
    tester = make_bus("tester")
    reply = tester.request("capture", "mode", ModeRequest(sid=SID, mode="photo"), ModeReply)
    assert reply.preview_url is not None
    url = urllib.parse.urlsplit(reply.preview_url)
    assert url.hostname == "127.0.0.1"

    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", url.path)
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("Content-Type", "").startswith("multipart/x-mixed-replace")
    chunk = b""
    while b"\xff\xd8" not in chunk and len(chunk) < 1 << 20:
        chunk += response.read1(65536)
    assert b"Content-Type: image/jpeg" in chunk and b"\xff\xd8" in chunk
    conn.close()

    # The protection holds: a wrong token gets nothing; so does the right one after forget.
    for path in (url.path.replace(url.path.split("/")[-1], "guessed.mjpg"), url.path):
        if path == url.path:
            forget(make_bus)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        conn.request("GET", path)
        assert conn.getresponse().status == 404
        conn.close()


def test_forget_zeroes_the_frame_and_photo_buffers_of_the_session(
    capture_ctx: ServiceContext, scene_dir: Path, make_bus: BusFactory
) -> None:
    """R6, R12: the session's buffers are overwritten, not just dropped."""
    cv2.imwrite(str(scene_dir / "face.png"), FACE)
    events = _events(make_bus)
    tester = make_bus("tester")
    tester.request("capture", "mode", ModeRequest(sid=SID, mode="photo"), ModeReply)
    events.wait_for(f"session/{SID}/photo", PhotoResult)
    service = _service(capture_ctx)
    with service.lock:
        assert service.session is not None
        photos = list(service.session.photo_buffers)
        frame = service.frame
        preview = service.preview
    assert photos and all(any(b) for b in photos)
    assert frame is not None and frame.any()

    reply = forget(make_bus)
    assert reply.ok and reply.erased and reply.sid == SID and reply.service == "capture"
    assert all(not any(b) for b in photos)
    assert not frame.any()
    assert not any(preview)
    # A forgotten session is unknown afterwards; forgetting it again is harmless.
    with pytest.raises(RequestRefused, match="no active capture session"):
        tester.request("capture", "capture", SessionRequest(type="capture", sid=SID), Ack)
    again = forget(make_bus)
    assert again.ok and again.erased == []


def test_a_missing_camera_is_an_error_state_and_the_service_keeps_answering(
    broker: object, tmp_path: Path, make_bus: BusFactory
) -> None:
    events = _events(make_bus)
    ctx = _start(tmp_path, "v4l2:/dev/video-not-here")
    try:
        state = events.wait_for("capture/evt/camera", CameraState)
        assert isinstance(state, CameraState)
        assert state.state == "unavailable" and "not connected" in state.reason
        tester = make_bus("tester")
        reply = tester.request("capture", "mode", ModeRequest(sid=SID, mode="qr"), ModeReply)
        assert reply.camera == "unavailable" and reply.camera_reason
        typed = tester.request(
            "capture", "validate-id", ValidateIdRequest(sid=SID, entry=TEST_ID), ApplicationIdResult
        )
        assert typed.accepted and typed.application_id == TEST_ID
    finally:
        stop_service(ctx)


def test_bad_requests_are_refused_naming_the_field(
    capture_ctx: ServiceContext, make_bus: BusFactory
) -> None:
    tester = make_bus("tester")
    with pytest.raises(RequestRefused) as refused:
        tester.request(
            "capture", "mode", ModeRequest.model_construct(sid="x", mode="qr"), ModeReply
        )
    assert refused.value.reply.fields == ["sid"]
    with pytest.raises(RequestRefused, match="not in photo mode"):
        tester.request("capture", "mode", ModeRequest(sid=SID, mode="qr"), ModeReply)
        tester.request("capture", "capture", SessionRequest(type="capture", sid=SID), Ack)
    assert (
        tester.request("capture", "mode", ModeRequest(sid=SID, mode="idle"), ModeReply).mode
        == "idle"
    )


class CaptureThatOnlyDropsReferences(CaptureService):
    """The protection removed: forget lets go of the buffers without overwriting them."""

    def forget(self, sid: str) -> list[str]:
        with self.lock:
            held = self.session is not None and self.session.sid == sid
            self.session = None
            self.frame = None
            self.preview = bytearray()
        return ["photo buffers"] if held else []


def _bytes_left_after_forget(ctx: ServiceContext, make_bus: BusFactory) -> int:
    events = _events(make_bus)
    tester = make_bus("tester")
    tester.request("capture", "mode", ModeRequest(sid=SID, mode="photo"), ModeReply)
    events.wait_for(f"session/{SID}/photo", PhotoResult)
    service = _service(ctx)
    with service.lock:
        assert service.session is not None and service.frame is not None
        buffers = [*service.session.photo_buffers, service.preview]
        frame = service.frame
    forget(make_bus)
    return sum(np.count_nonzero(np.frombuffer(b, np.uint8)) for b in buffers) + int(
        np.count_nonzero(frame)
    )


def test_the_zeroing_check_catches_a_service_that_only_drops_references(
    broker: object, tmp_path: Path, scene_dir: Path, make_bus: BusFactory
) -> None:
    """The check above can fail: without overwriting, the photo bytes are still in memory."""
    cv2.imwrite(str(scene_dir / "face.png"), FACE)
    config = load_config(
        write_config(
            tmp_path,
            f"""
            [capture]
            source = "images:{scene_dir}"
            fps = 10
            auto_capture_frames = 2
            """,
        )
    )
    spec = ServiceSpec(
        name="capture",
        summary="capture without zeroing",
        setup=lambda c: install(c, CaptureThatOnlyDropsReferences),
    )
    ctx = start_service(spec, config)
    try:
        assert _bytes_left_after_forget(ctx, make_bus) > 100_000
    finally:
        stop_service(ctx)


def test_the_real_service_leaves_no_byte_after_forget(
    capture_ctx: ServiceContext, scene_dir: Path, make_bus: BusFactory
) -> None:
    cv2.imwrite(str(scene_dir / "face.png"), FACE)
    assert _bytes_left_after_forget(capture_ctx, make_bus) == 0


def test_the_camera_comes_back_when_it_reappears(
    broker: object, tmp_path: Path, make_bus: BusFactory
) -> None:
    """A missing camera is retried; when it appears the state goes back to ok."""
    events = _events(make_bus)
    later = tmp_path / "later"
    ctx = _start(tmp_path, f"images:{later}")
    try:
        state = events.wait_for("capture/evt/camera", CameraState)
        assert isinstance(state, CameraState) and state.state == "unavailable"
        later.mkdir()
        cv2.imwrite(str(later / "frame.png"), np.full((720, 1280, 3), 128, np.uint8))
        state = events.wait_for("capture/evt/camera", CameraState)
        assert isinstance(state, CameraState) and state.state == "ok"
    finally:
        stop_service(ctx)


def test_the_demo_camera_gives_the_all_zero_demo_id(
    broker: object, tmp_path: Path, make_bus: BusFactory
) -> None:
    """`fieldkit up` with no camera: the demo source's form reads end to end."""
    ctx = _start(tmp_path, "demo")
    try:
        events = _events(make_bus)
        tester = make_bus("tester")
        reply = tester.request("capture", "mode", ModeRequest(sid=SID, mode="qr"), ModeReply)
        assert reply.camera in ("ok", "starting")
        result = events.wait_for(f"session/{SID}/application-id", ApplicationIdResult)
        assert isinstance(result, ApplicationIdResult)
        assert result.accepted and result.application_id == DEMO_ID
    finally:
        stop_service(ctx)
