"""One operator at a time per tablet (issue 17 item 9). R13 R14

While an applicant session is open, a second operator's login is refused, in Japanese first
(English on request), and audited; the session's own operator may log in again (their browser
was restarted) and carries on. With no session open a new login replaces the one before, and
the replaced login's cookie is worth nothing. Another operator's logout or poll can neither end
the session nor see its step. Each protection is also taken out once, to show the check fails.
"""

from __future__ import annotations

import time

import pytest
from flask import Flask
from flask.testing import FlaskClient

from fieldkit.config import DeviceConfig
from fieldkit.kiosk.app import Kiosk, kiosk
from fieldkit.kiosk.seat import Login, Seat
from fieldkit.kiosk.settings import OperatorEntry
from tests.support.kiosk import PASSWORD, login, make_app, post

OTHER = "op-03"


@pytest.fixture
def app(kit_config: DeviceConfig, operator_hash: str) -> Flask:
    operators = [
        OperatorEntry(id="op-01", name="窓口 一郎", password_hash=operator_hash),
        OperatorEntry(id=OTHER, name="窓口 三郎", password_hash=operator_hash),
    ]
    return make_app(kit_config, operator_hash, operators=operators)


@pytest.fixture
def first(app: Flask) -> FlaskClient:
    """op-01 at the tablet with an applicant session open, at the scan step.

    Clients without ``with``: a client that keeps its request context would share ``g`` (and
    its CSRF token) with the other browser's requests in the same app."""
    client = app.test_client()
    login(client)
    post(client, "/", {"mode": "support"})
    assert kiosk(app).counter.current is not None
    return client


def actions(app: Flask) -> list[str]:
    return [e.action for e in kiosk(app).audit_log]


def take_out_the_seat(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seat without its protection: whoever logs in goes in, and every login stays valid."""

    def no_refusal(seat: Seat, operator: str, open_session: object) -> tuple[Login, None]:
        return Login(operator, "token-" + operator), None

    monkeypatch.setattr(Seat, "take", no_refusal)
    monkeypatch.setattr(Seat, "holder", lambda seat, token: token.removeprefix("token-"))


@pytest.mark.parametrize("protection", ["on", "off"])
def test_a_second_login_is_refused_while_a_session_is_open(
    app: Flask, first: FlaskClient, monkeypatch: pytest.MonkeyPatch, protection: str
) -> None:
    if protection == "off":
        take_out_the_seat(monkeypatch)
    second = app.test_client()
    response = login(second, operator=OTHER)
    if protection == "off":
        assert response.status_code == 302, "without the seat the second login goes in"
        assert second.get("/").status_code == 409  # only the view's ownership check is left
        return
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "ほかの職員が申請の受付をしています" in page
    assert "ログインできません" in page
    # Nothing of the session for the refused operator: the counter sends them to log in.
    assert second.get("/live").status_code == 302
    assert second.get("/scan").status_code == 302
    second.get("/login?lang=en")
    english = login(second, operator=OTHER, password=PASSWORD)
    assert "Another member of staff is serving an applicant" in english.get_data(as_text=True)
    assert actions(app).count("login-refused:seat-taken") == 2
    # The session's own operator carries on as before.
    assert first.get("/live").get_json()["step"] == "scan"
    assert kiosk(app).seat.operator == "op-01"


@pytest.mark.parametrize("protection", ["on", "off"])
def test_another_operators_logout_and_poll_neither_end_nor_see_the_session(
    app: Flask, first: FlaskClient, monkeypatch: pytest.MonkeyPatch, protection: str
) -> None:
    """The second operator's browser holds a cookie of its own (with the seat and the view's
    ownership check taken out, a login that went in); its poll and its logout reach the kiosk."""
    if protection == "off":
        take_out_the_seat(monkeypatch)
        monkeypatch.setattr(Kiosk, "foreign_session", lambda state, operator: False)
    session = kiosk(app).counter.current
    second = app.test_client()
    login(second, operator=OTHER)
    live = second.get("/live")
    post(second, "/logout", {}, page="/login")
    if protection == "off":
        # Without the seat, the second operator sees the step and their logout ends it.
        assert live.get_json()["step"] == "scan"
        assert kiosk(app).counter.current is None
        return
    assert live.status_code == 302  # no step, no message: sent to log in
    assert kiosk(app).counter.current is session and session is not None
    assert session.application_id is None and session.step.value == "scan"
    assert "abandon:logout" not in actions(app)
    # Only the session's own operator's logout ends (and wipes) it.
    post(first, "/logout", {}, page="/scan")
    assert kiosk(app).counter.current is None
    assert session.step.value == "ended" and "abandon:logout" in actions(app)
    assert actions(app)[-1] == "logout"


def test_with_no_session_open_a_new_login_replaces_the_one_before(app: Flask) -> None:
    first, second = app.test_client(), app.test_client()
    login(first)
    assert first.get("/").status_code == 200
    assert login(second, operator=OTHER).status_code == 302
    assert kiosk(app).seat.operator == OTHER
    # The replaced login's cookie no longer opens anything.
    assert first.get("/").status_code == 302
    post(first, "/logout", {}, page="/login")
    assert kiosk(app).seat.operator == OTHER  # a stale cookie's logout ends nothing
    assert second.get("/").status_code == 200
    assert actions(app) == ["login", "logout:replaced", "login"]


def test_the_sessions_own_operator_may_log_in_again_and_carry_on(
    app: Flask, first: FlaskClient
) -> None:
    """Their browser was restarted (its profile is on tmpfs): the session waits for them."""
    session = kiosk(app).counter.current
    again = app.test_client()
    assert login(again).status_code == 302
    assert again.get("/live").get_json()["step"] == "scan"
    assert kiosk(app).counter.current is session
    assert first.get("/").status_code == 302 and "/login" in first.get("/").headers["Location"]
    assert "login:resumed" in actions(app)


def test_the_idle_logout_ends_the_login_on_the_server(
    kit_config: DeviceConfig, operator_hash: str
) -> None:
    """A copy of the cookie taken before the idle logout is refused after it."""
    app = make_app(kit_config, operator_hash, operator_idle_minutes=0.02)  # 1.2 s
    client = app.test_client()
    login(client)
    cookie = client.get_cookie("session")
    assert cookie is not None
    time.sleep(1.5)
    kiosk(app).expire_idle()  # what the idle timer does, with nobody at the screen
    assert kiosk(app).seat.operator is None
    assert "logout:idle" in actions(app)
    copy = app.test_client()
    copy.set_cookie("session", cookie.value)
    assert copy.get("/").status_code == 302
