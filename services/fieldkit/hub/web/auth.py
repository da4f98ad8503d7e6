"""Logins (R13): argon2id hashes, lockout after repeated failures, roles and their scope."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, abort, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from fieldkit.hub.web import audit
from fieldkit.hub.web.extensions import db, hubweb, login_manager
from fieldkit.hub.web.models import AccountRow

bp = Blueprint("auth", __name__)
_hasher = PasswordHasher()
# Verifying unknown names against a dummy hash keeps timing from telling which names exist.
_DUMMY = _hasher.hash("fieldkit-no-such-account")
MIN_PASSWORD = 12

F = TypeVar("F", bound=Callable[..., Any])


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"password must be at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


class Account(UserMixin):
    def __init__(self, row: AccountRow) -> None:
        self.id = row.username
        self.role = row.role
        self.municipalities: tuple[str, ...] = tuple(row.municipalities)

    def sees(self, municipality: str) -> bool:
        """Admin and auditor see every municipality; a municipality user only their own."""
        return self.role != "municipality" or municipality in self.municipalities


@login_manager.user_loader
def load_account(username: str) -> Account | None:
    row = db().get(AccountRow, username)
    return Account(row) if row is not None and not row.disabled else None


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
    if session.get(AccountRow, username) is not None:
        raise ValueError(f"account {username} exists already")
    row = AccountRow(
        username=username,
        role=role,
        municipalities=codes if role == "municipality" else [],
        password_hash=hash_password(password),
        disabled=False,
        failures=0,
        locked_until=0.0,
        created_at=time.time(),
    )
    session.add(row)
    audit.record(session, actor, "account-create", username, role=role, codes=",".join(codes))
    return row


class LoginRefused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def authenticate(session: Session, username: str, password: str) -> AccountRow:
    """Check a login; count failures in the database so every worker sees the lockout."""
    settings = hubweb().config.hubweb
    row = session.get(AccountRow, username)
    now = time.time()
    if row is not None and row.locked_until > now:
        raise LoginRefused("locked")
    try:
        _hasher.verify(row.password_hash if row is not None else _DUMMY, password)
        ok = row is not None and not row.disabled
    except (VerificationError, InvalidHashError):
        ok = False
    if row is None:
        raise LoginRefused("wrong")
    if not ok:
        row.failures += 1
        if row.failures >= settings.lockout_failures:
            row.locked_until = now + settings.lockout_minutes * 60
            row.failures = 0
            audit.record(session, username, "login-locked", username)
        session.commit()
        raise LoginRefused("locked" if row.locked_until > now else "wrong")
    row.failures = 0
    if _hasher.check_needs_rehash(row.password_hash):
        row.password_hash = _hasher.hash(password)
    return row


class LoginForm(FlaskForm):
    username = StringField("ユーザー名 / Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("パスワード / Password", validators=[DataRequired(), Length(max=256)])


MESSAGES = {
    "wrong": "ユーザー名かパスワードが違います / Wrong username or password",
    "locked": "ロックされています。しばらくしてから / Locked: try again later",
}


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        username = form.username.data or ""
        try:
            row = authenticate(db(), username, form.password.data or "")
        except LoginRefused as refused:
            error = MESSAGES[refused.reason]
        else:
            audit.record(db(), username, "login", username)
            db().commit()
            session.clear()  # no session fixation: a fresh session for the new login
            session.permanent = True
            login_user(Account(row))
            return redirect(url_for("reports.dashboard"))
    return render_template("login.html", form=form, error=error), 200 if error is None else 401


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        audit.record(db(), current_user.id, "logout", current_user.id)
        db().commit()
        logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
