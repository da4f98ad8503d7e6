"""A whole applicant session on a real kit, then its wipe: nothing of it is left. R6 R11 R12

The kiosk runs the session with the real services on the real broker (``start_kiosk``): the
capture service reads the form's QR and auto-captures the photo, the printing service prints
the receipts and the photo sheet through a real cupsd, sync seals the packet, the antivirus
gate lets the session start, and the wipe service erases the session when the kiosk ends it.
Headless Chromium stores the application ID in the kiosk profile, the way a page of the
online application would (the kiosk's own pages are Flask's test client here).

Two endings, each a real way a session's data is still on the tablet when it ends:

- ``paper-out``: the printer runs out of paper during printing, and the operator ends the
  session. The receipts and the photo sheet are then still in cupsd's spool (a job waiting
  for paper keeps its document file there), the way a real tablet holds them after a paper
  jam or an empty tray. No cupsd setting is bent for this: the kit's cupsd keeps neither
  job files nor history (R12). It runs twice: on the kit's cupsd, and on one with cupsd's
  own defaults (job files and history kept), where cupsd removes nothing by itself when a
  job is canceled, so the print desk's purge and the wipe's spool eraser are what must
  (with both switched off, that run fails with the documents left in the spool).
- ``online-hand-off``: the session completes, and the online JPEG waits in the kiosk's
  session folder for the browser to upload it. Printing finished, so cupsd's spool is
  already empty (the print desk purges each job when it ends).

Before the wipe, a scan with the session's own markers sees it in those places; after the
kiosk's wipe (handshake: every holder answers ``forgotten``; print jobs purged, session
folder and profile erased, then the scan) the evidence record is ok, every holder answered
ok, no location holds the session's markers, and the daily scan finds no applicant data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fieldkit.capture.synthetic import photographed_form
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.flow import Step
from fieldkit.kiosk.handoff import PHOTO_NAME
from fieldkit.printing.localprinter import PROJECT_POLICY, SpoolPolicy
from fieldkit.wipe.fragments import photo_fragments
from fieldkit.wipe.markers import MarkerSearch, session_markers
from fieldkit.wipe.record import EvidenceStore
from fieldkit.wipe.service import EVIDENCE_FILE, Wiper
from tests.capture_scenes import TEST_ID, applicant_frame, qr_modules
from tests.cups import LocalPrinter, wait_for_received
from tests.hubkit import wait_for
from tests.kiosk_kit import KioskFactory, wait_live
from tests.support.browser import CHROMIUM, keep_in_the_browser
from tests.support.counter import show_camera
from tests.support.kiosk import login, post

# cupsd's own defaults keep job files and history; then only the print desk's purge and the
# wipe's spool eraser remove a canceled job's document (the kit's cupsd removes it itself).
CUPS_DEFAULT = SpoolPolicy(preserve_job_files=True, preserve_job_history=True)
ONLINE_URL = f"https://app.net.kojinbango-card.go.jp/apply?id={TEST_ID}"  # an allowed host


def spooled_documents(printer: LocalPrinter) -> list[Path]:
    return sorted(printer.spool_dir.glob("d*"))


def locations_with(wiper: Wiper, search: MarkerSearch) -> set[str]:
    return {
        location.name
        for location in wiper.catalogue.locations
        if wiper.catalogue.scan(location, search).findings
    }


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")
@pytest.mark.parametrize(
    ("ending", "local_printer", "holding"),
    [
        ("paper-out", PROJECT_POLICY, {"cups-spool", "browser-profile"}),
        ("paper-out", CUPS_DEFAULT, {"cups-spool", "browser-profile"}),
        ("online-hand-off", PROJECT_POLICY, {"session-tmpfs", "browser-profile"}),
    ],
    ids=["paper-out", "paper-out-cupsd-keeps-files", "online-hand-off"],
    indirect=["local_printer"],
)
def test_a_real_session_leaves_no_residue_after_its_wipe(
    start_kiosk: KioskFactory,
    local_printer: LocalPrinter,
    tmp_path: Path,
    ending: str,
    holding: set[str],
) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    camera = scenes / "camera.png"
    form = photographed_form(qr_modules(ONLINE_URL.encode()), "clean", np.random.default_rng(4))
    show_camera(camera, form)
    app = start_kiosk(
        capture=f'\n[capture]\nsource = "images:{scenes}"\nfps = 10\nauto_capture_frames = 2\n',
        online_handoff=True,
    )
    config = kiosk(app).config
    root = tmp_path / "dev"
    try:
        with app.test_client() as client:
            login(client)
            post(client, "/", {"mode": "support"})
            client.get("/scan")
            wait_live(client, "live['step'] == 'terms'")  # the form's QR was read
            session = kiosk(app).counter.current
            assert session is not None and session.application_id == TEST_ID
            post(client, "/terms", {"answer": "agree"})
            show_camera(camera, applicant_frame())  # the applicant sits down
            client.get("/photo")
            wait_live(client, "live['candidate']")
            post(client, "/photo/accept", {}, page="/photo")
            assert session.photo is not None and session.online_photo is not None
            # What the scan looks for: the ID, slices of both JPEGs and the session's canary
            # (which the printed documents carry in their metadata).
            photos = [bytes(session.photo), bytes(session.online_photo)]
            fragments = [f for p in photos for f in photo_fragments(p)]
            search = MarkerSearch(session_markers(TEST_ID, fragments, session.canary))
            post(client, "/options", {"e_certificate": "yes", "braille": "no"})
            post(
                client,
                "/statistics",
                {"municipality": "202029", "sex": "male", "age_band": "70-79"},
            )
            if ending == "paper-out":
                local_printer.paper_out(True)
            post(client, "/submit", {}, page="/review")
            if ending == "paper-out":
                # Receipts and photo sheet wait in cupsd's spool; the session waits to print.
                wait_for(
                    lambda: len(spooled_documents(local_printer)) >= 2,
                    what="both documents in the spool",
                )
                assert session.step is Step.PRINT
                # Each document, the receipt too, is visible to the scan (by its canary).
                for document in spooled_documents(local_printer):
                    assert search.search_bytes(document.read_bytes()), document.name
            else:
                wait_live(client, "live['step'] == 'done'")
                wait_for_received(local_printer, 2)
                client.get("/done")  # the hand-off: the online JPEG waits in the session folder
                assert (root / "run-session" / session.sid / PHOTO_NAME).is_file()

            page = tmp_path / "page.html"  # outside the catalogue, like a page of the web
            page.write_text(
                f"<input value='{TEST_ID}'><script>localStorage.setItem('id', '{TEST_ID}')</script>"
            )
            keep_in_the_browser(root / "profile", page, search)
            page.unlink()

            # Before the wipe the scan sees the session where it is.
            before = Wiper(config.wipe.model_copy(update={"state_dir": tmp_path / "x"}), "t")
            seen = locations_with(before, search)
            before.close()
            assert seen == holding

            if ending == "paper-out":
                post(client, "/abandon", {}, page="/print")
                post(client, "/next", {}, page="/ended")
            else:
                # One tap ends the session and has it wiped (issue 21 item 6).
                post(client, "/finish", {}, page="/done")
            assert kiosk(app).audit_log[-1].action == "wiped"
    finally:
        local_printer.paper_out(False)

    store = EvidenceStore(config.wipe.state_dir / EVIDENCE_FILE)
    ((_, record),) = store.records()
    store.close()
    assert record.ok, record.failures
    assert {h.service for h in record.holders} == {"capture", "kiosk", "printing"}
    assert all(h.answered and h.ok for h in record.holders), record.holders
    assert spooled_documents(local_printer) == []
    # Nothing of the session anywhere in the catalogue, by its own markers ...
    wiper = Wiper(config.wipe, "tab-01")
    try:
        assert locations_with(wiper, search) == set()
        # ... nor any applicant data at all.
        daily = wiper.scan_catalogue()
        assert daily.ok, daily.failures
    finally:
        wiper.close()
