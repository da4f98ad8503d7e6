"""The kiosk's timeouts run on the server, with nobody touching the screen (issue 17 item 7).
R6 R13 R14

The kit is real (``start_kiosk``: the broker, capture on an image-folder camera, printing on a
cupsd, sync, antivirus and the wipe service). A session holds a canary application ID and photo;
then nothing is touched: no request at all, or only the camera page's ``/live`` poll. After the
applicant timeout the idle timer abandons the session and has it wiped the way "next applicant"
does: the wipe's record passes, every holder forgot the session, the session folder and the
browser profile are emptied, and the wipe's scan finds none of the session's markers. With the
timer taken out, the same check fails: nothing wipes the session while nobody touches it.

The operator's idle logout runs on the same timer; the poll does not count as activity.

The last test runs the kit as `./dev.sh run` does (``running_kit``: `fieldkit up`, the kiosk
under gunicorn, each service its own process) with staff in Chromium, who walk away from the
camera page: the timer's wipe passes, the screen follows by itself (the ready page, then the
login page), and no process of the kit keeps the applicant's ID or photo in its memory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

import fieldkit.kiosk.app as kiosk_app
import fieldkit.kiosk.auth as kiosk_auth
from fieldkit.kiosk.app import kiosk, kiosk_audit_path
from fieldkit.kiosk.flow import ApplicantSession, Step
from fieldkit.wipe.fragments import photo_fragments
from fieldkit.wipe.markers import MarkerSearch, session_markers
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from fieldkit.wipe.service import EVIDENCE_FILE, Wiper
from tests.kiosk_kit import KioskFactory
from tests.support.counter import Staff, applicant_face, new_application_id, show_camera
from tests.support.kiosk import login, post
from tests.support.kit_memory import applicant_markers, nobody, running_kit, scan_kit
from tests.support.waiting import wait_for

# The idle limit of these tests (minutes: 3 s), and how long the wipe may take after it (s).
APPLICANT_IDLE_MINUTES = 0.05
WIPE_WITHIN = 25.0


def session_records(config_state: Path) -> list[ErasureRecord]:
    store = EvidenceStore(config_state / EVIDENCE_FILE)
    try:
        return [record for _, record in store.records() if record.kind == "session"]
    finally:
        store.close()


def canary_jpegs(seed: int) -> tuple[bytes, bytes]:
    """The applicant's photo as capture hands it over: the print master and the online JPEG."""
    face = applicant_face(seed)
    ok, master = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 95])
    ok2, online = cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok and ok2
    return master.tobytes(), online.tobytes()


def kiosk_with_a_camera(start_kiosk: KioskFactory, tmp_path: Path, **settings: object) -> Flask:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    # Nobody in front of the camera: no QR to read, no face to take.
    show_camera(scenes / "camera.png", np.full((720, 1280, 3), 200, dtype=np.uint8))
    capture = f'\n[capture]\nsource = "images:{scenes}"\nfps = 10\n'
    return start_kiosk(capture=capture, idle_check_seconds=0.2, **settings)


def open_a_canary_session(
    app: Flask, client: FlaskClient, application_id: str
) -> tuple[ApplicantSession, MarkerSearch]:
    """Up to the photo step, with the ID typed and a photo accepted; the page shows the camera."""
    login(client)
    post(client, "/", {"mode": "support"})
    post(client, "/scan", {"application_id": application_id})
    post(client, "/terms", {"answer": "agree"})
    master, online = canary_jpegs(7)
    kiosk(app).counter.set_photo(master, online)  # as the capture service hands it over
    # Back to the camera page: the photo stays in the session, the page polls /live.
    post(client, "/back/photo", {}, page="/options")
    session = kiosk(app).counter.current
    assert session is not None and session.step is Step.PHOTO
    assert session.application_id == application_id and session.photo is not None
    fragments = [f for jpeg in (master, online) for f in photo_fragments(jpeg)]
    return session, MarkerSearch(session_markers(application_id, fragments, session.canary))


def locations_with(app: Flask, tmp_path: Path, search: MarkerSearch) -> set[str]:
    config = kiosk(app).config
    wiper = Wiper(config.wipe.model_copy(update={"state_dir": tmp_path / "scan-state"}), "t")
    try:
        return {
            location.name
            for location in wiper.catalogue.locations
            if wiper.catalogue.scan(location, search).findings
        }
    finally:
        wiper.close()


def assert_wiped_by_the_timer(
    app: Flask, tmp_path: Path, session: ApplicantSession, photo: bytearray, search: MarkerSearch
) -> None:
    """The session's wipe record passed, and nothing of the session is left anywhere."""
    config = kiosk(app).config
    records = wait_for(
        lambda: session_records(config.wipe.state_dir),
        WIPE_WITHIN,
        "the timer's wipe record",
        poll=0.2,
    )
    assert isinstance(records, list)
    (record,) = records
    assert record.ok, record.failures
    assert record.sid == session.sid and record.operator == "op-01"
    assert {h.service for h in record.holders} == {"capture", "kiosk", "printing"}
    assert all(h.answered and h.ok for h in record.holders), record.holders
    state = kiosk(app)
    wait_for(lambda: state.unproven is None, 10, "the kiosk to hear the wipe passed")
    assert state.counter.current is None
    assert session.application_id is None and session.photo is None
    assert photo == bytes(len(photo)), "the photo's buffer was not zeroed"
    assert state.camera is not None and state.camera.live is None
    assert locations_with(app, tmp_path, search) == set()
    actions = [(e.sid, e.action) for e in state.audit_log]
    ended = actions.index((session.sid, "abandon:idle"))
    assert (session.sid, "closed") in actions[ended:] and (session.sid, "wiped") in actions[ended:]


@pytest.mark.parametrize(
    ("timer", "touch"),
    [("on", "nothing"), ("on", "poll"), ("off", "nothing")],
    ids=["nobody-touches", "only-the-preview-polls", "timer-taken-out"],
)
def test_the_idle_applicants_data_is_wiped_by_the_timer_with_nobody_touching_the_screen(
    start_kiosk: KioskFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    timer: str,
    touch: str,
) -> None:
    if timer == "off":
        monkeypatch.setattr(kiosk_app, "watch_idle", lambda state, stopping: None)
    app = kiosk_with_a_camera(start_kiosk, tmp_path, applicant_idle_minutes=APPLICANT_IDLE_MINUTES)
    # A copy the browser left in its profile: the wipe empties the profile.
    application_id = new_application_id()
    leftover = tmp_path / "dev" / "profile" / "form-autosave.txt"
    with app.test_client() as client:
        session, search = open_a_canary_session(app, client, application_id)
        leftover.write_text(f"id={application_id}")
        photo = session.photo
        assert photo is not None
        assert locations_with(app, tmp_path, search) == {"browser-profile"}
        if touch == "poll":
            # The camera page keeps asking /live; the poll is all that reaches the kiosk.
            deadline = time.monotonic() + APPLICANT_IDLE_MINUTES * 60 + WIPE_WITHIN
            while kiosk(app).counter.current is not None and time.monotonic() < deadline:
                assert client.get("/live").status_code == 200
                time.sleep(0.3)
        if timer == "off":
            with pytest.raises(AssertionError, match="the timer's wipe record"):
                assert_wiped_by_the_timer(app, tmp_path, session, photo, search)
            assert kiosk(app).counter.current is session, "something else ended the session"
            assert session.application_id == application_id
            return
        assert_wiped_by_the_timer(app, tmp_path, session, photo, search)
        assert not leftover.exists()
        # The operator is still logged in; the ready page says what happened, once.
        page = client.get("/").get_data(as_text=True)
        assert "前の方の申請を中止しました" in page
        assert "前の方の申請を中止しました" not in client.get("/").get_data(as_text=True)
    assert application_id not in kiosk_audit_path(kiosk(app).config).read_text()


@pytest.mark.parametrize("touch", ["nothing", "poll", "poll-counted-as-activity"])
def test_the_idle_operator_is_logged_out_by_the_timer_and_the_poll_does_not_keep_them(
    start_kiosk: KioskFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, touch: str
) -> None:
    """The operator walks away from the camera page; the login ends on the server (its cookie
    is refused afterwards) and the open session is wiped with it; both are audited. Were the
    poll counted as activity (the defect of issue 17), the open camera page would keep the
    login alive: that run shows the check catches it."""
    if touch == "poll-counted-as-activity":
        monkeypatch.setattr(kiosk_auth, "POLLS", frozenset({"static"}))
    app = kiosk_with_a_camera(start_kiosk, tmp_path, operator_idle_minutes=APPLICANT_IDLE_MINUTES)
    state = kiosk(app)
    with app.test_client() as client:
        session, search = open_a_canary_session(app, client, new_application_id())
        # The logout comes a few tenths of a second after the idle limit (the timer's period).
        deadline = time.monotonic() + APPLICANT_IDLE_MINUTES * 60 + 8
        while state.seat.operator is not None and time.monotonic() < deadline:
            if touch != "nothing":
                client.get("/live")
            time.sleep(0.3)
        if touch == "poll-counted-as-activity":
            assert state.seat.operator == "op-01" and state.counter.current is session
            return
        assert state.seat.operator is None, "the operator was not logged out"
        wait_for(lambda: session_records(state.config.wipe.state_dir), WIPE_WITHIN, poll=0.2)
        (record,) = session_records(state.config.wipe.state_dir)
        assert record.ok and record.sid == session.sid
        actions = [(e.sid, e.action) for e in state.audit_log]
        assert ("", "logout:idle") in actions
        assert (session.sid, "abandon:operator-idle") in actions
        assert locations_with(app, tmp_path, search) == set()
        # The old cookie is worth nothing now; the login page says why it ended.
        response = client.get("/live")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
        assert "ログアウトしました" in client.get("/login").get_data(as_text=True)


@pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)
def test_on_the_kit_under_gunicorn_the_timer_wipes_the_applicant_and_logs_the_operator_out(
    tmp_path: Path, browser: Any
) -> None:
    settings = {
        "kiosk": {
            "applicant_idle_minutes": 0.25,
            # 45 s once ran out while the staff were still logging in and starting the session
            # (a clean clone's full suite): the operator's clock starts at the login.
            "operator_idle_minutes": 1.5,
            "idle_check_seconds": 1.0,
        }
    }
    with running_kit(tmp_path, settings=settings) as kit:
        staff = Staff(browser, kit.base)
        polls: list[str] = []
        staff.page.on("request", lambda r: polls.append(r.url) if "/live" in r.url else None)
        application_id = new_application_id()
        staff.begin(kit.camera, application_id, seed=3)  # the form's QR read: the ID
        photo = staff.take_photo(kit.camera, seed=3)  # the photo taken and accepted
        show_camera(kit.camera, nobody())  # the applicant leaves
        # Back to the camera page; nobody touches the screen from here on, the page polls.
        staff.page.get_by_role("button", name="戻る").click()
        staff.wait_for("**/photo")
        left = len(polls)
        records = wait_for(
            lambda: session_records(kit.root / "var" / "wipe"), 120, "the timer's wipe", poll=0.5
        )
        assert isinstance(records, list)
        (record,) = records
        assert record.ok, record.failures
        assert {h.service for h in record.holders} >= {"capture", "kiosk", "printing"}
        assert all(h.answered and h.ok for h in record.holders), record.holders
        # The screen follows by itself: the ready page says what happened ...
        staff.page.get_by_text("前の方の申請を中止しました").wait_for(timeout=30_000)
        # ... and once the operator's idle time is up, the login page says why.
        staff.page.wait_for_url(lambda url: "/login" in url, timeout=180_000)
        staff.page.get_by_text("ログアウトしました").wait_for()
        assert len(polls) > left + 5, "the page did not poll while nobody touched it"
        staff.context.close()
        trail = (kit.root / "var" / "run" / "kiosk-audit.jsonl").read_text()
        actions = [json.loads(line)["event"]["action"] for line in trail.splitlines()]
        ended = actions.index("abandon:idle")
        assert "wiped" in actions[ended:] and "logout:idle" in actions[ended:]
        assert application_id not in trail
        # No process of the kit keeps the applicant: not the kiosk under gunicorn, nor any
        # service it asked to forget.
        assert scan_kit(kit, applicant_markers("idle", application_id, photo)) == {}
