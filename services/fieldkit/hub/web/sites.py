"""Sites and visits (R19, R20): facilities, their visit requests, and the visits made.

A visit needs two or more staff from the handler registry, one of them the site lead, a
device, and a kind: application support (申請サポート) or card issuance support (交付支援).
Progress counts distinct application-support days against the programme's target (40).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from wtforms import StringField, TextAreaField
from wtforms.validators import NumberRange, Optional, Regexp

from fieldkit.hub.web import audit, counts
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import (
    PRESENT,
    REQUIRED,
    ChoiceInput,
    DateInput,
    HubForm,
    WholeNumberInput,
    length,
    refusal,
)
from fieldkit.hub.web.models import (
    FACILITY_KINDS,
    VISIT_KINDS,
    FacilityRow,
    OperatorRow,
    VisitRequestRow,
    VisitRow,
)
from fieldkit.hub.web.places import choices as municipality_choices
from fieldkit.hub.web.text import lazy, t

bp = Blueprint("sites", __name__, url_prefix="/sites")
TIME = r"^([01]\d|2[0-3]):[0-5]\d$"


def _kinds(kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(k, lazy(f"kind.{k}")) for k in kinds]


class FacilityForm(HubForm):
    name = StringField(lazy("sites.facility_name"), validators=[REQUIRED, length(200)])
    kind = ChoiceInput(lazy("sites.type"), choices=_kinds(FACILITY_KINDS))
    # Chosen by name from the kit's municipality table (set per request).
    municipality = ChoiceInput(lazy("municipality"), choices=[])
    address = StringField(lazy("sites.address"), validators=[Optional(), length(300)])


class RequestForm(HubForm):
    facility_id = ChoiceInput(lazy("sites.facility"), coerce=int)
    wanted_date = DateInput(lazy("sites.wanted"), validators=[PRESENT])
    expected_people = WholeNumberInput(
        lazy("sites.expected"),
        validators=[
            Optional(),
            NumberRange(min=0, max=10000, message=lazy("form.number_range", low=0, high=10000)),
        ],
    )


class VisitForm(HubForm):
    facility_id = ChoiceInput(lazy("sites.facility"), coerce=int)
    date = DateInput(lazy("date"), validators=[PRESENT])
    kind = ChoiceInput(lazy("sites.kind"), choices=_kinds(VISIT_KINDS))
    device_id = StringField(lazy("device"), validators=[REQUIRED, length(63)])
    lead = StringField(lazy("sites.lead_id"), validators=[REQUIRED, length(32)])
    staff = StringField(lazy("sites.staff_ids"), validators=[REQUIRED, length(500)])
    start_time = StringField(
        lazy("sites.start"), validators=[REQUIRED, Regexp(TIME, message=lazy("form.time"))]
    )
    end_time = StringField(
        lazy("sites.end"), validators=[REQUIRED, Regexp(TIME, message=lazy("form.time"))]
    )
    incidents = TextAreaField(lazy("worklog.incidents"), validators=[Optional(), length(2000)])


class VisitResultForm(HubForm):
    """After the visit: the cards handed over (card issuance support) and the lead's remarks
    for the work log."""

    cards_issued = WholeNumberInput(
        lazy("sites.cards"),
        validators=[
            Optional(),
            NumberRange(min=0, max=10000, message=lazy("form.number_range", low=0, high=10000)),
        ],
    )
    remarks = TextAreaField(lazy("visit.remarks_field"), validators=[Optional(), length(4000)])


def facility_form_() -> FacilityForm:
    form = FacilityForm()
    form.municipality.choices = municipality_choices()
    return form


def _facility_choices() -> list[tuple[int, str]]:
    return [(f.id, f.name) for f in db().scalars(select(FacilityRow).order_by(FacilityRow.name))]


def visit_problems(form: VisitForm) -> list[str]:
    """What is wrong with a visit beyond the field checks (R19: two or more staff, one lead)."""
    staff = sorted({s.strip() for s in (form.staff.data or "").split(",") if s.strip()})
    lead = (form.lead.data or "").strip()
    if lead and lead not in staff:
        staff = sorted({*staff, lead})
    problems = []
    if len(staff) < 2:
        problems.append(t("sites.two_staff"))
    known = {o.operator_id for o in db().scalars(select(OperatorRow).where(~OperatorRow.disabled))}
    unknown = [s for s in staff if s not in known]
    if unknown:
        problems.append(t("sites.unknown_staff", ids="、".join(unknown)))
    if (form.start_time.data or "") >= (form.end_time.data or ""):
        problems.append(t("sites.end_after_start"))
    form.staff.data = ",".join(staff)
    return problems


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    facility_form, request_form, visit_form = facility_form_(), RequestForm(), VisitForm()
    choices = _facility_choices()
    request_form.facility_id.choices = choices
    visit_form.facility_id.choices = choices
    days = counts.visit_days(db())
    target = hubweb().config.hubweb.programme_days
    return render_template(
        "sites.html",
        facilities=db().scalars(select(FacilityRow).order_by(FacilityRow.name)).all(),
        requests=db().scalars(select(VisitRequestRow).order_by(VisitRequestRow.wanted_date)).all(),
        visits=db().scalars(select(VisitRow).order_by(VisitRow.date.desc())).all(),
        names=dict(choices),
        days_done=len(days),
        target=target,
        percent=min(100, round(100 * len(days) / target)),
        facility_form=facility_form,
        request_form=request_form,
        visit_form=visit_form,
    )


def _refuse(form: HubForm, extra: list[str] | None = None) -> ResponseReturnValue:
    flash(t("not_saved", reason=refusal(form, extra)))
    return make_response(index(), 400)  # the page again, with the reason shown


@bp.post("/facilities")
@roles_required("admin")
def add_facility() -> ResponseReturnValue:
    form = facility_form_()
    if not form.validate_on_submit():
        return _refuse(form)
    row = FacilityRow(
        name=form.name.data or "",
        kind=form.kind.data or "other",
        municipality=form.municipality.data or "",
        address=form.address.data or "",
    )
    db().add(row)
    db().flush()
    audit.record(db(), current_user.id, "facility-create", f"facility {row.id}")
    db().commit()
    return redirect(url_for("sites.index"))


@bp.post("/requests")
@roles_required("admin")
def add_request() -> ResponseReturnValue:
    form = RequestForm()
    form.facility_id.choices = _facility_choices()
    if not form.validate_on_submit():
        return _refuse(form)
    if form.wanted_date.data is None:  # DataRequired has refused this already
        return _refuse(form)
    row = VisitRequestRow(
        facility_id=form.facility_id.data,
        received_on=dt.date.today().isoformat(),
        wanted_date=form.wanted_date.data.isoformat(),
        expected_people=form.expected_people.data or 0,
        status="open",
    )
    db().add(row)
    db().flush()
    audit.record(db(), current_user.id, "visit-request-create", f"request {row.id}")
    db().commit()
    return redirect(url_for("sites.index"))


@bp.post("/visits")
@roles_required("admin")
def add_visit() -> ResponseReturnValue:
    form = VisitForm()
    form.facility_id.choices = _facility_choices()
    if not form.validate_on_submit():
        return _refuse(form)
    problems = visit_problems(form)
    if problems:
        return _refuse(form, problems)
    if form.date.data is None:  # DataRequired has refused this already
        return _refuse(form)
    row = VisitRow(
        facility_id=form.facility_id.data,
        date=form.date.data.isoformat(),
        kind=form.kind.data or VISIT_KINDS[0],
        device_id=(form.device_id.data or "").strip(),
        lead=(form.lead.data or "").strip(),
        staff=(form.staff.data or "").split(","),
        start_time=form.start_time.data or "",
        end_time=form.end_time.data or "",
        incidents=form.incidents.data or "",
    )
    db().add(row)
    db().flush()
    for request_row in db().scalars(
        select(VisitRequestRow).where(
            VisitRequestRow.facility_id == row.facility_id, VisitRequestRow.status == "open"
        )
    ):
        request_row.status = "scheduled"
    audit.record(db(), current_user.id, "visit-create", f"visit {row.id}", date=row.date)
    db().commit()
    return redirect(url_for("sites.index"))


@bp.get("/calendar")
@roles_required("admin", "auditor")
def month_calendar() -> ResponseReturnValue:
    """A month as weeks (Monday first), each day with its visits and requested visits."""
    month = request.args.get("month") or dt.date.today().strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", month):
        abort(400, description=t("error.bad_month"))
    year, mon = (int(part) for part in month.split("-"))
    first, last = f"{month}-01", f"{month}-31"
    names = dict(_facility_choices())
    days: dict[str, list[str]] = {}
    for visit in db().scalars(
        select(VisitRow).where(VisitRow.date >= first, VisitRow.date <= last)
    ):
        days.setdefault(visit.date, []).append(
            f"{names.get(visit.facility_id, '')}（{t(f'kind.{visit.kind}')}）"
        )
    for wanted in db().scalars(
        select(VisitRequestRow).where(
            VisitRequestRow.wanted_date >= first,
            VisitRequestRow.wanted_date <= last,
            VisitRequestRow.status == "open",
        )
    ):
        days.setdefault(wanted.wanted_date, []).append(
            t("calendar.request", facility=names.get(wanted.facility_id, ""))
        )
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, mon)
    previous = (dt.date(year, mon, 1) - dt.timedelta(days=1)).strftime("%Y-%m")
    following = (dt.date(year, mon, 28) + dt.timedelta(days=4)).strftime("%Y-%m")
    return render_template(
        "calendar.html",
        month=month,
        weeks=weeks,
        mon=mon,
        days=days,
        previous=previous,
        following=following,
    )


@bp.get("/visits/<int:visit_id>")
@roles_required("admin", "auditor")
def visit(visit_id: int) -> ResponseReturnValue:
    row = db().get(VisitRow, visit_id)
    if row is None:
        abort(404)
    return _visit_page(row, VisitResultForm(cards_issued=row.cards_issued, remarks=row.remarks))


def _visit_page(row: VisitRow, form: VisitResultForm) -> str:
    return render_template(
        "visit.html",
        visit=row,
        facility=db().get(FacilityRow, row.facility_id),
        form=form,
    )


@bp.post("/visits/<int:visit_id>")
@roles_required("admin")
def record_results(visit_id: int) -> ResponseReturnValue:
    """Cards handed over (R20) and remarks (R21), recorded after the visit; audited."""
    row = db().get(VisitRow, visit_id)
    if row is None:
        abort(404)
    form = VisitResultForm()
    problems: list[str] = []
    valid = form.validate_on_submit()
    cards = (form.cards_issued.data or 0) if valid else 0
    if cards and row.kind != "card-issuance-support":
        problems.append(t("sites.cards_only_issuance"))
    if form.errors or problems:
        flash(t("not_saved", reason=refusal(form, problems)))
        return make_response(_visit_page(row, form), 400)
    row.cards_issued = cards
    row.remarks = (form.remarks.data or "").strip()
    # The entry names the visit and the count, not the remarks (free text).
    audit.record(db(), current_user.id, "visit-results", f"visit {row.id}", cards=cards)
    db().commit()
    flash(t("recorded"))
    return redirect(url_for("sites.visit", visit_id=row.id))
