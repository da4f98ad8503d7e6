"""A real Chromium profile: a page's storage lands on disk; the session wipe leaves none. R6 R11"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from fieldkit.config import DeviceConfig
from fieldkit.wipe.markers import MarkerSearch, session_markers
from fieldkit.wipe.messages import SessionMarkers
from fieldkit.wipe.service import Wiper
from tests.support.browser import CHROMIUM, keep_in_the_browser
from tests.wipe_fixtures import APPLICATION_ID, SID, make_device

PAGE = f"""<html><body><form><input name="id" value="{APPLICATION_ID}"></form>
<script>
localStorage.setItem("draft", "{APPLICATION_ID}");
sessionStorage.setItem("draft", "{APPLICATION_ID}");
</script></body></html>"""

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed")


def session_in_the_browser(tmp_path: Path) -> tuple[DeviceConfig, Path, list[Path]]:
    config, root, _ = make_device(tmp_path)
    page = tmp_path / "page.html"  # outside the catalogue, like the kiosk's own templates
    page.write_text(PAGE)
    search = MarkerSearch(session_markers(APPLICATION_ID, [], None))
    stored = keep_in_the_browser(root / "profile", page, search)
    return config, root, stored


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
    config, root, stored = session_in_the_browser(tmp_path)
    assert all(path.is_relative_to(root / "profile") for path in stored)
    assert wipe(config) == []
    assert not any((root / "profile").iterdir())


def test_without_the_profile_eraser_the_scan_reports_the_browser_residue(tmp_path: Path) -> None:
    config, _, _ = session_in_the_browser(tmp_path)
    failures = wipe(config, without="browser-profile")
    assert len(failures) == 1 and failures[0].startswith("browser-profile: residue")


def browser_commands(profile: Path, url: str) -> tuple[list[str], list[str]]:
    """Stop and start commands for a headless Chromium on ``profile``, with the semantics of
    ``systemctl stop|start`` on the image's kiosk browser unit: stop returns once it is gone."""
    flag = f"--user-data-dir={profile}"
    pattern = f"[-]-user-data-dir={profile}"  # a pattern that does not match this script
    stop = [
        "sh", "-c",
        'pkill -f -- "$1" || exit 1; while pgrep -f -- "$1" >/dev/null; do sleep 0.1; done',
        "stop", pattern,
    ]  # fmt: skip
    start = [
        "sh", "-c",
        'setsid "$0" --headless=new --no-sandbox --disable-gpu "$1" "$2" >/dev/null 2>&1 &',
        str(CHROMIUM), flag, url,
    ]  # fmt: skip
    return stop, start


def browser_pids(profile: Path) -> set[int]:
    found = subprocess.run(
        ["pgrep", "-f", "--", f"--user-data-dir={profile}"], capture_output=True, text=True
    )
    return {int(pid) for pid in found.stdout.split()}


def test_the_running_browser_is_stopped_before_its_profile_goes_and_restarted_on_an_empty_one(
    tmp_path: Path,
) -> None:
    config, root, _ = make_device(tmp_path)
    profile = root / "profile"
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    stop, start = browser_commands(profile, "about:blank")
    _, start_on_page = browser_commands(profile, page.as_uri())
    search = MarkerSearch(session_markers(APPLICATION_ID, [], None))

    def holds_the_id() -> bool:
        return any(p.is_file() and search.search_bytes(p.read_bytes()) for p in profile.rglob("*"))

    # The kiosk browser runs the applicant's page and keeps what it typed.
    subprocess.run(start_on_page, check=True)
    deadline = time.monotonic() + 60
    while not holds_the_id() and time.monotonic() < deadline:
        time.sleep(0.5)
    before = browser_pids(profile)
    assert before and holds_the_id(), "the browser kept nothing: this test would prove nothing"
    wiper = Wiper(
        config.wipe.model_copy(update={"browser_stop": stop, "browser_start": start}), "tab-01"
    )
    try:
        record = wiper.wipe_session(SID, "op-01", SessionMarkers(sid=SID))
        (browser,) = [h for h in record.holders if h.service == "browser"]
        assert browser.ok and browser.erased, browser
        assert record.ok, record.failures
        # A new browser, on a profile that holds nothing of the session.
        deadline = time.monotonic() + 30
        while not browser_pids(profile) and time.monotonic() < deadline:
            time.sleep(0.2)
        after = browser_pids(profile)
        assert after and not after & before
        assert not holds_the_id()
    finally:
        wiper.close()
        subprocess.run(stop, check=False)


def test_a_browser_that_cannot_be_stopped_or_started_fails_the_record(tmp_path: Path) -> None:
    config, _, _ = make_device(tmp_path)
    for stop, start, problem in (
        (["false"], ["true"], "stop: exit 1"),
        (["true"], ["/nonexistent/browser"], "start: FileNotFoundError"),
    ):
        wiper = Wiper(
            config.wipe.model_copy(update={"browser_stop": stop, "browser_start": start}), "t"
        )
        try:
            record = wiper.wipe_session(SID, "op-01", SessionMarkers(sid=SID))
        finally:
            wiper.close()
        assert not record.ok
        assert f"holder browser could not forget ({problem})" in record.failures
