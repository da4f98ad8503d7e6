"""The kiosk's card check for staff, against the card service on the virtual reader: Japanese
first, English on request, every state in plain words with what to do next, never a crash.
R9 R20 (issue 22)

In the browser (Playwright on Debian's Chromium) every screen is checked with axe-core and,
with $FIELDKIT_SCREENSHOTS set, saved (docs/screenshots/kiosk-card-*.png).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from fieldkit.card.messages import CardCertificate, CardReport
from fieldkit.config import load_config
from fieldkit.kiosk.app import attach_service, detach_service, kiosk
from fieldkit.kiosk.card import answer_for
from fieldkit.registry import load_specs
from fieldkit.runner import start_service, stop_service
from fieldkit.wipe.messages import UnprovenQuery, UnprovenSessions
from tests.card_fixtures import card_section, valid_certificate, wipe_stand_in
from tests.conftest import BusFactory, write_config
from tests.support.jpki_certs import user_auth_certificate
from tests.support.kiosk import login, make_app, post
from tests.support.kiosk_browser import Counter, serve
from tests.support.pcsc import VirtualReader
from tests.support.waiting import wait_for

JST = dt.timezone(dt.timedelta(hours=9))


def report(state: str, **changes: Any) -> CardReport:
    certificate = {
        "valid_from": "2024-04-01", "valid_to": "2029-03-31", "days_left": 1214,
        "expired": False, "not_yet_valid": False, "issuer": "JPKI", **changes,
    }  # fmt: skip
    return CardReport.model_validate(
        {
            "state": state,
            "present": state in {"ok", "not-jpki", "unreadable"},
            "readable": state in {"ok", "not-jpki"},
            "my_number_card": state == "ok",
            "certificate": CardCertificate(**certificate) if state == "ok" else None,
            "read_at": 0.0,
            "seconds": 0.1,
        }
    )


def test_the_answer_is_in_plain_words_japanese_first() -> None:
    ok = answer_for(report("ok"), "ja")
    assert ok.headline == "このカードは読み取れました"
    assert ok.details[0] == "電子証明書の有効期限: 2029年3月31日（あと1,214日）"
    assert ok.next_step == "このカードはそのまま使えます。" and ok.level == "ok"
    en = answer_for(report("ok"), "en")
    assert en.details[0] == "Electronic certificate valid until 31 March 2029 (1,214 days left)"
    soon = answer_for(report("ok", days_left=30), "ja")
    assert soon.level == "warn" and "更新" in soon.next_step
    expired = answer_for(report("ok", days_left=-3, expired=True), "ja")
    assert expired.headline == "電子証明書の有効期限が切れています"
    assert "（3日前に期限切れ）" in expired.details[0] and expired.level == "error"


@pytest.mark.parametrize(
    ("state", "headline"),
    [
        ("unreadable", "このカードは読み取れません"),
        ("not-jpki", "このカードはマイナンバーカードではありません"),
        ("no-card", "カードが置かれていません"),
        ("removed", "読み取りの途中でカードが離れました"),
        ("no-reader", "カードリーダーがつながっていません"),
        ("several-readers", "カードリーダーが2台以上つながっています"),
        ("no-service", "カードリーダーの仕組みが動いていません"),
        (None, "カードの確認機能が応答しません"),
    ],
)
def test_every_failure_has_its_words_and_a_next_step(state: str | None, headline: str) -> None:
    for lang in ("ja", "en"):
        answer = answer_for(report(state) if state else None, lang)  # type: ignore[arg-type]
        assert answer.level == "error" and answer.next_step and not answer.details
        if lang == "ja":
            assert answer.headline == headline
        else:
            assert answer.headline.isascii() and answer.next_step.isascii()


@pytest.fixture
def card_kiosk(
    broker: object,
    card_reader: VirtualReader,
    make_bus: BusFactory,
    tmp_path: Path,
    operator_hash: str,
) -> Iterator[Flask]:
    """The kiosk attached to the bus with the card service on the session's virtual reader."""
    wipe, markers = wipe_stand_in(make_bus)
    wipe.handle_request("unproven-query", UnprovenQuery, lambda q, meta: UnprovenSessions())
    config = load_config(write_config(tmp_path, card_section(card_reader.socket)))
    # The kit runs these two: the kiosk's session gate asks exactly these holders.
    config = config.model_copy(
        update={"runner": config.runner.model_copy(update={"services": ["card", "kiosk"]})}
    )
    card = start_service(load_specs(["card"])[0], config)
    app = make_app(config, operator_hash)
    app.config["CARD_MARKERS"] = markers  # what the wipe was told, for the tests to read
    attach_service(app, start_service(load_specs(["kiosk"])[0], config))
    yield app
    detach_service(app)
    stop_service(card)


def test_staff_read_a_card_at_the_kiosk(card_kiosk: Flask, card_reader: VirtualReader) -> None:
    client = card_kiosk.test_client()
    login(client)
    assert "マイナンバーカードの確認" in client.get("/").get_data(as_text=True)
    page = client.get("/card").get_data(as_text=True)
    assert "カードを置いてください" in page and "読み取る" in page
    assert "カードが置かれていません" in post(client, "/card", {}).get_data(as_text=True)
    today = dt.datetime.now(JST).date()
    card_reader.place("jpki", user_auth_certificate(today, today + dt.timedelta(days=1214)).der)
    card_reader.wait_present()
    page = post(client, "/card", {}).get_data(as_text=True)
    expiry = today + dt.timedelta(days=1214)
    assert "このカードは読み取れました" in page
    assert (
        f"電子証明書の有効期限: {expiry.year}年{expiry.month}月{expiry.day}日（あと1,214日）"
        in page
    )
    # Nothing of the card stays in the kiosk: the report is rendered, not kept.
    assert not hasattr(kiosk(card_kiosk), "card")


def test_no_card_check_in_the_middle_of_a_support_session(card_kiosk: Flask) -> None:
    client = card_kiosk.test_client()
    login(client)
    kiosk(card_kiosk).counter.start("op-01", "support")
    assert "マイナンバーカードの確認" not in client.get("/scan").get_data(as_text=True)
    response = client.get("/card")
    assert response.status_code == 302 and not response.location.endswith("/card")


def test_municipal_reception_checks_the_card_at_the_start_and_the_read_is_the_sessions(
    card_kiosk: Flask, card_reader: VirtualReader
) -> None:  # R6
    markers = card_kiosk.config["CARD_MARKERS"]
    client = card_kiosk.test_client()
    login(client)
    session = kiosk(card_kiosk).counter.start("op-01", "municipal")
    scan = client.get("/scan").get_data(as_text=True)
    assert "マイナンバーカードの確認" in scan
    certificate = valid_certificate()
    card_reader.place("jpki", certificate.der)
    card_reader.wait_present()
    page = post(client, "/card", {}).get_data(as_text=True)
    assert "このカードは読み取れました" in page and "申請に戻る" in page
    # The card service holds the read for this session: its canaries went to the wipe.
    wait_for(lambda: markers, 10, "the card markers at the wipe")
    assert markers[0].sid == session.sid
    assert markers[0].card_subject == certificate.subject


def test_the_kiosk_says_so_when_the_card_service_is_not_there(
    broker: object, make_bus: BusFactory, tmp_path: Path, operator_hash: str
) -> None:
    wipe, _ = wipe_stand_in(make_bus)
    wipe.handle_request("unproven-query", UnprovenQuery, lambda q, meta: UnprovenSessions())
    config = load_config(write_config(tmp_path))
    app = make_app(config, operator_hash)
    attach_service(app, start_service(load_specs(["kiosk"])[0], config))
    try:
        client = app.test_client()
        login(client)
        page = post(client, "/card", {}).get_data(as_text=True)
        assert "カードの確認機能が応答しません" in page and "管理者に連絡" in page
    finally:
        detach_service(app)


def test_every_card_state_in_the_browser(
    card_kiosk: Flask, card_reader: VirtualReader, browser: Any
) -> None:
    base, stop = serve(card_kiosk)
    try:
        at = Counter(browser, base)
        at.login()
        at.check("ready")
        at.page.get_by_role("link", name="マイナンバーカードの確認").click()
        at.page.wait_for_url("**/card")
        at.page.get_by_text("カードを置いてください").wait_for()
        at.check("card-place")

        def read(expect: str, screen: str) -> None:
            at.page.get_by_role("button", name="読み取る").first.click()
            at.page.get_by_role("heading", name=expect).wait_for()
            at.check(screen)

        read("カードが置かれていません", "card-no-card")
        card_reader.place("jpki", valid_certificate(days=1214).der)
        card_reader.wait_present()
        read("このカードは読み取れました", "card-ok")
        at.page.get_by_text("（あと1,214日）").wait_for()
        at.page.goto(f"{base}/card?lang=en")
        at.page.get_by_role("button", name="Read").click()
        at.page.get_by_role("heading", name="This card can be read").wait_for()
        at.check("card-ok-en")
        at.page.goto(f"{base}/card?lang=ja")
        today = dt.datetime.now(JST).date()
        old = user_auth_certificate(dt.date(2019, 4, 1), today - dt.timedelta(days=3))
        card_reader.place("jpki", old.der)
        card_reader.wait_present()
        read("電子証明書の有効期限が切れています", "card-expired")
        card_reader.place("other")
        card_reader.wait_present()
        read("このカードはマイナンバーカードではありません", "card-not-jpki")
        card_reader.place("jpki", valid_certificate().der, remove_after=3)
        card_reader.wait_present()
        read("読み取りの途中でカードが離れました", "card-removed")
        assert at.console_errors == [] and at.not_found == []
    finally:
        stop()
