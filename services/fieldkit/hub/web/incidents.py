"""Incident reports (R25): recorded at once with what, how much, where and how, exported
for the prefecture as CSV, XLSX or PDF. Recording one is an audited change."""

from __future__ import annotations

import datetime as dt
import time

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, TextAreaField
from wtforms.validators import DataRequired, Length

from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.models import IncidentRow
from fieldkit.hub.web.reports import respond

bp = Blueprint("incidents", __name__, url_prefix="/incidents")
TEXT = [DataRequired(), Length(max=4000)]


class IncidentForm(FlaskForm):
    occurred_on = DateField("発生日 / Date", validators=[DataRequired()])
    what = TextAreaField("何が / What happened", validators=TEXT)
    how_much = TextAreaField("どれだけ / How much (件数・範囲)", validators=TEXT)
    location = TextAreaField("どこで / Where", validators=TEXT)
    how = TextAreaField("どのように / How", validators=TEXT)
    response = TextAreaField("対応 / Response", validators=[Length(max=4000)])


def incident_table(row: IncidentRow) -> ReportTable:
    reported = dt.datetime.fromtimestamp(row.reported_at, JST).strftime("%Y-%m-%d %H:%M")
    return ReportTable(
        f"事故報告 Incident report No. {row.id}",
        ["項目 item", "内容 value"],
        [
            ["報告日時 reported", reported],
            ["報告者 reported by", row.reported_by],
            ["発生日 occurred", row.occurred_on],
            ["何が what", row.what],
            ["どれだけ how much", row.how_much],
            ["どこで where", row.location],
            ["どのように how", row.how],
            ["対応 response", row.response or "—"],
        ],
    )


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    rows = db().scalars(select(IncidentRow).order_by(IncidentRow.id.desc())).all()
    return render_template("incidents.html", incidents=rows, form=IncidentForm())


@bp.post("")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = IncidentForm()
    if not form.validate_on_submit() or form.occurred_on.data is None:
        problems = "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items())
        flash(f"記録できません / Not recorded: {problems}")
        return make_response(index(), 400)
    row = IncidentRow(
        reported_at=time.time(),
        reported_by=current_user.id,
        occurred_on=form.occurred_on.data.isoformat(),
        what=form.what.data or "",
        how_much=form.how_much.data or "",
        location=form.location.data or "",
        how=form.how.data or "",
        response=form.response.data or "",
    )
    db().add(row)
    db().flush()
    # The audit entry names the incident, not its content (it may describe personal data).
    audit.record(db(), current_user.id, "incident-report", f"incident {row.id}")
    db().commit()
    return redirect(url_for("incidents.report", incident_id=row.id))


@bp.get("/<int:incident_id>")
@bp.get("/<int:incident_id>.<fmt>")
@roles_required("admin", "auditor")
def report(incident_id: int, fmt: str | None = None) -> ResponseReturnValue:
    row = db().get(IncidentRow, incident_id)
    if row is None:
        abort(404)
    table = incident_table(row)
    return respond([table], table.title, f"incident-{incident_id}", fmt)
