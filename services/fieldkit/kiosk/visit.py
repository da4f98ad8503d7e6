"""The day's visit, chosen by staff on the tablet (R21; issue 23 item 2).

The hub's plan reaches the tablet with the operator roster (``OperatorRoster.visits``, kept by
sync, so it is there with the hub out of reach). When the plan has visits for this tablet
today, staff choose the one they work at before the first session of the day: usually one,
or 「予定にない場所」 for a place not on the plan. The choice holds for the day (and for the
kiosk process: after a restart staff choose again), is an audit event, and every session's
statistics carry it, so the hub counts sessions by the place visited even when one tablet
works at two places in a day. A tablet with no visit planned today is not asked.
"""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, g, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import RadioField
from wtforms.validators import InputRequired

from fieldkit.kiosk.app import Kiosk, kiosk
from fieldkit.kiosk.outbound import JST
from fieldkit.municipalities import MunicipalityError
from fieldkit.sync.wire import RosterVisit

bp = Blueprint("visit", __name__)
UNSCHEDULED = "unscheduled"


def today() -> str:
    return datetime.now(JST).date().isoformat()


def planned_today(state: Kiosk) -> list[RosterVisit]:
    return state.operators.visits_on(state.config.device.id, today())


def needs_choice(state: Kiosk) -> bool:
    """Whether staff must choose today's visit before a session starts."""
    return today() not in state.visit_chosen and bool(planned_today(state))


def chosen_today(state: Kiosk) -> int | None:
    return state.visit_chosen.get(today())


class VisitForm(FlaskForm):
    visit = RadioField(validators=[InputRequired()], validate_choice=True)


def place_name(state: Kiosk, visit: RosterVisit) -> str:
    try:
        town = state.municipalities.get(visit.municipality).name
    except MunicipalityError:
        town = ""
    return f"{visit.facility}（{town}）" if town else visit.facility


@bp.route("/visit", methods=["GET", "POST"])
@login_required
def choose() -> ResponseReturnValue:
    state = kiosk()
    visits = planned_today(state)
    form = VisitForm()
    form.visit.choices = [(str(v.id), str(v.id)) for v in visits] + [(UNSCHEDULED, UNSCHEDULED)]
    if form.validate_on_submit():
        picked = form.visit.data
        state.visit_chosen[today()] = None if picked == UNSCHEDULED else int(picked or 0)
        # Who chose which planned visit: an ID of the hub's plan, nothing about applicants.
        state.record_login(current_user.id, f"visit-chosen:{picked}")
        return redirect(url_for("counter.home"))
    places = [(str(v.id), place_name(state, v), v.start_time, v.end_time) for v in visits]
    return render_template(
        "visit.html", form=form, places=places, date=today(), lang=g.get("lang", "ja")
    )
