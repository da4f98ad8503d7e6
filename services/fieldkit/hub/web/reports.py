"""Dashboard and reports (R21, R26, R27), in the browser and as CSV, XLSX and PDF exports.

A municipality user's counts are limited to their own municipality codes; asking for
another municipality's counts is a 403, not an empty table.
"""

from __future__ import annotations

import datetime as dt
import re

from flask import Blueprint, Response, abort, render_template, request
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import func, select

from fieldkit.hub.crl import crl_status
from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web import counts, exports
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import ReportTable, Scope
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.models import VisitRow

bp = Blueprint("reports", __name__)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def scope_from_request() -> Scope:
    """The date range and municipalities asked for, checked against what the account sees."""
    date_from = request.args.get("from", "").strip()
    date_to = request.args.get("to", "").strip()
    for name, value in (("from", date_from), ("to", date_to)):
        if value and not DATE.match(value):
            abort(400, description=f"'{name}' must be a date YYYY-MM-DD")
    asked = [
        code.strip()
        for raw in request.args.getlist("municipality")
        for code in raw.split(",")
        if code.strip()
    ]
    if any(len(c) != 6 or not c.isdigit() for c in asked):
        abort(400, description="'municipality' must be 6-digit codes")
    if current_user.role == "municipality":
        if any(not current_user.sees(c) for c in asked):
            abort(403)
        codes: tuple[str, ...] | None = tuple(asked) or current_user.municipalities
    else:
        codes = tuple(asked) or None
    return Scope(date_from, date_to, codes)


def respond(
    tables: list[ReportTable], title: str, stem: str, fmt: str | None
) -> ResponseReturnValue:
    if fmt is None:
        return render_template("report.html", tables=tables, title=title, stem=stem)
    if fmt not in exports.FORMATS:
        abort(404)
    body = exports.render(fmt, tables, title, hubweb().config.hubweb.pdf_font)
    response = Response(body, mimetype=exports.FORMATS[fmt])
    response.headers["Content-Disposition"] = f'attachment; filename="{stem}.{fmt}"'
    return response


@bp.get("/")
@login_required
def dashboard() -> ResponseReturnValue:
    scope = scope_from_request()
    series = counts.daily_series(db(), scope)
    packet_query = select(SealedPacketRow.municipality, func.count()).group_by(
        SealedPacketRow.municipality
    )
    if scope.municipalities is not None:
        packet_query = packet_query.where(SealedPacketRow.municipality.in_(scope.municipalities))
    days = counts.visit_days(db())
    by_municipality = counts.municipality_series(db(), scope)
    return render_template(
        "dashboard.html",
        series=series,
        peak=max((c for _, c in series), default=0),
        by_municipality=by_municipality,
        municipality_peak=max((c for _, c in by_municipality), default=0),
        waiting=db().execute(packet_query).all(),
        site=counts.by_site(db(), scope),
        days_done=len(days),
        programme_days=hubweb().config.hubweb.programme_days,
        # Admin and auditor see the kit's health; a lapsing CRL stops every tablet (issue 17).
        crl=crl_status(hubweb().pki) if current_user.role != "municipality" else None,
    )


@bp.get("/reports")
@login_required
def index() -> ResponseReturnValue:
    return render_template("reports.html", reports=counts.REPORTS, args=request.args)


@bp.get("/reports/counts/<name>")
@bp.get("/reports/counts/<name>.<fmt>")
@login_required
def count_report(name: str, fmt: str | None = None) -> ResponseReturnValue:
    build = counts.REPORTS.get(name)
    if build is None:
        abort(404)
    table = build(db(), scope_from_request())
    return respond([table], table.title, f"counts-{name}", fmt)


@bp.get("/reports/worklog/<int:visit_id>")
@bp.get("/reports/worklog/<int:visit_id>.<fmt>")
@roles_required("admin", "auditor")
def work_log(visit_id: int, fmt: str | None = None) -> ResponseReturnValue:
    visit = db().get(VisitRow, visit_id)
    if visit is None:
        abort(404)
    tables = counts.work_log(db(), visit, Scope())
    return respond(tables, tables[0].title, f"worklog-{visit.date}-{visit_id}", fmt)


@bp.get("/reports/monthly/<month>")
@bp.get("/reports/monthly/<month>.<fmt>")
@roles_required("admin", "auditor")
def monthly(month: str, fmt: str | None = None) -> ResponseReturnValue:
    if not MONTH.match(month):
        abort(400, description="month must be YYYY-MM")
    tables = counts.monthly(db(), month, Scope())
    return respond(tables, tables[0].title, f"monthly-{month}", fmt)


@bp.get("/reports/completion")
@bp.get("/reports/completion.<fmt>")
@roles_required("admin", "auditor")
def completion(fmt: str | None = None) -> ResponseReturnValue:
    tables = counts.completion(db(), scope_from_request(), hubweb().config.hubweb.programme_days)
    return respond(tables, tables[0].title, f"completion-{dt.date.today():%Y%m%d}", fmt)
