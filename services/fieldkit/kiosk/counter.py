"""The applicant session at the counter (R1-R8): one view per step of the state machine.

There is deliberately no route that lists past sessions or looks one up (R17): after the wipe
the kiosk holds nothing about an applicant but the statistics and the audit events.
"""

from __future__ import annotations

import re

from flask import Blueprint, abort, flash, g, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, ValidationError

from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.flow import AGE_BANDS, FlowError, Sex, Step
from fieldkit.kiosk.text import say

bp = Blueprint("counter", __name__)


def keys(*values: str) -> list[tuple[str, str]]:
    """Choices whose labels the templates translate."""
    return [(v, v) for v in values]


APPLICATION_ID = re.compile(r"^[0-9]{23}$")


class ModeForm(FlaskForm):
    mode = RadioField(choices=keys("support", "municipal"), validators=[InputRequired()])


class ManualIdForm(FlaskForm):
    application_id = StringField(validators=[DataRequired()])

    def validate_application_id(self, field: StringField) -> None:
        digits = re.sub(r"[\s-]", "", field.data or "")
        if not APPLICATION_ID.match(digits):
            raise ValidationError("申請書IDは23けたの数字です / The application ID is 23 digits")
        field.data = digits


class EmptyForm(FlaskForm):
    """Buttons only; the form exists for its CSRF token."""


class TermsForm(FlaskForm):
    answer = RadioField(choices=keys("agree", "decline"), validators=[InputRequired()])


class OptionsForm(FlaskForm):
    e_certificate = RadioField(choices=keys("yes", "no"), validators=[InputRequired()])
    braille = RadioField(choices=keys("yes", "no"), validators=[InputRequired()])


class StatisticsForm(FlaskForm):
    municipality = SelectField(validate_choice=True)
    sex = RadioField(choices=keys("male", "female", "other", "no-answer"), default="no-answer")
    age_band = RadioField(choices=keys(*AGE_BANDS), default="no-answer")


class ForwardForm(FlaskForm):
    municipality = SelectField(validate_choice=True)


def municipality_choices() -> list[tuple[str, str]]:
    return [("", "—")] + [(m.code, m.name) for m in kiosk().municipalities]


STEP_VIEWS = {
    Step.SCAN: "counter.scan",
    Step.FORWARD: "counter.forward",
    Step.TERMS: "counter.terms",
    Step.PHOTO: "counter.photo",
    Step.OPTIONS: "counter.options",
    Step.STATISTICS: "counter.statistics",
    Step.REVIEW: "counter.review",
    Step.PRINT: "counter.printing",
    Step.DONE: "counter.done",
    Step.ENDED: "counter.ended",
}


def to_current_step() -> ResponseReturnValue:
    session = kiosk().counter.current
    if session is None:
        return redirect(url_for("counter.home"))
    return redirect(url_for(STEP_VIEWS[session.step]))


def end_session(reason: str) -> None:
    """Abandon whatever is open, forget it, and have the wipe service erase it everywhere."""
    counter = kiosk().counter
    if counter.current is not None:
        counter.abandon(reason)
        close_and_wipe()


def close_and_wipe() -> None:
    if kiosk().close_and_wipe() is False:
        flash(say("wipe_failed", g.get("lang", "ja")))


@bp.before_request
@login_required
def expire_idle_applicant() -> ResponseReturnValue | None:
    limit = kiosk().config.kiosk.applicant_idle_minutes * 60
    if kiosk().counter.idle_expired(limit):
        kiosk().counter.abandon("idle")
    return None


@bp.errorhandler(FlowError)
def wrong_step(error: FlowError) -> ResponseReturnValue:
    return to_current_step()


@bp.route("/", methods=["GET", "POST"])
def home() -> ResponseReturnValue:
    if kiosk().counter.current is not None:
        return to_current_step()
    form = ModeForm(mode=kiosk().config.kiosk.default_mode)
    if form.validate_on_submit():
        kiosk().counter.start(
            current_user.id, "municipal" if form.mode.data == "municipal" else "support"
        )
        return to_current_step()
    return render_template("ready.html", form=form)


@bp.route("/scan", methods=["GET", "POST"])
def scan() -> ResponseReturnValue:
    kiosk().counter.require(Step.SCAN)
    form = ManualIdForm()
    if form.validate_on_submit():
        kiosk().counter.set_application_id(form.application_id.data or "")
        return to_current_step()
    return render_template("scan.html", form=form, buttons=EmptyForm())


@bp.post("/scan/forward")
def choose_forward() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        kiosk().counter.forward()
    return to_current_step()


@bp.route("/forward", methods=["GET", "POST"])
def forward() -> ResponseReturnValue:
    kiosk().counter.require(Step.FORWARD)
    form = ForwardForm()
    form.municipality.choices = municipality_choices()
    if form.validate_on_submit():
        kiosk().counter.record_forward(form.municipality.data or None)
        return to_current_step()
    return render_template("forward.html", form=form)


@bp.route("/terms", methods=["GET", "POST"])
def terms() -> ResponseReturnValue:
    kiosk().counter.require(Step.TERMS)
    text = kiosk().config.kiosk.terms
    form = TermsForm()
    if form.validate_on_submit():
        kiosk().counter.answer_terms(text.version, form.answer.data == "agree")
        return to_current_step()
    body = text.text_ja if g.lang == "ja" else text.text_en
    return render_template("terms.html", form=form, body=body, version=text.version)


@bp.get("/photo")
def photo() -> ResponseReturnValue:
    kiosk().counter.require(Step.PHOTO)
    return render_template("photo.html", buttons=EmptyForm())


@bp.route("/options", methods=["GET", "POST"])
def options() -> ResponseReturnValue:
    kiosk().counter.require(Step.OPTIONS)
    form = OptionsForm()
    if form.validate_on_submit():
        kiosk().counter.set_options(form.e_certificate.data == "yes", form.braille.data == "yes")
        return to_current_step()
    return render_template("options.html", form=form)


@bp.route("/statistics", methods=["GET", "POST"])
def statistics() -> ResponseReturnValue:
    kiosk().counter.require(Step.STATISTICS)
    form = StatisticsForm()
    form.municipality.choices = municipality_choices()
    if form.validate_on_submit():
        sex: Sex = form.sex.data if form.sex.data in ("male", "female", "other") else "no-answer"
        kiosk().counter.set_statistics(
            form.municipality.data or None, sex, form.age_band.data or "no-answer"
        )
        return to_current_step()
    return render_template("statistics.html", form=form)


@bp.get("/review")
def review() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.REVIEW)
    municipality = (
        kiosk().municipalities.get(session.municipality).name if session.municipality else None
    )
    return render_template(
        "review.html", session=session, municipality=municipality, buttons=EmptyForm()
    )


@bp.get("/print")
def printing() -> ResponseReturnValue:
    kiosk().counter.require(Step.PRINT)
    return render_template("printing.html", buttons=EmptyForm())


@bp.get("/done")
def done() -> ResponseReturnValue:
    kiosk().counter.require(Step.DONE)
    return render_template("done.html", buttons=EmptyForm())


@bp.post("/finish")
def finish() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        kiosk().counter.finish()
    return to_current_step()


@bp.get("/ended")
def ended() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.ENDED)
    outcome = session.outcome.value if session.outcome else "abandoned"
    return render_template("ended.html", outcome=outcome, buttons=EmptyForm())


@bp.post("/next")
def next_applicant() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        close_and_wipe()
    return redirect(url_for("counter.home"))


@bp.post("/abandon")
def abandon() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        kiosk().counter.abandon("button")
    return to_current_step()


@bp.post("/back/<step>")
def back(step: str) -> ResponseReturnValue:
    try:
        target = Step(step)
    except ValueError:
        abort(404)
    if EmptyForm().validate_on_submit():
        kiosk().counter.go_back(target)
    return to_current_step()
