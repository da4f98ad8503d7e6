"""The applicant session at the counter (R1-R8): one view per step of the state machine.

There is deliberately no route that lists past sessions or looks one up (R17): after the wipe
the kiosk holds nothing about an applicant but the statistics and the audit events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import RadioField, SelectField, StringField
from wtforms.validators import DataRequired, InputRequired, Length, ValidationError

from fieldkit.antivirus.messages import GateReply, GateRequest
from fieldkit.bus import BusError
from fieldkit.capture.appid import ApplicationIdRefused, grouped, read_application_id
from fieldkit.kiosk import visit
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.camera import Camera, LiveView
from fieldkit.kiosk.flow import AGE_BANDS, FlowError, Mode, Sex, Step
from fieldkit.kiosk.outbound import SubmissionRefused
from fieldkit.kiosk.text import photo_guidance, say
from fieldkit.municipalities import Municipality, Offer, offer, receiver_codes
from fieldkit.printing.messages import reception_grouped
from fieldkit.sync.messages import FULL_TEXT_JA

bp = Blueprint("counter", __name__)
log = logging.getLogger(__name__)


def keys(*values: str) -> list[tuple[str, str]]:
    """Choices whose labels the templates translate."""
    return [(v, v) for v in values]


class ModeForm(FlaskForm):
    mode = RadioField(choices=keys("support", "municipal"), validators=[InputRequired()])


class ManualIdForm(FlaskForm):
    application_id = StringField(validators=[DataRequired(), Length(max=64)])

    def validate_application_id(self, field: StringField) -> None:
        # The same rules as a scanned QR payload: one function in the capture package.
        try:
            field.data = read_application_id(field.data or "").digits
        except ApplicationIdRefused as refused:
            raise ValidationError(say(f"id_refused:{refused.code}", g.get("lang", "ja"))) from None


class QrOfferForm(FlaskForm):
    answer = RadioField(choices=keys("use", "ignore"), validators=[InputRequired()])


class TypingForm(FlaskForm):
    typing = RadioField(choices=keys("0", "1"), validators=[InputRequired()])


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


def municipality_choices(towns: Iterable[Municipality] | None = None) -> list[tuple[str, str]]:
    """A list to choose from, by name; every municipality of the table unless ``towns``."""
    return [("", "—")] + [(m.code, m.name) for m in (towns or kiosk().municipalities)]


def municipality_offer() -> Offer:
    """Which municipalities an application can go to from this tablet: those it holds a
    receiver key for in its enrolment bundle (the file sync seals with), by the rule the hub's
    municipality page uses (``municipalities.offer``). The others are offered for forwarding.
    A tablet with no enrolment has no rule (and sync sends nothing): the whole table."""
    state = kiosk()
    codes = receiver_codes(state.config.sync.bundle)
    if codes is None:
        return Offer(receivers=list(state.municipalities), forward_only=[], unknown_keys=[])
    return offer(state.municipalities, codes)


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
    verdict = kiosk().end_session(reason)
    if verdict is not None:
        flash(say("wipe_passed" if verdict else "wipe_failed", g.get("lang", "ja")))


def close_and_wipe() -> None:
    """Close the ended session and wipe it; the verdict is said on the next page."""
    verdict = kiosk().close_and_wipe()
    if verdict is not None:
        # After a failure the home page says so too, and no session starts until a retry passes.
        flash(say("wipe_passed" if verdict else "wipe_failed", g.get("lang", "ja")))


@bp.before_request
@login_required
def only_the_sessions_operator() -> ResponseReturnValue | None:
    """The open session is its operator's alone: nobody else sees its step or moves it on.
    (The seat lets no one else log in while it is open; this holds even if one did.)"""
    if kiosk().foreign_session(current_user.id):
        if request.endpoint == "counter.live":
            return jsonify(step=None, message="", candidate=False, camera_problem=None), 409
        return render_template("busy.html"), 409
    # The camera follows the session: the right mode for this step, idle and zeroed after it.
    live_view()
    return None


def live_view() -> LiveView | None:
    """Keep the camera in the mode this step needs; None when no capture service is attached."""
    camera = kiosk().camera
    return camera.follow() if camera is not None else None


@bp.get("/live")
def live() -> ResponseReturnValue:
    """Polled by kiosk.js: the step, and what the camera says now, in the operator's language."""
    session = kiosk().counter.current
    view = live_view()
    message = camera_words(view, session.step if session is not None else None)
    printer = kiosk().printer
    run = printer.status(session.sid) if printer is not None and session is not None else None
    if run is not None:
        message = run.words_ja if g.lang == "ja" else run.words_en
    return jsonify(
        step=session.step.value if session else None,
        message=message,
        candidate=bool(view and view.candidate_print is not None),
        camera_problem=view.camera_problem if view else None,
        # A QR read while staff type: the scan page offers it (kiosk.js), never takes it.
        offer=bool(view and view.offer is not None),
        # The ready page follows the last session's wipe: unproven while it runs, then not.
        unproven=kiosk().unproven is not None,
        # The wipe as it runs, in words (the page that asked for it shows them, kiosk.js).
        wipe=kiosk().wipe_watch.words(g.lang),
    )


def camera_words(view: LiveView | None, step: Step | None) -> str:
    """What the camera line says now, in the operator's language (kiosk/text.py)."""
    if view is None or step is None:
        return ""
    if view.camera_problem:
        # Capture's guidance stops with the camera: say what is wrong and what to do instead.
        return say("camera_problem" if step is Step.SCAN else "camera_unplugged", g.lang)
    if step is Step.SCAN and view.notice is not None:
        return say(view.notice, g.lang)
    if step is Step.PHOTO and view.checks:
        return photo_guidance(view.checks, g.lang)
    return ""


@bp.errorhandler(FlowError)
def wrong_step(error: FlowError) -> ResponseReturnValue:
    return to_current_step()


def antivirus_refusal() -> str | None:
    """Why no session may start now, from the antivirus gate (R10); None when allowed.

    Fails closed: an antivirus service that does not answer refuses the session. Without a
    bus (the app built alone, as in unit tests) there is no gate to ask.
    """
    service = kiosk().service
    if service is None:
        return None
    try:
        gate = service.bus.request("antivirus", "gate", GateRequest(), GateReply, timeout=5)
    except BusError:
        return say("av_unknown", g.lang)
    if gate.allowed:
        return None
    return gate.message_ja if g.lang == "ja" else gate.message_en


def start_refusal() -> tuple[str, str] | None:
    """Why no applicant session may start now, as (code, words for staff); None when one may.

    Fails closed, in this order: the last session's erasure is not proven (it is retried
    once more first), the wipe or a holder does not answer, the antivirus gate refuses."""
    refusal = kiosk().session_refusal(g.lang)
    if refusal is not None:
        return refusal
    words = antivirus_refusal()
    return ("antivirus", words) if words is not None else None


@bp.route("/", methods=["GET", "POST"])
def home() -> ResponseReturnValue:
    state = kiosk()
    if state.counter.current is not None:
        return to_current_step()
    if visit.needs_choice(state):  # the day's place first, when the hub planned any
        return redirect(url_for("visit.choose"))
    form = ModeForm(mode=state.config.kiosk.default_mode)
    refusal = None
    # The last session ended by the timer, with nobody at the screen: said here, until its
    # wipe is proven (the page reloads then by itself, kiosk.js) and then once more.
    timed_out = state.timed_out
    if state.unproven is None:
        state.timed_out = None
    if form.validate_on_submit():
        refused = start_refusal()
        if refused is None:
            mode: Mode = "municipal" if form.mode.data == "municipal" else "support"
            # Only while this login holds the seat: no other login comes in between (seat.py).
            started = state.seat.while_seated(
                current_user.token, lambda: state.counter.start(current_user.id, mode)
            )
            if started is None:
                return redirect(url_for("auth.login"))
            started.visit_id = visit.chosen_today(state)
            return to_current_step()
        code, refusal = refused
        # Audited, and so at the hub: every refusal is an alarm there (R14, R24).
        state.record_login(current_user.id, f"session-refused:{code}")
    elif state.unproven is not None:
        # Shown before staff press start: the next applicant must wait.
        refusal = say("wipe_unproven", g.lang)
    # The receipt names where applicants call: without it staff are told, every time (R5).
    contact_missing = not state.config.kiosk.contact.configured
    return render_template(
        "ready.html", form=form, refusal=refusal, unproven=state.unproven is not None,
        buttons=EmptyForm(), timed_out=say(timed_out, g.lang) if timed_out else None,
        contact_missing=contact_missing,
    )  # fmt: skip


@bp.post("/retry-wipe")
def retry_wipe() -> ResponseReturnValue:
    """Staff ask for the unproven erasure to be checked again now."""
    if EmptyForm().validate_on_submit():
        state = kiosk()
        if state.unproven is not None:
            flash(say("wipe_proven" if state.retry_wipe() else "wipe_unproven", g.lang))
    return redirect(url_for("counter.home"))


@bp.route("/scan", methods=["GET", "POST"])
def scan() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.SCAN)
    form = ManualIdForm()
    camera = kiosk().camera
    if form.validate_on_submit():
        kiosk().counter.set_application_id(form.application_id.data or "")
        return to_current_step()
    refused = bool(form.application_id.errors)
    if camera is not None:
        # A fresh page has an empty field; a refused number stays on screen with its reason,
        # and until staff close it a QR read is only offered (issue 21 item 2).
        camera.manual_entry(typing=refused, refusal_open=refused)
    view = live_view()
    # Municipal reception may check the applicant's own card first (kiosk/card.py).
    municipal = session.mode == "municipal"
    return render_template(
        "scan.html", form=form, buttons=EmptyForm(), view=view, municipal=municipal,
        guidance=camera_words(view, Step.SCAN), offer=bool(view and view.offer is not None),
        offer_form=QrOfferForm(), refused=refused,
    )  # fmt: skip


@bp.post("/scan/typing")
def scan_typing() -> ResponseReturnValue:
    """kiosk.js: the ID field got focus or content (1), or is empty and left (0)."""
    form = TypingForm()
    camera = kiosk().camera
    if form.validate_on_submit() and camera is not None:
        camera.manual_entry(typing=form.typing.data == "1")
    return Response(status=204)


@bp.post("/scan/qr")
def scan_qr() -> ResponseReturnValue:
    """Staff answer the offer of a QR read while they typed: use it, or keep typing."""
    form = QrOfferForm()
    camera = camera_or_404()
    if form.validate_on_submit():
        if form.answer.data == "use":
            camera.take_offer()
        else:
            camera.decline_offer()
    return to_current_step()


@bp.post("/scan/dismiss")
def scan_dismiss() -> ResponseReturnValue:
    """Staff close the refusal of a typed number: from now on a QR read may move on again."""
    camera = kiosk().camera
    if EmptyForm().validate_on_submit() and camera is not None:
        camera.manual_entry(refusal_open=False)
    return to_current_step()


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
    view = live_view()
    return render_template(
        "photo.html", view=view, buttons=EmptyForm(), guidance=camera_words(view, Step.PHOTO)
    )


@bp.get("/photo/candidate.jpg")
def candidate_photo() -> ResponseReturnValue:
    kiosk().counter.require(Step.PHOTO)
    view = live_view()
    if view is None or view.candidate_print is None:
        abort(404)
    return Response(bytes(view.candidate_print), mimetype="image/jpeg")


def camera_or_404() -> Camera:
    camera = kiosk().camera
    if camera is None:
        abort(404)
    return camera


@bp.post("/photo/accept")
def accept_photo() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        camera_or_404().accept_photo()
    return to_current_step()


@bp.post("/photo/retake")
def retake_photo() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        camera_or_404().retake()
    return to_current_step()


@bp.post("/photo/take")
def take_photo() -> ResponseReturnValue:
    if EmptyForm().validate_on_submit():
        try:
            camera_or_404().take_now()
        except BusError:
            # Capture refuses while the camera is away (or does not answer): say what to do.
            flash(say("camera_unplugged", g.lang))
    return to_current_step()


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
    """Where the applicant lives: only municipalities this tablet can send the application to
    are offered (issue 21 item 4); the others, with the reason, for forwarding the form."""
    kiosk().counter.require(Step.STATISTICS)
    towns = municipality_offer()
    form = StatisticsForm()
    form.municipality.choices = municipality_choices(towns.receivers)
    if form.validate_on_submit():
        sex: Sex = form.sex.data if form.sex.data in ("male", "female", "other") else "no-answer"
        kiosk().counter.set_statistics(
            form.municipality.data or None, sex, form.age_band.data or "no-answer"
        )
        return to_current_step()
    return render_statistics(form, towns)


def render_statistics(
    form: StatisticsForm, towns: Offer, forward: ForwardForm | None = None
) -> ResponseReturnValue:
    if forward is None:
        forward = ForwardForm(formdata=None)
    forward.municipality.choices = municipality_choices(towns.forward_only)
    return render_template(
        "statistics.html", form=form, forward=forward if towns.forward_only else None
    )


@bp.post("/statistics/forward")
def forward_instead() -> ResponseReturnValue:
    """The applicant lives in a municipality this tablet cannot send to: the form is
    forwarded there (R8). Only those municipalities are offered here."""
    kiosk().counter.require(Step.STATISTICS)
    towns = municipality_offer()
    forward = ForwardForm()
    forward.municipality.choices = municipality_choices(towns.forward_only)
    if forward.validate_on_submit() and forward.municipality.data:
        kiosk().counter.forward_instead(forward.municipality.data)
        return to_current_step()
    # Nothing chosen (or a code not offered here): one plain sentence, never wtforms' English.
    forward.municipality.errors = [say("forward_only_missing", g.lang)]
    form = StatisticsForm(formdata=None)
    form.municipality.choices = municipality_choices(towns.receivers)
    return render_statistics(form, towns, forward)


def municipality_name(code: str | None) -> str | None:
    """The municipality by name (長野県松本市), never its code; None when none was chosen."""
    return kiosk().municipalities.get(code).full_name if code else None


def render_review(correction: ManualIdForm | None = None) -> ResponseReturnValue:
    """Confirm before applying (issue 21 item 1): the ID in the form's groups, where it goes,
    the photo; the ID can be corrected here."""
    session = kiosk().counter.require(Step.REVIEW)
    refused = correction is not None and bool(correction.application_id.errors)
    return render_template(
        "review.html",
        session=session,
        municipality=municipality_name(session.municipality),
        application_id=grouped(session.application_id) if session.application_id else None,
        buttons=EmptyForm(),
        correction=correction or ManualIdForm(formdata=None),
        correction_refused=refused,
    )


@bp.get("/review")
def review() -> ResponseReturnValue:
    return render_review()


@bp.get("/review/photo.jpg")
def review_photo() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.REVIEW)
    if session.photo is None:
        abort(404)
    return Response(bytes(session.photo), mimetype="image/jpeg")


@bp.post("/review/application-id")
def correct_application_id() -> ResponseReturnValue:
    """The ID staff type here goes through the same rules as a scanned or typed one; a refused
    number leaves the ID as it was, and the page says why."""
    kiosk().counter.require(Step.REVIEW)
    form = ManualIdForm()
    if not form.validate_on_submit():
        return render_review(form)
    if kiosk().counter.correct_application_id(form.application_id.data or ""):
        flash(say("id_corrected", g.lang))
    return to_current_step()


@bp.post("/submit")
def submit() -> ResponseReturnValue:
    """Apply: the session is sealed for sync (issue 5) and its receipts go to the printer."""
    if EmptyForm().validate_on_submit():
        outbound = kiosk().outbound
        if outbound is not None:
            # The packet is in sync's outbox, sealed, before the session moves on (R15, R23).
            try:
                outbound.submit_packet(kiosk().counter.require(Step.REVIEW))
            except SubmissionRefused as refused:
                # sync's own reason goes to the log (it names no applicant), not on the page.
                log.warning("the application packet was refused: %s", refused.reason)
                flash(say(submit_refusal_key(refused), g.lang))
                return to_current_step()
        session = kiosk().counter.submit()
        printer = kiosk().printer
        if printer is not None:
            printer.print_session(session)
    return to_current_step()


def submit_refusal_key(refused: SubmissionRefused) -> str:
    """What the page says when sync does not take the application packet (never its words)."""
    if refused.reason == "municipality":
        return "need_municipality"  # none chosen
    if FULL_TEXT_JA in refused.reason:
        return "outbox_full"  # sync's outbox is full: staff must know, the kit cannot wait it out
    if "municipality" in refused.fields:
        return "municipality_no_key"  # chosen, but the kit cannot seal to it
    return "submit_refused_busy"


@bp.get("/print")
def printing() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.PRINT)
    printer = kiosk().printer
    run = printer.status(session.sid) if printer is not None else None
    return render_template("printing.html", run=run, buttons=EmptyForm(), view=None)


@bp.post("/print/again")
def print_again() -> ResponseReturnValue:
    printer = kiosk().printer
    if EmptyForm().validate_on_submit() and printer is not None:
        printer.print_session(kiosk().counter.require(Step.PRINT))
    return to_current_step()


@bp.get("/done")
def done() -> ResponseReturnValue:
    session = kiosk().counter.require(Step.DONE)
    handoff = None
    state = kiosk()
    if (
        state.config.kiosk.online_handoff
        and session.online_url is not None
        and session.online_photo is not None
        and state.folders is not None
    ):
        # The browser uploads the online JPEG from here; the folder goes when the session closes.
        photo = state.folders.write_photo(session.sid, bytes(session.online_photo))
        handoff = {"url": session.online_url, "photo": str(photo)}
    number = session.reception_number
    return render_template(
        "done.html", buttons=EmptyForm(), handoff=handoff,
        reception_number=reception_grouped(number) if number else None,
        municipality=municipality_name(session.municipality),
    )  # fmt: skip


@bp.post("/finish")
def finish() -> ResponseReturnValue:
    """One tap ends the application and wipes it (issue 21 item 6): the page shows the wipe's
    progress while this request waits for its verdict (kiosk.js), the ready page the verdict."""
    if EmptyForm().validate_on_submit():
        kiosk().counter.finish()
        close_and_wipe()
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
