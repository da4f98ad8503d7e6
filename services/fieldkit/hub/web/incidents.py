"""Incident reports (R25): recorded at once with what, how much, where and how, exported
for the prefecture as CSV, XLSX or PDF. Recording one is an audited change.

Device alarms (a virus found, a failed wipe, a chain gap, a revoked device) become drafts
(``alarms.raise_drafts``) whenever the list is shown; the admin completes each one."""

from __future__ import annotations

import datetime as dt
import time

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from wtforms import TextAreaField

from fieldkit.hub.web import alarms, audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import PRESENT, REQUIRED, DateInput, HubForm, length, refusal
from fieldkit.hub.web.models import IncidentRow
from fieldkit.hub.web.reports import respond
from fieldkit.hub.web.text import lazy, t
from fieldkit.pki import read_roster

bp = Blueprint("incidents", __name__, url_prefix="/incidents")
TEXT = [REQUIRED, length(4000)]


class IncidentForm(HubForm):
    occurred_on = DateInput(lazy("incidents.occurred"), validators=[PRESENT])
    what = TextAreaField(lazy("incidents.what_field"), validators=TEXT)
    how_much = TextAreaField(lazy("incidents.how_much_field"), validators=TEXT)
    location = TextAreaField(lazy("incidents.where_field"), validators=TEXT)
    how = TextAreaField(lazy("incidents.how_field"), validators=TEXT)
    response = TextAreaField(lazy("incidents.response_field"), validators=[length(4000)])


def incident_table(row: IncidentRow) -> ReportTable:
    reported = dt.datetime.fromtimestamp(row.reported_at, JST).strftime("%Y-%m-%d %H:%M")
    return ReportTable(
        t("incidents.report_title", number=row.id),
        [t("col.item"), t("col.value")],
        [
            [t("incidents.reported_at"), reported],
            [t("incidents.reported_by"), row.reported_by],
            [t("incidents.occurred"), row.occurred_on],
            [t("incidents.what"), row.what],
            [t("incidents.how_much"), row.how_much],
            [t("incidents.where"), row.location],
            [t("incidents.how"), row.how],
            [t("incidents.response"), row.response or "—"],
            [t("incidents.status"), t(f"incident.{row.status}")],
        ],
    )


def raise_alarm_drafts() -> None:
    """Drafts for the device alarms that have none yet: the hub's own entries, whoever looks."""
    alarms.raise_and_commit(db(), read_roster(hubweb().pki.roster))


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    raise_alarm_drafts()
    rows = db().scalars(select(IncidentRow).order_by(IncidentRow.id.desc())).all()
    return render_template("incidents.html", incidents=rows, form=IncidentForm())


@bp.get("/<int:incident_id>/complete")
@roles_required("admin", "auditor")
def draft(incident_id: int) -> ResponseReturnValue:
    row = db().get(IncidentRow, incident_id)
    if row is None or row.status != "draft":
        abort(404)
    values = {name: getattr(row, name) for name in ("what", "how_much", "location", "how")}
    form = IncidentForm(data={**values, "occurred_on": dt.date.fromisoformat(row.occurred_on)})
    return render_template("incident_draft.html", incident=row, form=form)


@bp.post("/<int:incident_id>/complete")
@roles_required("admin")
def complete(incident_id: int) -> ResponseReturnValue:
    """The admin completes a draft the hub raised: it becomes a reported incident."""
    row = db().get(IncidentRow, incident_id)
    if row is None or row.status != "draft":
        abort(404)
    form = IncidentForm()
    if not form.validate_on_submit() or form.occurred_on.data is None:
        flash(t("not_recorded", reason=refusal(form)))
        page = render_template("incident_draft.html", incident=row, form=form)
        return make_response(page, 400)
    row.occurred_on = form.occurred_on.data.isoformat()
    for name in ("what", "how_much", "location", "how", "response"):
        setattr(row, name, getattr(form, name).data or "")
    row.status = "reported"
    row.reported_by = current_user.id
    row.reported_at = time.time()
    audit.record(db(), current_user.id, "incident-complete", f"incident {row.id}")
    db().commit()
    return redirect(url_for("incidents.report", incident_id=row.id))


@bp.post("")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = IncidentForm()
    if not form.validate_on_submit() or form.occurred_on.data is None:
        flash(t("not_recorded", reason=refusal(form)))
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
