"""Logins (R13): argon2id hashes, throttling, a TOTP second factor, sessions that end at logout,
roles and their scope.

A login is two steps for the roles in ``second_factor_roles``: the password, then a code
(set up at the first login, before any page is reachable). Only then does Flask-Login hold the
account. Every failure, at either step and for any reason, shows the same message with the
same status, and costs one argon2 verification, so neither text nor timing tells which names
exist. The session's user id carries the account's session generation: logout, a password
change, disable and a second-factor reset bump it, and a cookie from before no longer loads the
account.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from sqlalchemy.orm import Session
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from fieldkit.hub.web import audit, second_factor
from fieldkit.hub.web.extensions import db, hubweb, login_manager
from fieldkit.hub.web.formfields import REQUIRED, HubForm, length
from fieldkit.hub.web.models import AccountRow
from fieldkit.hub.web.text import lazy, t
from fieldkit.hub.web.throttle import Attempt, LoginGuard

bp = Blueprint("auth", __name__)
_hasher = PasswordHasher()
# Verifying unknown names against a dummy hash keeps timing from telling which names exist.
_DUMMY = _hasher.hash("fieldkit-no-such-account")
MIN_PASSWORD = 12
# Between the password and the code: after this, start again from the password.
PENDING_SECONDS = 300
# Every failed login, whatever the reason (wrong name, wrong password, wrong code, locked,
# throttled, disabled): one text, one status.
FAILED = lazy("login.failed")
FAILED_STATUS = 401

F = TypeVar("F", bound=Callable[..., Any])


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must be at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


class Account(UserMixin):
    def __init__(self, row: AccountRow) -> None:
        self.id = row.username
        self.role = row.role
        self.generation = row.session_generation
        self.municipalities: tuple[str, ...] = tuple(row.municipalities)

    def get_id(self) -> str:
        # What the session cookie holds: a copy made before logout names an old generation.
        return f"{self.generation}:{self.id}"

    def sees(self, municipality: str) -> bool:
        """Admin and auditor see every municipality; a municipality user only their own."""
        return self.role != "municipality" or municipality in self.municipalities


@login_manager.user_loader
def load_account(user_id: str) -> Account | None:
    generation, _, username = user_id.partition(":")
    if not generation.isdigit():
        return None
    row = db().get(AccountRow, username)
    if row is None or row.disabled or row.session_generation != int(generation):
        return None
    return Account(row)


def end_sessions(row: AccountRow) -> None:
    """Every session of this account ends (the caller commits)."""
    row.session_generation += 1


def roles_required(*roles: str) -> Callable[[F], F]:
    """Only these roles (others get 403); implies a login."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return login_required(wrapped)  # type: ignore[no-any-return]

    return decorate


def create_account(
    session: Session,
    username: str,
    password: str,
    role: str,
    municipalities: list[str] | None = None,
    *,
    actor: str,
) -> AccountRow:
    if role not in ("admin", "municipality", "auditor"):
        raise ValueError("role must be admin, municipality or auditor")
    codes = sorted(set(municipalities or []))
    if role == "municipality" and not codes:
        raise ValueError("a municipality user needs at least one municipality code")
    if any(len(c) != 6 or not c.isdigit() for c in codes):
        raise ValueError("municipality codes are 6 digits")
    if ":" in username or not username or len(username) > 64:
        raise ValueError("a user name is 1-64 characters without ':'")
    if session.get(AccountRow, username) is not None:
        raise ValueError(f"account {username} exists already")
    row = AccountRow(
        username=username,
        role=role,
        municipalities=codes if role == "municipality" else [],
        password_hash=hash_password(password),
        disabled=False,
        created_at=time.time(),
        session_generation=0,
        totp_secret=None,
        totp_enabled=False,
        totp_last_counter=None,
    )
    session.add(row)
    audit.record(session, actor, "account-create", username, role=role, codes=",".join(codes))
    return row


def reset_second_factor(session: Session, row: AccountRow, *, actor: str) -> None:
    """The account sets up a new second factor at its next login; its sessions end."""
    row.totp_secret = None
    row.totp_enabled = False
    row.totp_last_counter = None
    end_sessions(row)
    audit.record(session, actor, "second-factor-reset", row.username)


class LoginRefused(Exception):
    """A failed login; the reason goes to the audit log and the throttle, never to the page."""


def client_address() -> str:
    # Behind the TLS proxy, ProxyFix (``proxy_hops``) has put the client's address here.
    return (request.remote_addr or "unknown")[:64]


def needs_second_factor(row: AccountRow) -> bool:
    return row.role in hubweb().config.hubweb.second_factor_roles


def authenticate(session: Session, username: str, password: str, address: str) -> AccountRow:
    """Check a password against the throttle; every worker sees the same counts (database)."""
    guard = LoginGuard(session, hubweb().config.hubweb)
    guard.prune()
    row = session.get(AccountRow, username)
    attempt = Attempt(address, row.username if row is not None else "")
    blocked = guard.refusal(attempt)
    # Exactly one verification whatever happens next: the time taken is the same.
    try:
        _hasher.verify(
            row.password_hash if row is not None and blocked is None else _DUMMY, password
        )
        ok = row is not None and blocked is None and not row.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if blocked is not None:
        guard.refuse(attempt, blocked)
        session.commit()
        raise LoginRefused(blocked)
    if not ok or row is None:
        guard.failed(attempt)
        session.commit()
        raise LoginRefused("wrong")
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return row


def check_code(session: Session, row: AccountRow, code: str, address: str) -> None:
    """Check a second-factor code against the throttle; a used step is refused."""
    guard = LoginGuard(session, hubweb().config.hubweb)
    attempt = Attempt(address, row.username)
    blocked = guard.refusal(attempt)
    if blocked is not None:
        guard.refuse(attempt, blocked)
        session.commit()
        raise LoginRefused(blocked)
    step = second_factor.matching_step(row.totp_secret or "", code, time.time())
    if (
        step is None
        or not row.totp_secret
        or not second_factor.use_step(session, row.username, step)
    ):
        if step is not None:
            audit.record(
                session, row.username, "second-factor-reused", row.username, address=address
            )
        guard.failed(attempt)
        session.commit()
        raise LoginRefused("code")


def complete_login(row: AccountRow) -> ResponseReturnValue:
    """Both factors passed: the session is the account's (a fresh one: no fixation)."""
    address = client_address()
    LoginGuard(db(), hubweb().config.hubweb).succeeded(Attempt(address, row.username))
    audit.record(db(), row.username, "login", row.username, address=address)
    db().commit()
    session.clear()
    session.permanent = True
    login_user(Account(row))
    return redirect(url_for("reports.dashboard"))


class LoginForm(HubForm):
    username = StringField(lazy("login.username"), validators=[DataRequired(), Length(max=64)])
    password = PasswordField(lazy("login.password"), validators=[DataRequired(), Length(max=256)])


class CodeForm(HubForm):
    code = StringField(lazy("code.label"), validators=[DataRequired(), Length(min=6, max=8)])


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    if form.validate_on_submit():
        try:
            row = authenticate(
                db(), form.username.data or "", form.password.data or "", client_address()
            )
        except LoginRefused:
            return render_template("login.html", form=form, error=FAILED), FAILED_STATUS
        if not needs_second_factor(row):
            return complete_login(row)
        db().commit()  # a rehashed password
        session.clear()
        session["pending"] = [row.username, row.session_generation, time.time()]
        return redirect(url_for("auth.second_step"))
    if request.method == "POST":  # a missing field or CSRF token: the same answer
        return render_template("login.html", form=form, error=FAILED), FAILED_STATUS
    return render_template("login.html", form=form, error=None)


def pending_account() -> AccountRow | None:
    """The account whose password was right a moment ago in this session, if still valid."""
    pending = session.get("pending")
    if not isinstance(pending, list) or len(pending) != 3:
        return None
    username, generation, since = pending
    row = db().get(AccountRow, str(username))
    if (
        row is None
        or row.disabled
        or row.session_generation != generation
        or not isinstance(since, int | float)
        or time.time() - since > PENDING_SECONDS
    ):
        return None
    return row


@bp.route("/login/code", methods=["GET", "POST"])
def second_step() -> ResponseReturnValue:
    row = pending_account()
    if row is None:
        session.clear()
        return redirect(url_for("auth.login"))
    if not row.totp_enabled and not row.totp_secret:
        # First login (or after a reset): the secret is made here and shown until confirmed.
        row.totp_secret = second_factor.new_secret()
        audit.record(db(), row.username, "second-factor-setup", row.username)
        db().commit()
    form = CodeForm()
    error = None
    if request.method == "POST" and not form.validate_on_submit():
        error = FAILED  # no CSRF token, or no code: nothing is checked
    elif request.method == "POST":
        try:
            check_code(db(), row, form.code.data or "", client_address())
        except LoginRefused:
            error = FAILED
        else:
            if not row.totp_enabled:
                row.totp_enabled = True
                audit.record(db(), row.username, "second-factor-enabled", row.username)
            return complete_login(row)
    setup = None
    if not row.totp_enabled:
        uri = second_factor.provisioning_uri(row.totp_secret or "", row.username)
        setup = {"qr": second_factor.qr_code(uri), "secret": row.totp_secret}
    page = render_template("login_code.html", form=form, error=error, setup=setup)
    return page, FAILED_STATUS if error else 200


class PasswordForm(HubForm):
    current = PasswordField(lazy("password.current"), validators=[REQUIRED, length(256)])
    new = PasswordField(lazy("password.new"), validators=[REQUIRED, length(256, MIN_PASSWORD)])
    repeat = PasswordField(
        lazy("password.repeat"),
        validators=[REQUIRED, EqualTo("new", message=lazy("form.not_same"))],
    )


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password() -> ResponseReturnValue:
    """One's own password; every other session of the account ends, this one goes on."""
    form = PasswordForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("password.html", form=form, error=None), status
    try:
        row = authenticate(db(), current_user.id, form.current.data or "", client_address())
    except LoginRefused:
        return render_template("password.html", form=form, error=FAILED), FAILED_STATUS
    row.password_hash = hash_password(form.new.data or "")
    end_sessions(row)
    audit.record(db(), row.username, "password-change", row.username)
    db().commit()
    session.clear()
    session.permanent = True
    login_user(Account(row))
    flash(t("password.changed"))
    return redirect(url_for("reports.dashboard"))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        row = db().get(AccountRow, current_user.id)
        if row is not None:
            end_sessions(row)
        audit.record(db(), current_user.id, "logout", current_user.id)
        db().commit()
        logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
