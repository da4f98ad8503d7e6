"""The kiosk's enrolment screen (R16, R31): shown while the tablet is not enrolled, where
staff type the one-time code and the hub address. The tablet makes its own keys
(``fieldkit.enrolment.device``); nothing of the code is logged."""

from __future__ import annotations

from flask import Blueprint, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired, Length

from fieldkit.enrolment.device import EnrolmentRefused, enrol, is_enrolled
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.text import say

bp = Blueprint("enrol", __name__)


class EnrolForm(FlaskForm):
    hub = StringField(validators=[DataRequired(), Length(max=300)])
    code = StringField(validators=[DataRequired(), Length(max=64)])


def needs_enrolment() -> bool:
    config = kiosk().config
    return config.enrol.kiosk_screen and not is_enrolled(config.sync.bundle)


@bp.before_app_request
def enrolment_first() -> ResponseReturnValue | None:
    """A tablet that is not enrolled shows nothing but the enrolment screen."""
    if request.endpoint in ("enrol.screen", "static") or not needs_enrolment():
        return None
    return redirect(url_for("enrol.screen"))


@bp.route("/enrol", methods=["GET", "POST"])
def screen() -> ResponseReturnValue:
    config = kiosk().config
    form = EnrolForm()
    if not needs_enrolment():
        return render_template("enrol.html", form=form, done=is_enrolled(config.sync.bundle))
    error = None
    if request.method == "POST":
        if not form.validate_on_submit():
            error = say("enrol_missing", g.lang)
        else:
            try:
                enrol(
                    form.hub.data or "",
                    form.code.data or "",
                    config.enrol.ca_cert,
                    config.sync.bundle,
                    config.sync.roster_path(),
                    prior_key=config.wipe.device_key,
                )
            except EnrolmentRefused as exc:
                error = exc.words(g.lang)
            else:
                return render_template("enrol.html", form=form, done=True), 200
    status = 400 if error else 200
    return render_template("enrol.html", form=form, done=False, error=error), status
