"""Operator login (R13): ID and password, lockout, idle logout, CSRF on every form."""

from __future__ import annotations

import time

from flask import Blueprint, flash, g, redirect, render_template, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from fieldkit.kiosk.app import kiosk, login_manager
from fieldkit.kiosk.operators import LoginRefused
from fieldkit.kiosk.text import say

bp = Blueprint("auth", __name__)


class Operator(UserMixin):
    def __init__(self, operator_id: str, name: str) -> None:
        self.id = operator_id
        self.name = name


@login_manager.user_loader
def load_operator(operator_id: str) -> Operator | None:
    entry = kiosk().operators.get(operator_id)
    return Operator(entry.id, entry.name) if entry else None


class LoginForm(FlaskForm):
    operator_id = StringField(validators=[DataRequired(), Length(max=32)])
    password = PasswordField(validators=[DataRequired(), Length(max=256)])


@bp.before_app_request
def end_idle_login() -> ResponseReturnValue | None:
    """Log the operator out after the configured idle time; abandon an open session too."""
    if not current_user.is_authenticated:
        return None
    limit = kiosk().config.kiosk.operator_idle_minutes * 60
    # The monotonic clock: a step of the wall clock (NTP, a date set by hand) is not idleness.
    # The login dies with the kiosk process (a fresh key each start), so one boot's clock does.
    last = session.get("last_seen", time.monotonic())
    if time.monotonic() - last > limit:
        from fieldkit.kiosk.counter import end_session

        end_session("operator-idle")
        logout_user()
        session.pop("last_seen", None)
        flash(say("logged_out_idle", g.get("lang", "ja")))
        return redirect(url_for("auth.login"))
    session["last_seen"] = time.monotonic()
    return None


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        operator_id = form.operator_id.data or ""
        try:
            entry = kiosk().operators.authenticate(operator_id, form.password.data or "")
        except LoginRefused as refused:
            error = say("login_locked" if refused.reason == "locked" else "login_wrong", g.lang)
            kiosk().record_login(operator_id, f"login-refused:{refused.reason}")
        else:
            session.clear()
            login_user(Operator(entry.id, entry.name))
            session["last_seen"] = time.monotonic()
            kiosk().record_login(entry.id, "login")
            return redirect(url_for("counter.home"))
    status = 200 if error is None else 401
    return render_template("login.html", form=form, error=error), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        from fieldkit.kiosk.counter import end_session

        end_session("logout")
        kiosk().record_login(current_user.id, "logout")
        logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
