"""A whole applicant session on the real broker, then its wipe: nothing of it is left. R6 R12

The real capture service takes the photo, the real kiosk app runs the session and ends it,
headless Chromium keeps the ID in the kiosk profile, a copy of the photo waits in the session
folder and the print spool; the wipe handshake, purge and scan leave no residue, and the
daily scan of the whole catalogue afterwards finds no applicant data at all.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import cv2
import pytest

from fieldkit.capture.service import CaptureService, ModeReply, ModeRequest, PhotoResult
from fieldkit.config import load_config
from fieldkit.kiosk.app import attach_service, detach_service, kiosk
from fieldkit.kiosk.service import SERVICE as KIOSK
from fieldkit.registry import load_specs
from fieldkit.runner import start_service, stop_service
from fieldkit.wipe.markers import MarkerSearch, photo_fragments, session_markers
from fieldkit.wipe.record import EvidenceStore
from fieldkit.wipe.service import EVIDENCE_FILE, Wiper
from tests.antivirus_fixtures import fresh_definitions
from tests.capture_scenes import astronaut_frame
from tests.conftest import BusFactory, write_config
from tests.test_capture_service import Events
from tests.test_kiosk_app import APPLICATION_ID, PASSWORD, login, make_app, post
from tests.test_wipe_browser import CHROMIUM, browse
from tests.test_wipe_service import start_wipe
from tests.wipe_fixtures import make_device, wipe_body


@pytest.fixture
def operator_hash() -> str:
    from fieldkit.kiosk.operators import hash_password

    return hash_password(PASSWORD)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_a_real_session_leaves_no_residue_after_its_wipe(
    broker: object, tmp_path: Path, make_bus: BusFactory, operator_hash: str
) -> None:
    _, root, tag = make_device(tmp_path)
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    cv2.imwrite(str(scenes / "face.png"), astronaut_frame(head_mm=33))
    config = load_config(
        write_config(
            tmp_path,
            wipe_body(root, tag)
            + f'\n[capture]\nsource = "images:{scenes}"\nfps = 10\nauto_capture_frames = 2\n'
            # The kiosk starts no session without the antivirus gate.
            + fresh_definitions(tmp_path),
        )
    )
    capture_spec, antivirus_spec = load_specs(["capture", "antivirus"])
    capture = start_service(capture_spec, config)
    antivirus = start_service(antivirus_spec, config)
    wipe_ctx, _ = start_wipe(config, ["capture", "kiosk"])
    app = make_app(config, operator_hash)
    attach_service(app, start_service(KIOSK, config))
    events = Events()
    make_bus("audit").observe("capture/evt/#", events)
    try:
        with app.test_client() as client:
            login(client)
            post(client, "/", {"mode": "support"})
            post(client, "/scan", {"application_id": APPLICATION_ID})
            post(client, "/terms", {"answer": "agree"})
            session = kiosk(app).counter.current
            assert session is not None
            sid = session.sid
            # The kiosk asks capture for the photo (the glue is the kiosk branch's; played here).
            tester = make_bus("tester")
            tester.request("capture", "mode", ModeRequest(sid=sid, mode="photo"), ModeReply)
            shot = events.wait_for(f"session/{sid}/photo", PhotoResult)
            assert isinstance(shot, PhotoResult)
            jpeg = base64.b64decode(shot.print_jpeg_b64)
            kiosk(app).counter.set_photo(jpeg, jpeg)
            # Where a session's data lands on the tablet while it runs.
            (root / "run-session" / sid).mkdir()
            (root / "run-session" / sid / "photo.jpg").write_bytes(jpeg)
            (root / "spool-cups" / "d00009-001").write_bytes(b"%PDF-1.7 " + jpeg)
            page = tmp_path / "page.html"
            page.write_text(
                f"<input value='{APPLICATION_ID}'><script>"
                f"localStorage.setItem('id', '{APPLICATION_ID}')</script>"
            )
            browse(root / "profile", page)
            page.unlink()
            # Before the wipe the scan sees the session in each of those places.
            before = Wiper(config.wipe.model_copy(update={"state_dir": tmp_path / "x"}), "t")
            search = MarkerSearch(session_markers(APPLICATION_ID, photo_fragments(jpeg), None))
            seen = {
                loc.name
                for loc in before.catalogue.locations
                if before.catalogue.scan(loc, search).findings
            }
            before.close()
            assert seen == {"session-tmpfs", "cups-spool", "browser-profile"}
            post(client, "/abandon", {}, page="/options")
            post(client, "/next", {}, page="/ended")
            assert kiosk(app).audit_log[-1].action == "wiped"
        service = capture._on_stop[-1].__self__  # type: ignore[attr-defined]
        assert isinstance(service, CaptureService) and service.session is None
    finally:
        detach_service(app)
        stop_service(wipe_ctx)
        stop_service(capture)
        stop_service(antivirus)

    store = EvidenceStore(config.wipe.state_dir / EVIDENCE_FILE)
    ((_, record),) = store.records()
    store.close()
    assert record.ok, record.failures
    assert {h.service for h in record.holders if h.answered and h.ok} == {"capture", "kiosk"}
    # Nothing of the session anywhere in the catalogue, by its own markers ...
    search = MarkerSearch(session_markers(APPLICATION_ID, photo_fragments(jpeg), None))
    wiper = Wiper(config.wipe, "tab-01")
    for location in wiper.catalogue.locations:
        assert not wiper.catalogue.scan(location, search).findings, location.name
    # ... nor any applicant data at all.
    daily = wiper.scan_catalogue()
    wiper.close()
    assert daily.ok, daily.failures
    shutil.rmtree(root)
