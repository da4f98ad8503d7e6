"""The kiosk served in-process and one operator at it in Chromium (Playwright): every screen
it reaches is checked with axe-core and, in Japanese, for English or raw text, and saved to
$FIELDKIT_SCREENSHOTS when set. The operator's taps are counted."""

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

# A deadline for each page step, not a timing: a clean clone's run beside three TCG VMs and an
# image build (load 8) ran past 60 s on a navigation twice; on a quiet machine a step takes
# well under a second.
TIMEOUT_MS = 150_000

# Every piece of text a person reads on the page: visible text nodes, and what the browser
# shows or reads out from attributes (alt, placeholder, aria-label, title, option labels).
READABLE_TEXT = """() => {
  const found = [];
  const add = (text, el) => {
    text = (text || "").trim();
    if (!text) { return; }
    const marked = el.closest("[lang]");
    found.push({ text: text, lang: marked ? marked.getAttribute("lang") : "",
                 literal: el.closest("code") !== null });
  };
  const seen = (el) => el.getClientRects().length > 0
    && getComputedStyle(el).visibility !== "hidden";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (el && !el.closest("script, style, template, [hidden]") && seen(el)) {
      add(walker.currentNode.textContent, el);
    }
  }
  for (const el of document.querySelectorAll("[alt], [placeholder], [aria-label], [title]")) {
    for (const name of ["alt", "placeholder", "aria-label", "title"]) {
      add(el.getAttribute(name), el);
    }
  }
  for (const el of document.querySelectorAll("option")) { add(el.textContent, el); }
  add(document.title, document.documentElement);
  return found;
}"""
# What may be ASCII-only on a Japanese page, and why: numbers, IDs and times with their
# punctuation and units (the ID in groups, a reception number, 0263-00-0000, 9:00-17:00,
# 34.1 mm); text marked as another language on purpose (the switch to English, lang="en");
# and a literal a person copies (a file name to pick in the upload dialog, in <code>).
ASCII_ALLOWED = re.compile(r"^[0-9\s.,:;/()+\-]*(mm|cm|%)?$")


# Tells the test each text the wipe's progress line shows (kiosk.js fills it while the request
# that ends the session waits for the wipe).
WATCH_WIPE = """document.addEventListener("DOMContentLoaded", () => {
  const line = document.getElementById("wipe-progress");
  if (!line) { return; }
  const tell = () => { if (!line.hidden) { window.wipeShown(line.textContent); } };
  new MutationObserver(tell).observe(line, { attributes: true, childList: true,
                                             characterData: true, subtree: true });
});"""


def ascii_only_text(page: Any) -> list[str]:
    """Text on a Japanese page with no Japanese in it, beyond the short allow-list above."""
    return [
        item["text"]
        for item in page.evaluate(READABLE_TEXT)
        if item["text"].isascii()
        and not ASCII_ALLOWED.match(item["text"])
        and not item["lang"].startswith("en")
        and not item["literal"]
    ]


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
        # Every tap of the operator's (a button, a choice; a list is two: open, pick).
        self.taps = 0
        # What the wipe's progress line showed while staff waited (gone with its page after).
        self.wipe_words: list[str] = []
        self.context.expose_binding("wipeShown", lambda _, text: self.wipe_words.append(text))
        self.context.add_init_script(WATCH_WIPE)
        self.not_found: list[str] = []
        self.page.on(
            "response", lambda r: self.not_found.append(r.url) if r.status == 404 else None
        )

    def check(self, name: str) -> None:
        """axe-core finds nothing serious or critical; a Japanese page says nothing in English
        or raw (issue 21 item 3); the screen is saved if asked for."""
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        serious = [
            f"{v['id']}: {v['help']}"
            for v in results.response["violations"]
            if v.get("impact") in ("serious", "critical")
        ]
        assert serious == [], f"{name}: {serious}"
        if self.page.evaluate("document.documentElement.lang") == "ja":
            assert ascii_only_text(self.page) == [], f"{name}: text not in Japanese"
        self.screens.append(name)
        folder = os.environ.get("FIELDKIT_SCREENSHOTS")
        if folder:
            self.page.screenshot(path=str(Path(folder) / f"kiosk-{name}.png"), full_page=True)

    def tap(self, locator: Any) -> None:
        """The operator taps a button or a choice."""
        self.taps += 1
        locator.click()

    def tick(self, locator: Any) -> None:
        self.taps += 1
        locator.check()

    def pick(self, locator: Any, value: str) -> None:
        """Open a list and pick from it: two taps."""
        self.taps += 2
        locator.select_option(value)

    def button(self, name: str) -> Any:
        return self.page.get_by_role("button", name=name, exact=True)

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

    def next_applicant(self, expect: str, screen: str = "ended") -> None:
        self.page.wait_for_url("**/ended")
        assert expect in self.page.content()
        self.check(screen)
        self.tap(self.button("次の方へ"))
        self.page.wait_for_url(f"{self.base}/")

    def finish(self) -> None:
        """One tap on the done page ends the session; the ready page says the wipe's verdict."""
        self.tap(self.button("受付を終える(データを消去)"))
        self.page.wait_for_url(f"{self.base}/")
