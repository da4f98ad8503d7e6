"""Erasure that holds in memory: after the wipes, no kit process and not the broker keeps any
applicant's ID or photo. R6 R12 R23 (issue 15, architecture §3-4)

The kit runs as `./dev.sh run` starts it (``tests/devkit.py``: `fieldkit up` on a copy of
``etc/dev-tablet.toml``: the supervisor, the local mosquitto, the kiosk under gunicorn, capture,
printing with its own cupsd, sync, wipe, antivirus). Staff run several applicant sessions in
Chromium, each with its own application ID (the form's QR in front of the camera) and its own
photo; each ends with the kiosk's wipe, whose record must pass. Then the writable memory of
every process of the kit (``/proc/PID/mem``; the printer stand-in ippeveprinter excepted: it is
the paper) is read for every session's ID (ASCII and UTF-16) and for slices of every photo
(raw and base64).

With the protection on (the runner's default: freed memory overwritten, see
``fieldkit.processes``) nothing is found. With it switched off (``[runner]
scrub_freed_memory = false``) the same scan finds the sessions in the processes' memory: the
check sees what it is there to see.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fieldkit.capture.synthetic import photographed_form
from fieldkit.wipe.catalogue import scan_process
from fieldkit.wipe.markers import Marker, MarkerSearch, literal
from fieldkit.wipe.record import EvidenceStore
from tests.capture_scenes import applicant_frame, qr_modules
from tests.devkit import OPERATOR, OPERATOR_PASSWORD, DevKit
from tests.test_hub_web_browser import browser  # noqa: F401 - the Playwright browser fixture
from tests.test_wipe_e2e import show_camera

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/mem").exists(), reason="needs /proc to read process memory"
)
TIMEOUT_MS = 60_000
# The printer stand-in is the paper the kit prints on, not part of the tablet.
NOT_THE_KIT = {"ippeveprinter"}


def new_application_id() -> str:
    """A random 23-digit ID with mixed digits (no run a scan could meet by chance)."""
    return "".join(secrets.choice("0123456789") for _ in range(23))


def photo_needles(jpeg: bytes) -> list[bytes]:
    """Slices of the photo's compressed data, raw and as the bus carries it (base64)."""
    start = jpeg.rfind(b"\xff\xda") + 16
    body = jpeg[start:-2]
    step = len(body) // 5
    raw = [body[step * i : step * i + 48] for i in range(1, 5)]
    encoded = base64.b64encode(jpeg)
    b64_step = (len(encoded) // 5) // 4 * 4
    return raw + [encoded[b64_step * i : b64_step * i + 64] for i in range(1, 5)]


class Staff:
    """The operator at the kiosk in Chromium."""

    def __init__(self, chromium: Any, base: str) -> None:
        self.base = base
        self.context = chromium.new_context(locale="ja-JP")
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.goto(f"{base}/login")
        self.log_in()

    def log_in(self) -> None:
        """On the login page: log in as the demo operator."""
        self.page.get_by_label("職員ID").fill(OPERATOR)
        self.page.get_by_label("パスワード").fill(OPERATOR_PASSWORD)
        self.page.get_by_role("button", name="ログイン").click()
        # Home, or the step of a session still open (a test that failed halfway left it).
        self.page.wait_for_url(lambda url: "/login" not in url, wait_until="commit")

    def wait_for(self, url: str) -> None:
        """Wait for the page; if it never comes, say what the kiosk shows instead."""
        try:
            self.page.wait_for_url(url, timeout=TIMEOUT_MS)
        except Exception as exc:
            text = self.page.inner_text("main") if self.page.query_selector("main") else ""
            raise AssertionError(f"{url} not reached; at {self.page.url}: {text}") from exc

    def session(self, camera: Path, application_id: str, seed: int) -> bytes:
        """One applicant from the form to the printed receipts; returns the accepted photo."""
        self.begin(camera, application_id, seed)
        photo = self.take_photo(camera, seed)
        self.answer_to_review()
        self.submit()
        self.page.wait_for_url("**/done")
        self.finish()
        return photo

    def begin(self, camera: Path, application_id: str, seed: int) -> None:
        """Start a session and show the form's QR: the kiosk moves on to the terms."""
        show_form(camera, application_id, seed)
        self.press_start()
        self.wait_for("**/terms")  # the QR was read

    def press_start(self) -> None:
        self.page.get_by_label("申請サポート").check()
        self.page.get_by_role("button", name="始める").click()

    def take_photo(self, camera: Path, seed: int) -> bytes:
        """The applicant sits down and agrees; the photo is taken and accepted."""
        # Each session its own photo (the scene's noise differs).
        show_camera(camera, applicant_face(seed))
        self.page.get_by_role("button", name="同意する").click()
        self.page.wait_for_url("**/photo", wait_until="commit")
        return self.accept_photo()

    def accept_photo(self) -> bytes:
        self.page.get_by_role("button", name="この写真を使う").wait_for()
        photo = self.page.request.get(f"{self.base}/photo/candidate.jpg").body()
        self.page.get_by_role("button", name="この写真を使う").click()
        self.page.wait_for_url("**/options")
        return photo

    def answer_to_review(self) -> None:
        self.page.get_by_role("group", name="電子証明書を希望する").get_by_label("はい").check()
        self.page.get_by_role("group", name="点字表記を希望する").get_by_label("いいえ").check()
        self.page.get_by_role("button", name="次へ").click()
        self.page.wait_for_url("**/statistics")
        self.page.get_by_label("お住まいの市町村").select_option("202029")
        self.page.get_by_role("button", name="次へ").click()
        self.page.wait_for_url("**/review")

    def submit(self) -> None:
        self.page.get_by_role("button", name="この内容で申請する").click()

    def finish(self) -> None:
        """From the last page to the next applicant: the session ends and is wiped."""
        self.page.get_by_role("button", name="ありがとうございました。").click()
        self.page.wait_for_url("**/ended")
        self.next_applicant()

    def next_applicant(self) -> None:
        self.page.get_by_role("button", name="次の方へ").click()
        self.page.wait_for_url(f"{self.base}/")
        # Nothing of the applicant stays in the page either.
        self.page.goto("about:blank")
        self.page.goto(f"{self.base}/")


def show_form(camera: Path, application_id: str, seed: int) -> None:
    """The applicant's form, its QR holding the online application link with the ID."""
    url = f"https://app.net.kojinbango-card.go.jp/apply?id={application_id}"
    show_camera(camera, photographed_form(qr_modules(url.encode()), "clean", rng(seed)))


def applicant_face(seed: int) -> np.ndarray:  # type: ignore[type-arg]
    face = applicant_frame().astype(np.int16)
    face += rng(seed).integers(-6, 7, size=face.shape, dtype=np.int16)
    return np.clip(face, 0, 255).astype(np.uint8)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def dev_kit(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DevKit]:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    # A checkout's folder: cupsd's filters (user lp) must reach the printer's spool in it,
    # which pytest's private tmp_path does not allow.
    base = Path(tempfile.mkdtemp(prefix="fieldkit-devkit-"))
    base.chmod(0o755)
    kit = DevKit(base / "kit", scenes / "camera.png", runner={"scrub_freed_memory": request.param})
    show_camera(kit.camera, np.full((720, 1280, 3), 200, dtype=np.uint8))
    try:
        kit.start()
        urllib.request.urlopen(f"{kit.base}/login", timeout=30).close()  # noqa: S310 - loopback
        yield kit
    finally:
        kit.stop()
        if not os.environ.get("FIELDKIT_KEEP_DEVKIT"):
            shutil.rmtree(base, ignore_errors=True)


def scan_kit(kit: DevKit, markers: list[Marker]) -> dict[str, int]:
    """Hits per process ("comm pid") in the writable memory of every process of the kit."""
    search = MarkerSearch(markers)
    found: Counter[str] = Counter()
    scanned = 0
    for pid, name in kit.processes().items():
        if name in NOT_THE_KIT:
            continue
        try:
            hits, _, _ = scan_process(pid, search, 1 << 20)
        except OSError:
            continue  # exited meanwhile
        scanned += 1
        for hit in hits:
            found[f"{name} {pid} {hit.kind}"] += 1
    assert scanned >= 8, "the kit's processes were not found"
    return dict(found)


@pytest.mark.parametrize(
    ("dev_kit", "sessions"),
    [pytest.param(True, 3, id="protection-on"), pytest.param(False, 1, id="protection-off")],
    indirect=["dev_kit"],
)
def test_no_process_of_the_kit_keeps_an_applicant_after_the_wipes(
    dev_kit: DevKit,
    sessions: int,
    browser: Any,  # noqa: F811
) -> None:
    staff = Staff(browser, dev_kit.base)
    markers: list[Marker] = []
    for n in range(sessions):
        application_id = new_application_id()
        photo = staff.session(dev_kit.camera, application_id, seed=n + 1)
        markers += [
            literal(f"session-{n}-id", application_id.encode("ascii")),
            literal(f"session-{n}-id-utf16", application_id.encode("utf-16-le")),
            *(literal(f"session-{n}-photo", needle) for needle in photo_needles(photo)),
        ]
        del application_id, photo
    staff.context.close()
    # Every session's wipe passed (the record is the kit's own verdict).
    store = EvidenceStore(dev_kit.root / "var" / "wipe" / "evidence.sqlite")
    try:
        records = [r for _, r in store.records() if r.kind == "session"]
    finally:
        store.close()
    assert len(records) == sessions
    found = scan_kit(dev_kit, markers)
    if dev_kit.scrub:
        assert all(r.ok for r in records), [r.failures for r in records]
        assert found == {}
    else:
        # Switched off, the same scan finds the applicants in the kit's memory.
        assert found, "the scan found nothing with the protection off: it proves nothing"
