"""The kiosk in a real browser (Playwright driving Debian's Chromium) against the running kit:
real broker, capture on the demo camera, printing to cupsd + ippeveprinter, antivirus, sync to a
real hub broker and ingest. Every screen is checked with axe-core; screenshots of each screen are
saved to $FIELDKIT_SCREENSHOTS when set (docs/screenshots/ uses them). R1-R8 R11 R13 R17 R23"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from fieldkit.capture.sources import DEMO_ID
from fieldkit.hub.broker import HubBroker
from fieldkit.kiosk.app import kiosk
from tests.conftest import OPERATOR_PASSWORD
from tests.cups import LocalPrinter, wait_for_received
from tests.hubkit import IngestFactory, count_records, wait_for
from tests.kiosk_kit import KioskFactory

TIMEOUT_MS = 60_000


def serve(app: Flask) -> tuple[str, Callable[[], None]]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


class Counter:
    """One operator at the kiosk in a browser; every screen it reaches is checked."""

    def __init__(self, chromium: Any, base: str) -> None:
        self.base = base
        self.context = chromium.new_context(locale="ja-JP", viewport={"width": 1024, "height": 800})
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.console_errors: list[str] = []
        self.page.on(
            "console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None
        )
        self.screens: list[str] = []
        self.not_found: list[str] = []
        self.page.on(
            "response", lambda r: self.not_found.append(r.url) if r.status == 404 else None
        )

    def check(self, name: str) -> None:
        """axe-core finds nothing serious or critical; the screen is saved if asked for."""
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        serious = [
            f"{v['id']}: {v['help']}"
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        assert serious == [], f"{name}: {serious}"
        self.screens.append(name)
        folder = os.environ.get("FIELDKIT_SCREENSHOTS")
        if folder:
            self.page.screenshot(path=str(Path(folder) / f"kiosk-{name}.png"))

    def login(self) -> None:
        self.page.goto(f"{self.base}/login")
        self.check("login")
        self.page.get_by_label("職員ID").fill("op-01")
        self.page.get_by_label("パスワード").fill(OPERATOR_PASSWORD)
        self.page.get_by_role("button", name="ログイン").click()
        self.page.wait_for_url(f"{self.base}/")

    def start(self, mode: str) -> None:
        self.check("ready")
        label = "申請サポート" if mode == "support" else "出張申請受付"
        self.page.get_by_label(label).check()
        self.page.get_by_role("button", name="始める").click()
        # The demo camera may read the form's QR before the scan page has loaded: the kiosk
        # then goes straight on to the terms.
        self.page.wait_for_url(re.compile(r".*/(scan|terms)$"))

    def next_applicant(self, expect: str) -> None:
        self.page.wait_for_url("**/ended")
        assert expect in self.page.content()
        self.check("ended")
        self.page.get_by_role("button", name="次の方へ").click()
        self.page.wait_for_url(f"{self.base}/")


@pytest.fixture
def live_kiosk(
    start_kiosk: KioskFactory,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    database_url: str,
) -> Iterator[tuple[Flask, str, Any]]:
    ingest = make_ingest(database_url)
    app = start_kiosk(hub_port=hub_broker.port)
    base, stop = serve(app)
    yield app, base, ingest
    stop()


@pytest.mark.parametrize("mode", ["support", "municipal"])
def test_a_whole_session_in_the_browser(
    mode: str,
    live_kiosk: tuple[Flask, str, Any],
    browser: Any,
    local_printer: LocalPrinter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app, base, ingest = live_kiosk
    at = Counter(browser, base)
    at.login()
    at.start(mode)
    if at.page.url.endswith("/scan"):
        at.check("scan")
    # The demo camera shows the form's QR: the page moves on by itself (kiosk.js polls /live).
    at.page.wait_for_url("**/terms")
    at.check("terms")
    at.page.get_by_role("button", name="同意する").click()
    at.page.wait_for_url("**/photo")
    at.page.get_by_role("button", name="この写真を使う").wait_for()
    at.check("photo")
    at.page.get_by_role("button", name="この写真を使う").click()
    at.page.wait_for_url("**/options")
    at.check("options")
    at.page.get_by_role("group", name="電子証明書を希望する").get_by_label("はい").check()
    at.page.get_by_role("group", name="点字表記を希望する").get_by_label("いいえ").check()
    at.page.get_by_role("button", name="次へ").click()
    at.page.wait_for_url("**/statistics")
    at.check("statistics")
    at.page.get_by_label("お住まいの市町村").select_option("202029")
    at.page.get_by_role("group", name="性別").get_by_label("女性").check()
    at.page.get_by_role("group", name="年代").get_by_label("80代").check()
    at.page.get_by_role("button", name="次へ").click()
    at.page.wait_for_url("**/review")
    at.check("review")
    at.page.get_by_role("button", name="この内容で申請する").click()
    at.page.wait_for_url("**/done")
    at.check("done")
    # Receipts, and in support mode the photo sheet to paste onto the paper form (R3, R5).
    assert len(wait_for_received(local_printer, 2 if mode == "support" else 1)) >= 1
    at.page.get_by_role("button", name="ありがとうございました。").click()
    at.next_applicant("ありがとうございました")

    # Sync delivered to the real hub: the packet, the statistics, the audit events.
    wait_for(lambda: count_records(ingest) >= 3, 60, "records at the hub")
    # R6 R17 R23: afterwards no page or route answers with the ID, and no log line has it.
    for rule in app.url_map.iter_rules():
        if "GET" in (rule.methods or set()) and "<" not in rule.rule:
            body = at.page.request.get(f"{base}{rule.rule}").text()
            assert DEMO_ID not in body, rule.rule
    assert DEMO_ID not in caplog.text
    assert at.not_found == []
    assert at.console_errors == []  # no CSP violation, no script error
    assert kiosk(app).counter.current is None


def test_refusals_decline_and_abandon_in_the_browser(
    start_kiosk: KioskFactory,
    browser: Any,
) -> None:
    # No camera: the IDs are typed (the demo camera would read its QR first).
    app = start_kiosk(camera=False)
    base, stop = serve(app)
    try:
        at = Counter(browser, base)
        at.login()
        # A wrong ID typed by hand is refused with the reason, in Japanese.
        at.start("municipal")
        at.page.get_by_label("申請書IDを手で入力する(23けた)").fill("1234")
        at.page.get_by_role("button", name="次へ").click()
        assert "申請書IDは23桁" in at.page.content()
        at.check("scan-refused")
        # Abandoned with the button.
        at.page.get_by_role("button", name="中止する").click()
        at.next_applicant("申請を中止")
        # Declined consent ends the session (R2).
        at.start("support")
        at.page.get_by_label("申請書IDを手で入力する(23けた)").fill("9876 5432 1098 7654 3210 987")
        at.page.get_by_role("button", name="次へ").click()
        at.page.wait_for_url("**/terms")
        at.page.get_by_role("button", name="同意しない").click()
        at.next_applicant("同意いただけなかった")
        assert kiosk(app).counter.current is None
    finally:
        stop()


def test_an_idle_session_is_abandoned_and_wiped(
    start_kiosk: KioskFactory,
    browser: Any,
) -> None:
    app = start_kiosk(camera=False, applicant_idle_minutes=0.2)  # 12 seconds
    base, stop = serve(app)
    try:
        at = Counter(browser, base)
        at.login()
        at.start("support")
        at.page.wait_for_timeout(14_000)
        at.page.goto(f"{base}/")
        at.next_applicant("申請を中止")
        assert kiosk(app).counter.current is None
    finally:
        stop()
