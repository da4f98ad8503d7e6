"""The kiosk web app: operator login, lockout, CSRF, idle logout, the session walk. R13 R14 R17"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.flow import Step
from fieldkit.pki import KitPki
from tests.hubkit import enrol_tablet
from tests.support.kiosk import APPLICATION_ID, CONTACT, PASSWORD, login, make_app, post, walk
from tests.support.municipality import MUNICIPALITY_MACHINES


@pytest.fixture
def app(kit_config: DeviceConfig, operator_hash: str) -> Flask:
    return make_app(kit_config, operator_hash)


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    with app.test_client() as client:
        yield client


def test_login_required_and_wrong_password_refused(client: FlaskClient) -> None:
    assert client.get("/").status_code == 302
    assert login(client, password="wrong").status_code == 401
    assert login(client, operator="op-02").status_code == 401  # disabled operator
    assert login(client).status_code == 302
    assert "次の方の申請を始めます" in client.get("/").get_data(as_text=True)


def test_lockout_after_five_failures_even_with_the_right_password(client: FlaskClient) -> None:
    for _ in range(5):
        assert login(client, password="wrong").status_code == 401
    refused = login(client)
    assert refused.status_code == 401
    assert "しばらく使えません" in refused.get_data(as_text=True)


def test_forms_without_csrf_token_are_refused(client: FlaskClient, app: Flask) -> None:
    response = client.post("/login", data={"operator_id": "op-01", "password": PASSWORD})
    assert response.status_code == 400
    login(client)
    assert client.post("/", data={"mode": "support"}).status_code == 400
    assert kiosk(app).counter.current is None


def test_idle_operator_is_logged_out_and_the_open_session_ends(
    kit_config: DeviceConfig, operator_hash: str
) -> None:
    app = make_app(kit_config, operator_hash, operator_idle_minutes=0.02)  # 1.2 s
    with app.test_client() as client:
        login(client)
        post(client, "/", {"mode": "support"})
        assert kiosk(app).counter.current is not None
        time.sleep(1.5)
        response = client.get("/scan")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
        assert kiosk(app).counter.current is None


def test_walk_to_review_in_japanese_then_english(client: FlaskClient, app: Flask) -> None:
    walk(client, app)
    session = kiosk(app).counter.current
    assert session is not None and session.step is Step.REVIEW
    assert session.application_id == APPLICATION_ID  # spaces from manual entry removed
    page = client.get("/review").get_data(as_text=True)
    assert "内容の確認" in page and "長野市" in page and "80代" in page
    assert "Check your answers" in client.get("/review?lang=en").get_data(as_text=True)


def test_manual_entry_with_wrong_length_is_refused_with_a_reason(
    client: FlaskClient, app: Flask
) -> None:
    login(client)
    post(client, "/", {"mode": "support"})
    page = post(client, "/scan", {"application_id": "1234 5678 9012"}).get_data(as_text=True)
    assert "12桁の番号はマイナンバー" in page  # the capture package's reason, in Japanese
    assert kiosk(app).counter.current.step is Step.SCAN  # type: ignore[union-attr]


def test_abandon_then_next_applicant_leaves_nothing(client: FlaskClient, app: Flask) -> None:
    walk(client, app)
    session = kiosk(app).counter.current
    post(client, "/abandon", {}, page="/review")
    assert "中止しました" in client.get("/ended").get_data(as_text=True)
    post(client, "/next", {}, page="/ended")
    assert kiosk(app).counter.current is None
    assert session is not None and session.application_id is None and session.photo is None


def test_no_route_lists_or_searches_past_applicants(app: Flask) -> None:  # R17
    rules = {r.rule for r in app.url_map.iter_rules()}
    assert not [r for r in rules if re.search(r"search|history|list|applicants|sessions", r)]
    assert all("<" not in r or r == "/back/<step>" or "static" in r for r in rules)


def inputs_without_autocomplete_off(html: str) -> list[str]:
    fields = re.findall(r"<input[^>]+>", html)
    return [f for f in fields if 'type="hidden"' not in f and 'autocomplete="off"' not in f]


def test_pages_carry_security_headers_and_no_autocomplete(
    client: FlaskClient, app: Flask
) -> None:  # R11
    assert inputs_without_autocomplete_off(client.get("/login").get_data(as_text=True)) == []
    login(client)
    post(client, "/", {"mode": "support"})
    scan_page = client.get("/scan")
    assert inputs_without_autocomplete_off(scan_page.get_data(as_text=True)) == []
    # The check can fail: a plain input is caught.
    assert inputs_without_autocomplete_off('<input type="text" name="x">')
    for response in (client.get("/login"), scan_page):
        assert response.headers["Cache-Control"] == "no-store"
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        scripts = re.findall(
            r"<script([^>]*)>(.*?)</script>", response.get_data(as_text=True), re.S
        )
        assert all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)


def test_personal_data_stays_out_of_cookie_audit_and_logs(
    client: FlaskClient, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:  # R6 R14 R23
    caplog.set_level(logging.DEBUG)
    walk(client, app)
    cookies = " ".join(c.value for c in client._cookies.values())
    from flask.sessions import SecureCookieSessionInterface

    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    assert serializer is not None
    decoded = str(serializer.loads(client.get_cookie("session").value))  # type: ignore[union-attr]
    assert APPLICATION_ID not in cookies and APPLICATION_ID not in decoded
    assert all(APPLICATION_ID not in repr(e) for e in kiosk(app).audit_log)
    assert APPLICATION_ID not in caplog.text
    assert "audit: operator=op-01" in caplog.text


ONLINE_URL = f"https://app.net.kojinbango-card.go.jp/apply?id={APPLICATION_ID}"


def walk_to_done(client: FlaskClient, app: Flask, online_url: str | None) -> None:
    login(client)
    post(client, "/", {"mode": "municipal"})
    # As a QR read by the capture service hands it over (allowlist already applied).
    kiosk(app).counter.set_application_id(APPLICATION_ID, online_url)
    post(client, "/terms", {"answer": "agree"})
    kiosk(app).counter.set_photo(b"\xff\xd8print\xff\xd9", b"\xff\xd8online-jpeg\xff\xd9")
    post(client, "/options", {"e_certificate": "no", "braille": "no"})
    post(client, "/statistics", {"municipality": "", "sex": "no-answer", "age_band": "no-answer"})
    post(client, "/submit", {}, page="/review")
    kiosk(app).counter.printed()  # no printing service attached in this test


def test_online_handoff_offers_the_link_and_the_photo_then_purges_the_folder(
    kit_config: DeviceConfig, operator_hash: str
) -> None:  # R6 (session folder purged), issue 6 hand-off
    app = make_app(kit_config, operator_hash, online_handoff=True)
    with app.test_client() as client:
        walk_to_done(client, app, ONLINE_URL)
        page = client.get("/done").get_data(as_text=True)
        assert f'href="{ONLINE_URL}"' in page
        session = kiosk(app).counter.current
        assert session is not None
        folder = kiosk(app).folders.folder(session.sid)  # type: ignore[union-attr]
        photo = folder / "mynumber-photo.jpg"
        assert photo.read_bytes() == b"\xff\xd8online-jpeg\xff\xd9"
        assert oct(folder.stat().st_mode & 0o777) == "0o700"
        # One tap ends the session and has it wiped (issue 21 item 6).
        post(client, "/finish", {}, page="/done")
        assert kiosk(app).counter.current is None
        assert not folder.exists()


@pytest.mark.parametrize("enabled", [False, True])
def test_no_handoff_without_the_site_setting_or_an_allowlisted_link(
    kit_config: DeviceConfig, operator_hash: str, enabled: bool
) -> None:
    app = make_app(kit_config, operator_hash, online_handoff=enabled)
    with app.test_client() as client:
        walk_to_done(client, app, None if enabled else ONLINE_URL)
        assert "kojinbango" not in client.get("/done").get_data(as_text=True)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        (ONLINE_URL, True),
        ("http://app.net.kojinbango-card.go.jp/apply", False),  # not https
        ("https://app.net.kojinbango-card.go.jp.evil.example/apply", False),
        ("https://user@app.net.kojinbango-card.go.jp/apply", False),
        ("https://example.org/apply", False),
    ],
)
def test_only_allowlisted_https_links_are_opened(url: str, allowed: bool) -> None:  # R16
    from fieldkit.kiosk.handoff import allowed_online_url

    hosts = ["app.net.kojinbango-card.go.jp"]
    assert (allowed_online_url(url, hosts) == url) is allowed


def test_every_photo_check_has_plain_words_in_both_languages() -> None:
    """Issue 21 item 3: each check said in plain words, with mm or degrees where it has them,
    for every way capture says it can fail; never a limit or a formula."""
    from typing import get_args

    from fieldkit.capture.messages import Advice, CheckResult
    from fieldkit.capture.photo import CheckName
    from fieldkit.kiosk.text import CHECK_WORDS, check_words

    assert set(get_args(CheckName)) == set(CHECK_WORDS)
    advices = set(get_args(Advice))
    for name, (held, failed) in CHECK_WORDS.items():
        assert set(failed) <= advices, name
        for ja, en in [held, *failed.values()]:
            assert not ja.isascii() and en, name
            assert not re.search(r"[<>=|]", ja + en), name

    def result(name: str, passed: bool, measured: float, unit: str, advice: str) -> CheckResult:
        return CheckResult.model_validate(
            {"name": name, "passed": passed, "measured": measured, "threshold": "|x| <= 2",
             "unit": unit, "advice": advice}
        )  # fmt: skip

    off = result("centred", False, -3.14, "mm", "move-left")
    assert check_words(off, "ja") == "顔が真ん中から3.1 mmずれています。少し左へ動いてください"
    assert check_words(off, "en").startswith("The face is 3.1 mm off the centre")
    tilted = result("head-level", True, -1.26, "deg", "level")
    assert check_words(tilted, "ja") == "頭はまっすぐです(傾き1.3度)"
    small = result("head-height", False, 30.04, "mm", "closer")
    assert "30.0 mm" in check_words(small, "ja") and "近づいて" in check_words(small, "ja")
    big = result("head-height", False, 38.0, "mm", "back")
    assert "後ろに下がって" in check_words(big, "ja")
    # A ratio is said in words only; its number means nothing to staff.
    eyes = result("eyes-open", False, 0.05, "lid gap / eye width", "open-eyes")
    assert (
        check_words(eyes, "ja") == "目が閉じているか、細くなっています。目をしっかり開けてください"
    )
    # A head covering: the advice, and that the staff may take it for religious or medical
    # reasons (the share measured means nothing to staff).
    hat = result("head-covering", False, 0.93, "share of the head top", "remove-hat")
    assert "帽子などをとってください" in check_words(hat, "ja") and "0.93" not in check_words(
        hat, "ja"
    )
    assert "take off your hat" in check_words(hat, "en")
    # The crown cut off: the margin's sign is the news.
    cut = result("crown-margin", False, -1.5, "mm", "lower")
    assert "-1.5 mm" in check_words(cut, "ja")
    for check in (off, tilted, small, eyes):
        assert "|x|" not in check_words(check, "ja") and "<=" not in check_words(check, "en")


def test_review_shows_the_id_in_groups_the_municipality_by_name_and_the_photo(
    client: FlaskClient, app: Flask
) -> None:  # R1 R3, issue 21 item 1
    walk(client, app)
    page = client.get("/review").get_data(as_text=True)
    assert "9876 5432 1098 7654 3210 987" in page
    assert "長野県長野市" in page and "202011" not in page
    assert 'src="/review/photo.jpg"' in page
    photo = client.get("/review/photo.jpg")
    assert photo.mimetype == "image/jpeg" and photo.data == b"\xff\xd8print\xff\xd9"
    assert photo.headers["Cache-Control"] == "no-store"


def test_a_wrong_id_is_corrected_at_review_and_a_refused_one_keeps_the_old(
    client: FlaskClient, app: Flask
) -> None:  # R1, issue 21 item 1
    walk(client, app)
    session = kiosk(app).counter.current
    assert session is not None
    session.online_url = f"https://app.net.kojinbango-card.go.jp/apply?id={APPLICATION_ID}"
    # Refused by the same rules as a typed or scanned ID: the old one stays, the page says why.
    refused = post(client, "/review/application-id", {"application_id": "1234"}, page="/review")
    text = refused.get_data(as_text=True)
    assert "申請書IDは直していません" in text and "申請書IDは23桁" in text
    assert "9876 5432 1098 7654 3210 987" in text
    assert session.application_id == APPLICATION_ID and session.step is Step.REVIEW
    my_number = post(
        client, "/review/application-id", {"application_id": "1234 5678 9012"}, page="/review"
    )
    assert "マイナンバー" in my_number.get_data(as_text=True)
    # Accepted: corrected in place, no new session, audited without the digits.
    full_width = "".join(chr(0xFF10 + int(d)) for d in "12345678901234567890123")
    post(client, "/review/application-id", {"application_id": full_width}, page="/review")
    assert session.application_id == "12345678901234567890123"
    assert kiosk(app).counter.current is session and session.step is Step.REVIEW
    # The QR's link carried the old ID: it goes with it.
    assert session.online_url is None
    page = client.get("/review").get_data(as_text=True)
    assert "申請書IDを直しました" in page and "1234 5678 9012 3456 7890 123" in page
    assert kiosk(app).audit_log[-1].action == "application-id-corrected"
    assert all("12345678901234567890123" not in repr(e) for e in kiosk(app).audit_log)


def test_the_ready_page_says_when_the_receipt_has_no_contact(
    kit_config: DeviceConfig, operator_hash: str
) -> None:  # R5, issue 21 item 5
    from fieldkit.kiosk.settings import ContactDesk

    for contact, warned in ((ContactDesk(), True), (CONTACT, False)):
        app = make_app(kit_config, operator_hash, contact=contact)
        with app.test_client() as client:
            login(client)
            page = client.get("/").get_data(as_text=True)
            assert ("問い合わせ先(電話番号と受付時間)が設定されていません" in page) is warned


def test_the_login_prompt_is_japanese(client: FlaskClient) -> None:  # issue 21 item 3
    page = client.get("/scan", follow_redirects=True).get_data(as_text=True)
    assert "ログインしてください。" in page and "Please log in" not in page


def test_an_application_goes_only_to_a_municipality_the_tablet_holds_a_receiver_key_for(
    kit_config: DeviceConfig, operator_hash: str, pki: KitPki
) -> None:  # R8 R15, issue 21 item 4
    """The statistics step offers, by name, only municipalities whose receiver key the tablet's
    enrolment holds (the file sync seals with: the hub's rule, ``municipalities.offer``); the
    others are offered for forwarding with the reason, and a forward there ends the session."""
    MUNICIPALITY_MACHINES.register(pki, "202029")  # 松本市 has a key; 長野市 (202011) has none
    bundle = enrol_tablet(pki, "test-tablet-01")
    sync = kit_config.sync.model_copy(update={"bundle": bundle})
    app = make_app(kit_config.model_copy(update={"sync": sync}), operator_hash)

    def lists(page: str) -> tuple[str, str]:
        main, _, rest = page.partition('id="forward-only"')
        return main, rest

    with app.test_client() as client:
        walk_to_statistics(client, app)
        offered, forward_only = lists(client.get("/statistics").get_data(as_text=True))
        assert ">松本市<" in offered and ">長野市<" not in offered
        assert ">長野市<" in forward_only and ">松本市<" not in forward_only
        assert "受け取り用の鍵がこの端末にまだ登録されていない" in forward_only
        # A municipality not offered is not taken for an application, even posted by hand.
        post(client, "/statistics", {"municipality": "202011", "age_band": "80-89"})
        session = kiosk(app).counter.current
        assert session is not None and session.step is Step.STATISTICS
        assert session.municipality is None
        # Nor is a receiver taken for forwarding; a forward-only one is, and ends the session.
        refused = post(
            client, "/statistics/forward", {"municipality": "202029"}, page="/statistics"
        )
        assert "回付する市町村を選んでください" in refused.get_data(as_text=True)
        assert session.step is Step.STATISTICS
        post(client, "/statistics/forward", {"municipality": "202011"}, page="/statistics")
        assert session.step is Step.ENDED and session.municipality == "202011"
        assert kiosk(app).audit_log[-1].action == "forwarded:no-receiver"
        assert "市町村へ回付しました" in client.get("/ended").get_data(as_text=True)
        post(client, "/next", {}, page="/ended")
        assert kiosk(app).counter.current is None

        # A receiver key that arrives with a new enrolment is offered from the next page on.
        walk_to_statistics(client, app)
        shutil.copy(bundle / "receivers" / "202029.pem", bundle / "receivers" / "202011.pem")
        offered, forward_only = lists(client.get("/statistics").get_data(as_text=True))
        assert ">長野市<" in offered and ">長野市<" not in forward_only
        post(client, "/statistics", {"municipality": "202011", "age_band": "80-89"})
        assert kiosk(app).counter.current is not None
        assert kiosk(app).counter.current.municipality == "202011"


def test_without_the_receiver_rule_the_check_sees_a_municipality_that_cannot_receive(
    kit_config: DeviceConfig, operator_hash: str, pki: KitPki, monkeypatch: pytest.MonkeyPatch
) -> None:  # the check above can fail
    from fieldkit.kiosk import counter

    MUNICIPALITY_MACHINES.register(pki, "202029")
    bundle = enrol_tablet(pki, "test-tablet-01")
    sync = kit_config.sync.model_copy(update={"bundle": bundle})
    app = make_app(kit_config.model_copy(update={"sync": sync}), operator_hash)
    # The kiosk as it was: the whole table for an application.
    monkeypatch.setattr(counter, "receiver_codes", lambda _bundle: None)
    with app.test_client() as client:
        walk_to_statistics(client, app)
        page = client.get("/statistics").get_data(as_text=True)
        assert ">長野市<" in page and 'id="forward-only"' not in page
        post(client, "/statistics", {"municipality": "202011", "age_band": "80-89"})
        session = kiosk(app).counter.current
        assert session is not None and session.municipality == "202011"  # what the rule stops


def walk_to_statistics(client: FlaskClient, app: Flask) -> None:
    login(client)
    post(client, "/", {"mode": "support"})
    post(client, "/scan", {"application_id": "9876 5432 1098 7654 3210 987"})
    post(client, "/terms", {"answer": "agree"})
    kiosk(app).counter.set_photo(b"\xff\xd8print\xff\xd9", b"\xff\xd8online\xff\xd9")
    post(client, "/options", {"e_certificate": "yes", "braille": "no"})
    current = kiosk(app).counter.current
    assert current is not None and current.step is Step.STATISTICS
