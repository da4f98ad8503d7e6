"""The kiosk served in-process and one operator at it in Chromium (Playwright): every screen
it reaches is checked with axe-core and saved to $FIELDKIT_SCREENSHOTS when set."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.serving import make_server

from tests.conftest import OPERATOR_PASSWORD

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
