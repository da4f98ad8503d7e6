"""The hub web app's Flask factory. Nothing runs at import; gunicorn imports ``create_app()``."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from fieldkit.config import DeviceConfig, load_config
from fieldkit.hub.db import make_engine, upgrade
from fieldkit.hub.web import (
    accounts,
    auth,
    contract,
    deletion,
    devices,
    evidence,
    expenses,
    incidents,
    operators,
    pickup,
    reports,
    sites,
)
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import EXTENSION, HubWeb, csrf, login_manager
from fieldkit.hub.web.places import municipality_name
from fieldkit.hub.web.text import CATALOGUE, action_label, lang, t, target_label
from fieldkit.municipalities import MunicipalityTable
from fieldkit.pki import KitPki, write_private
from fieldkit.textcatalogue import chosen_lang

log = logging.getLogger(__name__)

SECURITY_HEADERS = {
    # No inline script, no inline style, nothing from elsewhere; charts are inline SVG shapes.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The page's own URL to its own origin only, never to another site: over TLS Flask-WTF
    # refuses a form without a same-origin referrer, and with "no-referrer" every browser's
    # login to the hub was refused (found by the kit in two VMs, tests/test_kit_vms.py).
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # Reports carry counts only, but pick-up pages list packets: keep nothing in caches.
    "Cache-Control": "no-store",
}
# Sent only when cookies are Secure (behind TLS): telling a plain-HTTP test client is pointless.
HSTS = "max-age=31536000; includeSubDomains"


def secret_key(path: Path) -> bytes:
    """The session-signing key, created 0600 on first start."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        write_private(path, key)
        return key


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app; a test passes ``FIELDKIT`` (a DeviceConfig) and any Flask keys."""
    app = Flask(__name__)
    config: DeviceConfig = (test_config or {}).get("FIELDKIT") or load_config()
    web = config.hubweb
    app.config.from_mapping(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=web.cookie_secure,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_NAME="__Host-hub" if web.cookie_secure else "hub",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(minutes=web.session_minutes),
        WTF_CSRF_TIME_LIMIT=3600,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(web.secret_key_file)
    if config.hub.migrate_on_start:
        upgrade(config.hub.database_url)
    app.extensions[EXTENSION] = HubWeb(
        config=config,
        engine=make_engine(config.hub.database_url),
        pki=KitPki(config.hub.pki, signer=config.hub.ca_signer),
        municipalities=MunicipalityTable.load(web.prefectures, web.municipalities_dir),
    )

    if web.proxy_hops:
        # The TLS proxy's X-Forwarded-For gives the client's address, which login throttling
        # counts by; only the hops we run are trusted, so a client cannot pick its address.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=web.proxy_hops)  # type: ignore[method-assign]

    @app.before_request
    def receipts_may_be_larger() -> None:
        # Before CSRFProtect reads the form (registered next): a receipt may be up to 5 MiB,
        # every other request stays under the app's 1 MiB.
        if request.endpoint == "expenses.create":
            request.max_content_length = expenses.UPLOAD_LIMIT

    @app.before_request
    def choose_language() -> None:
        # Japanese until the reader asks for English (?lang=en); kept for the session.
        asked = chosen_lang(request.args.get("lang"))
        if asked is not None:
            session["lang"] = asked
        g.lang = chosen_lang(session.get("lang")) or "ja"

    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.session_protection = "strong"
    # Flask-Login's own prompt is English ("Please log in to access this page."): ours is
    # the catalogue's, in the reader's language.
    login_manager.login_message = "login.required"
    login_manager.localize_callback = t
    error_pages(app)
    app.jinja_env.globals.update(t=t, action_label=action_label, target_label=target_label)
    app.jinja_env.filters["municipality"] = municipality_name

    @app.context_processor
    def language() -> dict[str, Any]:
        other = "en" if lang() == "ja" else "ja"
        values: dict[str, Any] = {**(request.view_args or {}), **request.args.to_dict()}
        values["lang"] = other
        try:
            here = url_for(request.endpoint or "reports.dashboard", **values)
        except Exception:  # an error page for a URL that matched no route
            here = url_for("auth.login", lang=other)
        return {"lang": lang(), "other_lang": other, "other_lang_url": here}

    for blueprint in (
        auth.bp,
        accounts.bp,
        reports.bp,
        pickup.bp,
        devices.bp,
        operators.bp,
        sites.bp,
        incidents.bp,
        evidence.bp,
        contract.bp,
        expenses.bp,
        deletion.bp,
    ):
        app.register_blueprint(blueprint)

    @app.before_request
    def auditor_reads_only() -> None:
        # The prefecture's auditor sees everything an admin sees and changes nothing (R26)
        # but their own password and session.
        if (
            request.method not in ("GET", "HEAD", "OPTIONS")
            and current_user.is_authenticated
            and current_user.role == "auditor"
            and request.endpoint not in ("auth.logout", "auth.change_password")
        ):
            abort(403)

    @app.template_filter("jst")
    def jst(at: float) -> str:
        """A stored timestamp as Japan time, as every page shows times."""
        return dt.datetime.fromtimestamp(at, JST).strftime("%Y-%m-%d %H:%M")

    @app.teardown_appcontext
    def close_db(exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if app.config["SESSION_COOKIE_SECURE"]:
            response.headers["Strict-Transport-Security"] = HSTS
        return response

    return app


def error_pages(app: Flask) -> None:
    """Every error the app answers with is a page in the reader's language, never werkzeug's
    English one. A view that aborts with a ``description`` from the catalogue shows it."""

    def page(error: HTTPException) -> ResponseReturnValue:
        code = error.code or 500
        known = code if f"error.{code}" in CATALOGUE else 400 if code < 500 else 500
        described = error.description != type(error).description and error.description
        message = described or t(f"error.{known}.text")
        return render_template("error.html", heading=t(f"error.{known}"), message=message), code

    @app.errorhandler(CSRFError)
    def csrf_refused(error: CSRFError) -> ResponseReturnValue:
        return render_template("error.html", heading=t("error.400"), message=t("error.csrf")), 400

    app.register_error_handler(HTTPException, page)
