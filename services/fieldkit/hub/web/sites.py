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
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp

from fieldkit.hub.web import audit, counts
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.models import (
    FACILITY_KINDS,
    VISIT_KINDS,
    FacilityRow,
    OperatorRow,
    VisitRequestRow,
    VisitRow,
)

bp = Blueprint("sites", __name__, url_prefix="/sites")
KIND_LABELS = {
    "welfare": "福祉施設 welfare",
    "medical": "医療機関 medical",
    "public": "公共施設 public",
    "post-office": "郵便局 post office",
    "other": "その他 other",
    "application-support": "申請サポート application support",
    "card-issuance-support": "交付支援 card issuance support",
}
TIME = r"^([01]\d|2[0-3]):[0-5]\d$"


class FacilityForm(FlaskForm):
    name = StringField("施設名 / Name", validators=[DataRequired(), Length(max=200)])
    kind = SelectField("種別 / Type", choices=[(k, KIND_LABELS[k]) for k in FACILITY_KINDS])
    municipality = StringField(
        "市区町村コード / Municipality code",
        validators=[DataRequired(), Regexp(r"^\d{6}$", message="6 digits")],
    )
    address = StringField("所在地 / Address", validators=[Optional(), Length(max=300)])


class RequestForm(FlaskForm):
    facility_id = SelectField("施設 / Facility", coerce=int)
    wanted_date = DateField("希望日 / Wanted date", validators=[DataRequired()])
    expected_people = IntegerField(
        "見込み人数 / Expected people", validators=[Optional(), NumberRange(min=0, max=10000)]
    )


class VisitForm(FlaskForm):
    facility_id = SelectField("施設 / Facility", coerce=int)
    date = DateField("日付 / Date", validators=[DataRequired()])
    kind = SelectField("種別 / Kind", choices=[(k, KIND_LABELS[k]) for k in VISIT_KINDS])
    device_id = StringField("端末 / Device", validators=[DataRequired(), Length(max=63)])
    lead = StringField("責任者(現場) / Site lead", validators=[DataRequired(), Length(max=32)])
    staff = StringField(
        "従事者 (カンマ区切り) / Staff, comma-separated",
        validators=[DataRequired(), Length(max=500)],
    )
    start_time = StringField("開始 / Start", validators=[DataRequired(), Regexp(TIME)])
    end_time = StringField("終了 / End", validators=[DataRequired(), Regexp(TIME)])
    incidents = TextAreaField("事故等 / Incidents", validators=[Optional(), Length(max=2000)])


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
        problems.append("二人以上必要です / two or more staff are needed")
    known = {o.operator_id for o in db().scalars(select(OperatorRow).where(~OperatorRow.disabled))}
    unknown = [s for s in staff if s not in known]
    if unknown:
        problems.append("未登録の従事者 / not in the registry: " + ", ".join(unknown))
    if (form.start_time.data or "") >= (form.end_time.data or ""):
        problems.append("終了は開始より後 / the end must be after the start")
    form.staff.data = ",".join(staff)
    return problems


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    facility_form, request_form, visit_form = FacilityForm(), RequestForm(), VisitForm()
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
        labels=KIND_LABELS,
        days_done=len(days),
        target=target,
        percent=min(100, round(100 * len(days) / target)),
        facility_form=facility_form,
        request_form=request_form,
        visit_form=visit_form,
    )


def _refuse(form: FlaskForm, extra: list[str] | None = None) -> ResponseReturnValue:
    problems = [f"{k}: {', '.join(v)}" for k, v in form.errors.items()] + (extra or [])
    flash("保存できません / Not saved: " + "; ".join(problems))
    return make_response(index(), 400)  # the page again, with the reason shown


@bp.post("/facilities")
@roles_required("admin")
def add_facility() -> ResponseReturnValue:
    form = FacilityForm()
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
        abort(400, description="month must be YYYY-MM")
    year, mon = (int(part) for part in month.split("-"))
    first, last = f"{month}-01", f"{month}-31"
    names = dict(_facility_choices())
    days: dict[str, list[str]] = {}
    for visit in db().scalars(
        select(VisitRow).where(VisitRow.date >= first, VisitRow.date <= last)
    ):
        days.setdefault(visit.date, []).append(
            f"{names.get(visit.facility_id, '')} ({KIND_LABELS[visit.kind].split()[0]})"
        )
    for wanted in db().scalars(
        select(VisitRequestRow).where(
            VisitRequestRow.wanted_date >= first,
            VisitRequestRow.wanted_date <= last,
            VisitRequestRow.status == "open",
        )
    ):
        days.setdefault(wanted.wanted_date, []).append(
            f"依頼 request: {names.get(wanted.facility_id, '')}"
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
