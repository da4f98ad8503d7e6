"""The contract's paperwork in a real browser (Playwright on Debian's Chromium; issue 23, R20,
R27): the admin enters the contract details, records the cards handed over at a visit, and
produces 様式1-4; each listed hash is the downloaded file's; no CSP violation, and axe-core
finds nothing serious or critical.

Set FIELDKIT_SCREENSHOTS=<dir> to save the pages, and 様式1-4's first pages, as PNGs."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import make_server

from tests.hubweb import Visitor, generated_month

PORTS = range(47200, 47300)  # this work's port range on the shared machine


def port_in_range() -> int:
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 47200-47299")


@pytest.fixture
def month_url(web_app: Flask) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    visits, _ = generated_month(web_app)
    server = make_server("127.0.0.1", port_in_range(), web_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", visits
    server.shutdown()


FIELDS = {
    "業務名": "令和8年度 マイナンバーカード普及促進事業",
    "宛先（委託者）例 長野県知事 阿部 守一": "長野県知事 阿部 守一",
    "契約締結日": "2026-07-17",
    "着手年月日": "2026-07-21",
    "履行期間（開始）": "2026-07-17",
    "履行期間（終了）": "2027-02-26",
    "完了年月日（様式4）": "2027-02-26",
    "契約金額（円）": "12345678",
    "住所": "長野県長野市大字南長野字幅下692-2",
    "商号又は名称": "株式会社フィールドキット",
    "代表者氏名": "代表取締役 山田 花子",
    "業務実施代理人 氏名": "佐藤 一郎",
    "業務実施代理人 所属・役職": "事業部 部長",
}


def submit(visitor: Visitor, button: str) -> None:
    """Press a form's button and wait for the page the server answers with."""
    with visitor.page.expect_navigation():
        visitor.page.get_by_role("button", name=button).click()


def test_admin_enters_the_contract_and_produces_forms_1_to_4(
    browser: Any, month_url: tuple[str, list[dict[str, Any]]], web_app: Flask, tmp_path: Path
) -> None:
    base, visits = month_url
    shots = os.environ.get("FIELDKIT_SCREENSHOTS")
    admin = Visitor(browser, base, "admin", web_app)
    findings: list[str] = []

    # Cards handed over at an issuance-support visit, recorded on the visit's page.
    issuance = next(v for v in visits if v["kind"] == "card-issuance-support")
    assert admin.go(f"/sites/visits/{issuance['id']}") == 200
    admin.page.get_by_label("交付枚数").fill("37")
    admin.page.get_by_label("所見・特記事項（業務日誌に載ります）").fill("午前中に混雑")
    submit(admin, "記録")
    assert "記録しました。" in admin.page.inner_text("main")
    findings += admin.axe_serious()

    # A period that ends before it starts is refused, Japanese first, and the page keeps what
    # was typed (a bad amount the browser itself stops: the field has min="1").
    assert admin.go("/contract") == 200
    assert "契約内容が未登録です" in admin.page.inner_text("main")
    for label, value in FIELDS.items():
        admin.page.get_by_label(label).fill(value)
    admin.page.get_by_label("履行期間（終了）").fill("2026-07-01")
    submit(admin, "保存")
    assert "保存できません" in admin.page.inner_text("main")
    assert "履行期間の終了は開始より後" in admin.page.inner_text("main")
    assert admin.page.get_by_label("業務実施代理人 氏名").input_value() == "佐藤 一郎"
    admin.page.get_by_label("履行期間（終了）").fill("2027-02-26")
    admin.page.get_by_label("業務内容（様式4）").fill(
        "社会福祉施設等への出張申請サポート及び交付支援を実施した。"
    )
    if shots:
        admin.page.screenshot(path=str(Path(shots) / "hub-contract-form.png"), full_page=True)
    submit(admin, "保存")
    assert "契約内容を保存しました" in admin.page.inner_text("main")
    findings += admin.axe_serious()

    admin.page.get_by_label("書類の日付").fill("2026-07-21")
    for number, title in (
        ("様式1", "業務着手届"),
        ("様式2", "業務日程表"),
        ("様式3", "業務実施代理人届"),
        ("様式4", "業務完了報告書"),
    ):
        submit(admin, f"{number} {title}を作成")
        assert f"{number} {title} 第1版を作成しました" in admin.page.inner_text("main")
    rows = admin.page.locator("main table").first.locator("tbody tr")
    assert rows.count() == 4
    if shots:
        admin.page.screenshot(path=str(Path(shots) / "hub-contract-documents.png"), full_page=True)
    findings += admin.axe_serious()
    for n in range(4):
        row = rows.nth(n)
        listed = row.locator("code.hash").inner_text()
        with admin.page.expect_download() as download:
            row.get_by_role("link").click()
        path = tmp_path / download.value.suggested_filename
        download.value.save_as(path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == listed
        assert path.read_bytes().startswith(b"%PDF")
        if shots:
            # The form's first page as the prefecture will see it.
            stem = Path(shots) / f"hub-{path.stem.split('-')[0]}"
            subprocess.run(
                ["pdftoppm", "-r", "70", "-f", "1", "-l", "1", "-png", "-singlefile", path, stem],
                check=True,
            )
    # The other new pages, for axe-core too.
    for path in (
        "/expenses",
        "/deletion",
        "/incidents",
        f"/reports/worklog/{issuance['id']}",
    ):
        assert admin.go(path) == 200, path
        findings += admin.axe_serious()
    assert findings == []
    assert not [e for e in admin.console_errors if "Content Security Policy" in e]
