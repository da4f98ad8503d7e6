"""A real Chromium profile: a page's storage lands on disk; the session wipe leaves none. R6 R11"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from fieldkit.config import DeviceConfig
from fieldkit.wipe.markers import MarkerSearch, session_markers
from fieldkit.wipe.messages import SessionMarkers
from fieldkit.wipe.service import Wiper
from tests.wipe_fixtures import APPLICATION_ID, SID, make_device

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE = f"""<html><body><form><input name="id" value="{APPLICATION_ID}"></form>
<script>
localStorage.setItem("draft", "{APPLICATION_ID}");
sessionStorage.setItem("draft", "{APPLICATION_ID}");
</script></body></html>"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def browse(profile: Path, page: Path) -> None:
    """Headless Chromium on the kiosk's profile folder opens a page that stores the ID."""
    subprocess.run(
        [
            str(CHROMIUM), "--headless=new", "--no-sandbox", "--disable-gpu",
            f"--user-data-dir={profile}", "--virtual-time-budget=2000", "--dump-dom",
            page.as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def keep_in_the_browser(profile: Path, page: Path, search: MarkerSearch) -> None:
    """Open the page in Chromium on the kiosk profile until the profile holds the ID.

    Headless Chromium sometimes exits before its Local Storage reaches the disk; the wipe
    is only tested once the ID is really in the profile.
    """
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        browse(profile, page)
        for path in profile.rglob("*"):
            if path.is_file() and search.search_bytes(path.read_bytes()):
                return
    raise AssertionError("Chromium kept nothing of the page in its profile")


def session_in_the_browser(tmp_path: Path) -> tuple[DeviceConfig, Path]:
    config, root, _ = make_device(tmp_path)
    page = tmp_path / "page.html"  # outside the catalogue, like the kiosk's own templates
    page.write_text(PAGE)
    search = MarkerSearch(session_markers(APPLICATION_ID, [], None))
    keep_in_the_browser(root / "profile", page, search)
    return config, root


def wipe(config: DeviceConfig, without: str | None = None) -> list[str]:
    wiper = Wiper(config.wipe, "tab-01")
    if without:
        wiper.catalogue = wiper.catalogue.without(without)
    markers = SessionMarkers(sid=SID, application_id=APPLICATION_ID)
    try:
        return wiper.wipe_session(SID, "op-01", markers).failures
    finally:
        wiper.close()


def test_chromium_writes_the_id_into_its_profile_and_the_wipe_removes_it(tmp_path: Path) -> None:
    config, root = session_in_the_browser(tmp_path)
    stored = [
        p
        for p in (root / "profile").rglob("*")
        if p.is_file() and APPLICATION_ID.encode() in p.read_bytes()
    ]
    assert stored, "the browser kept nothing: this test would prove nothing"
    assert wipe(config) == []
    assert not any((root / "profile").iterdir())


def test_without_the_profile_eraser_the_scan_reports_the_browser_residue(tmp_path: Path) -> None:
    config, _ = session_in_the_browser(tmp_path)
    failures = wipe(config, without="browser-profile")
    assert len(failures) == 1 and failures[0].startswith("browser-profile: residue")
