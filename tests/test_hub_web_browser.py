"""Hub web app in a real browser (Playwright driving Debian's Chromium): each role's main
paths, no CSP violations, and axe-core finding nothing serious or critical (R13, R21, R23).

Set FIELDKIT_SCREENSHOTS=<dir> to save the dashboard and a report as PNGs for the docs."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from fieldkit.pki import KitPki
from tests.hubkit import MUNICIPALITY, free_port
from tests.hubweb import (
    OTHER_MUNICIPALITY,
    PASSWORD,
    Visitor,
    generated_statistics,
    municipality_label,
    store_packet,
    store_statistics,
)


@pytest.fixture
def live_url(web_app: Flask, pki: KitPki) -> Iterator[str]:
    store_statistics(web_app, generated_statistics(300))
    store_packet(web_app, pki, MUNICIPALITY, b"synthetic packet")
    store_packet(web_app, pki, OTHER_MUNICIPALITY, b"synthetic packet")
    server = make_server("127.0.0.1", free_port(), web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_admin_main_paths(browser: Any, live_url: str, web_app: Flask) -> None:
    admin = Visitor(browser, live_url, "admin", web_app)
    findings: list[str] = list(admin.code_page_findings)  # the set-up page with its QR code
    assert admin.page.locator("svg.chart rect").count() > 0  # the dashboard chart is drawn
    shots = os.environ.get("FIELDKIT_SCREENSHOTS")
    if shots:
        admin.page.screenshot(path=str(Path(shots) / "hub-dashboard.png"), full_page=True)
    findings += admin.axe_serious()
    # Every page of the admin's menu (issue 21: axe on every hub page), each saved as a
    # screenshot when asked.
    for path, name in (
        ("/reports", "reports"),
        ("/reports/completion", "completion"),
        ("/reports/counts/municipality", "report-municipality"),
        ("/devices", "devices"),
        ("/devices/municipalities", "municipalities"),
        ("/operators", "operators"),
        ("/sites", "sites"),
        ("/accounts", "accounts"),
        ("/incidents", "incidents"),
        ("/evidence", "evidence"),
        ("/contract", "contract"),
        ("/expenses", "expenses"),
        ("/deletion", "deletion"),
        ("/sites/calendar?month=2026-08", "calendar"),
        ("/audit", "audit"),
        ("/account/password", "password"),
        ("/devices?lang=en", "devices-en"),
    ):
        assert admin.go(path) == 200, path
        findings += admin.axe_serious()
        if shots:
            admin.page.screenshot(path=str(Path(shots) / f"hub-{name}.png"), full_page=True)
    admin.go("/?lang=ja")
    # A report, and its export link.
    admin.go("/reports")
    admin.page.get_by_role("link", name="会場別件数", exact=True).click()
    assert "会場別件数" in admin.page.inner_text("h1")
    if shots:
        admin.page.screenshot(path=str(Path(shots) / "hub-report-site.png"), full_page=True)
    findings += admin.axe_serious()
    with admin.page.expect_download() as download:
        admin.page.get_by_role("link", name="CSV").click()
    assert download.value.suggested_filename == "counts-site.csv"
    # Add a handler through the form.
    admin.go("/operators")
    admin.page.get_by_label("職員ID").fill("jugyo-9")
    admin.page.get_by_label("氏名").fill("担当 太郎")
    admin.page.get_by_label("初期パスワード（12文字以上）").fill(PASSWORD)
    admin.page.get_by_role("button", name="追加", exact=True).click()
    assert "jugyo-9" in admin.page.inner_text("table")
    # A tablet's enrolment code through the form: shown once, on the answer page.
    admin.go("/devices")
    admin.page.get_by_label("端末ID").fill("tab-9")
    admin.page.get_by_role("button", name="コードを作る").click()
    code = admin.page.inner_text("#enrol-code strong")
    assert re.fullmatch(r"[0-9A-Z]{4}(-[0-9A-Z]{4}){4}", code), code
    findings += admin.axe_serious()
    assert findings == []
    assert not [e for e in admin.console_errors if "Content Security Policy" in e]


def test_municipality_and_auditor_paths(browser: Any, live_url: str, web_app: Flask) -> None:
    chiyoda = Visitor(browser, live_url, "chiyoda", web_app)
    assert chiyoda.go("/packets") == 200
    assert municipality_label(MUNICIPALITY) in chiyoda.page.inner_text("main")
    assert municipality_label(OTHER_MUNICIPALITY) not in chiyoda.page.inner_text("main")
    findings = chiyoda.axe_serious()
    assert chiyoda.go(f"/packets?municipality={OTHER_MUNICIPALITY}") == 403
    assert chiyoda.go(f"/reports/counts/site?municipality={OTHER_MUNICIPALITY}") == 403
    assert chiyoda.go("/devices") == 403
    assert chiyoda.go("/reports/counts/municipality") == 200
    assert municipality_label(OTHER_MUNICIPALITY) not in chiyoda.page.inner_text("main")
    findings += chiyoda.axe_serious()

    auditor = Visitor(browser, live_url, "auditor", web_app)
    assert auditor.go("/devices") == 200
    assert auditor.page.get_by_role("button", name="コードを作る").count() == 0
    assert auditor.go("/audit") == 200
    assert "ハッシュチェーン正常" in auditor.page.inner_text("main")
    findings += auditor.axe_serious()
    assert findings == []


def test_the_browser_checks_can_fail(browser: Any, live_url: str, web_app: Flask) -> None:
    """The checks above are not vacuous: an inline script is blocked (and reported) by the
    CSP, and axe flags an image without alt text as critical."""
    admin = Visitor(browser, live_url, "admin", web_app)
    admin.page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"
    )
    assert admin.page.evaluate("() => window.injected") is None
    admin.page.wait_for_timeout(200)
    assert [e for e in admin.console_errors if "Content Security Policy" in e]
    admin.page.evaluate(
        "() => { const i = document.createElement('img'); i.src = '/static/hub.css';"
        " document.querySelector('main').appendChild(i); }"
    )
    assert any(f.startswith("image-alt (critical)") for f in admin.axe_serious())
