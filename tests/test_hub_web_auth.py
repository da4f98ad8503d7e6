"""Hub web app: logins, roles, CSRF, lockout, cookies, security headers (R13, R23, R26)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.cli import main
from fieldkit.hub.web.app import create_app
from fieldkit.hub.web.auth import FAILED
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import AccountRow, OperatorRow, WebAuditRow
from fieldkit.pki import KitPki
from tests.hubweb import CSRF, PASSWORD, ClientFactory, csrf_token, login, web_config

pytestmark = pytest.mark.usefixtures("fast_argon2")


def from_address(app: Flask, address: str) -> FlaskClient:
    """A test client whose requests come from ``address``."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def audit_actions(app: Flask) -> list[str]:
    with Session(hubweb(app).engine) as session:
        return list(session.scalars(select(WebAuditRow.action).order_by(WebAuditRow.id)))


def test_pages_need_a_login_and_carry_security_headers(web_app: Flask) -> None:
    client = web_app.test_client()
    page = client.get("/login")
    assert page.status_code == 200
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"
    assert "<script" not in page.get_data(as_text=True)
    for path in ("/", "/reports/counts/site.csv", "/packets", "/devices", "/audit"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"], path


def test_a_browser_login_over_tls_carries_the_referrer_the_csrf_check_wants(
    web_app: Flask,
) -> None:
    """Over HTTPS, Flask-WTF refuses a form whose request has no same-origin referrer. A
    browser sends one only if the page's Referrer-Policy lets it: with ``no-referrer`` every
    login to the hub behind its own TLS was refused ("the form has expired"; the kit's two-VM
    test found it). ``same-origin`` sends it to the hub only. Both ways."""
    client = web_app.test_client()
    base = "https://hub.example:8444"
    page = client.get("/login", base_url=base)
    assert page.headers["Referrer-Policy"] == "same-origin"
    form = {
        "csrf_token": CSRF.search(page.get_data(as_text=True)).group(1),  # type: ignore[union-attr]
        "username": "admin",
        "password": PASSWORD,
    }
    # What a browser under no-referrer sends: no Referer. Refused.
    refused = client.post("/login", base_url=base, data=form)
    assert refused.status_code != 302, refused.headers
    # Under same-origin: the login page's own URL. The password step passes.
    passed = client.post("/login", base_url=base, data=form, headers={"Referer": f"{base}/login"})
    assert passed.status_code == 302, passed.get_data(as_text=True)[:300]
    assert passed.headers["Location"].endswith("/login/code")
    # Another site's page as the referrer: refused.
    other = client.post(
        "/login", base_url=base, data=form, headers={"Referer": "https://elsewhere.example/"}
    )
    assert other.status_code != 302


def test_login_logout_and_audit(web_app: Flask, client_as: ClientFactory) -> None:
    """R13: a login and a logout are both recorded."""
    client = client_as("admin")
    assert client.get("/").status_code == 200
    token = csrf_token(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302
    actions = audit_actions(web_app)
    assert actions[-2:] == ["login", "logout"]


def test_wrong_password_and_lockout(web_app: Flask) -> None:
    """R13: five wrong passwords lock the account from that address, even against the right
    one afterwards; the same account from another address is not affected."""
    client = web_app.test_client()
    assert login(client, "admin", "wrong password!").status_code == 401
    assert login(client, "nobody", PASSWORD).status_code == 401
    for _ in range(4):
        login(client, "admin", "wrong password!")
    locked = login(client, "admin", PASSWORD)
    assert locked.status_code == 401
    assert str(FAILED) in locked.get_data(as_text=True)
    # Another account is not affected, nor the same one from its own address.
    assert login(web_app.test_client(), "auditor").status_code == 302
    assert login(from_address(web_app, "192.0.2.10"), "admin").status_code == 302
    actions = audit_actions(web_app)
    assert "login-throttled" in actions and "login-refused" in actions


def test_lockout_off_lets_guessing_continue(tmp_path: Path, pki: KitPki, database_url: str) -> None:
    """The protection is what stops guessing: with a huge failure limit the right password
    still gets in after the same five failures."""
    app = create_app(
        {
            "FIELDKIT": web_config(tmp_path, pki, database_url, lockout_failures=100),
            "TESTING": True,
        }
    )
    from fieldkit.hub.web.auth import create_account

    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="test")
        session.commit()
    client = app.test_client()
    for _ in range(5):
        login(client, "admin", "wrong password!")
    assert login(client, "admin", PASSWORD).status_code == 302
    hubweb(app).engine.dispose()


def test_csrf_refused(web_app: Flask, client_as: ClientFactory) -> None:
    """A form posted without its CSRF token is refused and changes nothing."""
    client = client_as("admin")
    form = {"operator_id": "op-1", "name": "山田", "duty": "handler", "password": PASSWORD}
    refused = client.post("/operators", data=form)
    assert refused.status_code == 400
    with Session(hubweb(web_app).engine) as session:
        assert session.get(OperatorRow, "op-1") is None
    # The same post with its token goes through (the refusal was the token, not the form).
    ok = client.post("/operators", data={**form, "csrf_token": csrf_token(client, "/operators")})
    assert ok.status_code == 302
    with Session(hubweb(web_app).engine) as session:
        assert session.get(OperatorRow, "op-1") is not None


def test_csrf_off_would_accept_a_forged_post(
    tmp_path: Path, pki: KitPki, database_url: str
) -> None:
    """With CSRF protection switched off the forged post lands: the check above is needed."""
    app = create_app(
        {
            "FIELDKIT": web_config(tmp_path, pki, database_url),
            "TESTING": True,
            "WTF_CSRF_ENABLED": False,
        }
    )
    from fieldkit.hub.web.auth import create_account

    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="test")
        session.commit()
    client = app.test_client()
    assert login(client, "admin").status_code == 302  # no token in the forms at all
    form = {"operator_id": "op-1", "name": "山田", "duty": "handler", "password": PASSWORD}
    assert client.post("/operators", data=form).status_code == 302
    with Session(hubweb(app).engine) as session:
        assert session.get(OperatorRow, "op-1") is not None
    hubweb(app).engine.dispose()


def test_auditor_reads_but_cannot_post(client_as: ClientFactory) -> None:
    """R26: the auditor sees the admin pages and the audit log, and every POST is a 403."""
    auditor = client_as("auditor")
    for path in ("/", "/devices", "/operators", "/sites", "/accounts", "/audit", "/reports"):
        assert auditor.get(path).status_code == 200, path
    token = csrf_token(auditor, "/devices")
    for path, data in (
        ("/devices/enrol", {"device_id": "tab-z"}),
        ("/operators", {"operator_id": "op-9", "name": "x", "duty": "handler"}),
        ("/devices/tab-a/revoke", {}),
        ("/accounts", {"username": "evil", "role": "admin", "password": PASSWORD}),
    ):
        assert auditor.post(path, data={**data, "csrf_token": token}).status_code == 403, path
    # Logging out is the one thing an auditor may post.
    assert auditor.post("/logout", data={"csrf_token": token}).status_code == 302


def test_municipality_user_is_kept_to_their_pages(client_as: ClientFactory) -> None:
    client = client_as("chiyoda")
    for path in ("/devices", "/operators", "/sites", "/accounts", "/audit"):
        assert client.get(path).status_code == 403, path
    assert client.get("/packets").status_code == 200
    assert client_as("admin").get("/packets").status_code == 403


def test_secure_session_cookie(tmp_path: Path, pki: KitPki, database_url: str) -> None:
    app = create_app({"FIELDKIT": web_config(tmp_path, pki, database_url, cookie_secure=True)})
    from fieldkit.hub.web.auth import create_account

    with Session(hubweb(app).engine) as session:
        create_account(session, "admin", PASSWORD, "admin", actor="test")
        session.commit()
    client = app.test_client()
    response = login(client, "admin")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-hub=")
    for flag in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/"):
        assert flag in cookie
    assert "max-age=31536000" in response.headers["Strict-Transport-Security"]
    # The signing key was created 0600 on first start.
    assert (tmp_path / "web.key").stat().st_mode & 0o777 == 0o600
    hubweb(app).engine.dispose()


def test_create_admin_cli(tmp_path: Path, sqlite_url: str, monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[device]\nid = "hub-01"\nrole = "hub"\n[hub]\ndatabase_url = "{sqlite_url}"\n'
    )
    monkeypatch.setenv("FIELDKIT_ADMIN_PASSWORD", PASSWORD)
    assert main(["--config", str(config), "hub", "create-admin", "root"]) == 0
    assert main(["--config", str(config), "hub", "create-admin", "root"]) == 1
    monkeypatch.setenv("FIELDKIT_ADMIN_PASSWORD", "short")
    assert main(["--config", str(config), "hub", "create-admin", "root2"]) == 1
    from fieldkit.hub.db import make_engine

    engine = make_engine(sqlite_url)
    with Session(engine) as session:
        row = session.get(AccountRow, "root")
        assert row is not None and row.role == "admin"
        assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
        assert session.get(AccountRow, "root2") is None
    engine.dispose()
