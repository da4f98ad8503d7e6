"""Operator login (R13): ID and password, lockout, one operator per tablet, idle logout on the
server, CSRF on every form.

The login is the tablet's seat (``fieldkit.kiosk.seat``): the cookie carries only the seat's
token for this login, so a login the server ended (idle, taken over) is over for the browser
too. While an applicant session is open no other operator can log in; a logout ends only the
logging-out operator's own login and session.
"""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from fieldkit.kiosk.app import kiosk, login_manager
from fieldkit.kiosk.operators import LoginRefused
from fieldkit.kiosk.seat import SeatTaken
from fieldkit.kiosk.text import say

bp = Blueprint("auth", __name__)

# What the page asks by itself (kiosk.js polls /live; the browser fetches the candidate photo
# and the static files the page names): not something the operator did, so not activity.
POLLS = frozenset({"counter.live", "counter.candidate_photo", "counter.review_photo", "static"})


class Operator(UserMixin):
    def __init__(self, operator_id: str, name: str, token: str) -> None:
        self.id = operator_id
        self.name = name
        self.token = token

    def get_id(self) -> str:
        # The cookie names the login, not the operator: a login the seat ended is unknown.
        return self.token


@login_manager.user_loader
def load_operator(token: str) -> Operator | None:
    operator_id = kiosk().seat.holder(token)
    entry = kiosk().operators.get(operator_id) if operator_id is not None else None
    return Operator(entry.id, entry.name, token) if entry else None


class LoginForm(FlaskForm):
    operator_id = StringField(validators=[DataRequired(), Length(max=32)])
    password = PasswordField(validators=[DataRequired(), Length(max=256)])


@bp.before_app_request
def run_timeouts_and_note_activity() -> None:
    """The timeouts before anything else (the idle timer runs them too, with nobody at the
    screen); then what the seat's operator does, never a poll, keeps login and session alive."""
    state = kiosk()
    state.expire_idle()
    if not by_hand() or not current_user.is_authenticated:
        return
    state.seat.touch(current_user.token)
    state.counter.touch(current_user.id)


def by_hand() -> bool:
    """Whether someone at the screen made this request: not a poll, and not a page that
    kiosk.js reloaded by itself (when the step changed on the server, or the session ended).

    The browser marks a navigation a person started (a tap, a key) with
    ``Sec-Fetch-User: ?1``, through its redirects too; a script's reload has no such mark.
    A request without any Sec-Fetch header (an older browser, a test client) counts."""
    if request.endpoint in POLLS:
        return False
    navigation = request.headers.get("Sec-Fetch-Mode") == "navigate"
    return not navigation or request.headers.get("Sec-Fetch-User") == "?1"


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    form = LoginForm()
    state = kiosk()
    error = None
    status = 200
    if form.validate_on_submit():
        operator_id = form.operator_id.data or ""
        try:
            entry = state.operators.authenticate(operator_id, form.password.data or "")
        except LoginRefused as refused:
            error = say("login_locked" if refused.reason == "locked" else "login_wrong", g.lang)
            state.record_login(operator_id, f"login-refused:{refused.reason}")
            status = 401
        else:

            def open_session() -> str | None:
                applicant = state.counter.current
                return applicant.operator if applicant is not None else None

            resumed = open_session() is not None
            try:
                seat, before = state.seat.take(entry.id, open_session)
            except SeatTaken:
                # One operator at a time: the open session stays with its operator (issue 17).
                error = say("login_seat_taken", g.lang)
                state.record_login(entry.id, "login-refused:seat-taken")
                status = 409
            else:
                if before is not None:
                    state.record_login(before, "logout:replaced")
                session.clear()
                login_user(Operator(entry.id, entry.name, seat.token))
                state.record_login(entry.id, "login:resumed" if resumed else "login")
                return redirect(url_for("counter.home"))
    notice = None
    if error is None and state.seat.operator is None and state.seat.ended_reason == "idle":
        # Nobody was there when the login ended: the next person at the screen is told why.
        notice = say("logged_out_idle", g.lang)
    return render_template("login.html", form=form, error=error, notice=notice), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        state = kiosk()
        # Only this operator's own session ends with their logout (the seat makes it theirs).
        if state.counter.current is not None and not state.foreign_session(current_user.id):
            from fieldkit.kiosk.counter import end_session

            end_session("logout")
        state.seat.end(current_user.token, "logout")
        state.record_login(current_user.id, "logout")
        logout_user()
    session.clear()
    return redirect(url_for("auth.login"))
