"""Debian's Chromium in the tests: where it is, a Playwright browser on it, and a headless run
that leaves a page's storage in a profile folder."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fieldkit.wipe.markers import MarkerSearch

# The launcher on PATH, and the binary it runs (a wrapper that must exec the browser itself,
# as the policy test's mount-namespace launcher does, names the binary).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")


@contextmanager
def playwright_chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium (``Any``: Playwright is a test dependency)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    """A Playwright browser on Debian's Chromium (Playwright: the hub web and kiosk tests)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is not installed; run ./dev.sh")
    with playwright_chromium() as chromium:
        yield chromium


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


def keep_in_the_browser(profile: Path, page: Path, search: MarkerSearch) -> list[Path]:
    """Open the page in Chromium on the kiosk profile until the profile holds the ID, and
    return the files that hold it.

    Headless Chromium sometimes exits before its Local Storage reaches the disk; the wipe
    is only tested once the ID is really in the profile. Chromium may keep it only as
    UTF-16 (session restore, or Local Storage for a UTF-16 value), so "holds" means what the
    wipe's own scan finds, in any of its encodings, not only the ASCII bytes.
    """
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        browse(profile, page)
        stored = [
            path
            for path in profile.rglob("*")
            if path.is_file() and search.search_bytes(path.read_bytes())
        ]
        if stored:
            return stored
    raise AssertionError("Chromium kept nothing of the page in its profile")
