"""Dashboard and reports (R21, R26, R27), in the browser and as CSV, XLSX and PDF exports.

A municipality user's counts are limited to their own municipality codes; asking for
another municipality's counts is a 403, not an empty table.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user, login_required
from sqlalchemy import func, select

from fieldkit.hub.crl import crl_status
from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.web import alarms, charts, counts, documents, exports
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.chains import device_chain
from fieldkit.hub.web.counts import ReportTable, Scope
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.models import VisitRow
from fieldkit.hub.web.places import choices, municipality_name
from fieldkit.hub.web.text import t
from fieldkit.pki import read_roster

bp = Blueprint("reports", __name__)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def scope_from_request() -> Scope:
    """The date range and municipalities asked for, checked against what the account sees."""
    date_from = request.args.get("from", "").strip()
    date_to = request.args.get("to", "").strip()
    for value in (date_from, date_to):
        if value and not DATE.match(value):
            abort(400, description=t("error.bad_date"))
    asked = [
        code.strip()
        for raw in request.args.getlist("municipality")
        for code in raw.split(",")
        if code.strip()
    ]
    if any(len(c) != 6 or not c.isdigit() for c in asked):
        abort(400, description=t("error.bad_municipality"))
    if current_user.role == "municipality":
        if any(not current_user.sees(c) for c in asked):
            abort(403)
        codes: tuple[str, ...] | None = tuple(asked) or current_user.municipalities
    else:
        codes = tuple(asked) or None
    return counts.covering(db(), Scope(date_from, date_to, codes))


def respond(
    tables: list[ReportTable], title: str, stem: str, fmt: str | None, keep: str | None = None
) -> ResponseReturnValue:
    """The tables as a page (with a button that keeps the PDF, when ``keep`` is its URL) or
    as a CSV, XLSX or PDF file."""
    if fmt is None:
        return render_template("report.html", tables=tables, title=title, stem=stem, keep=keep)
    if fmt not in exports.FORMATS:
        abort(404)
    body = exports.render(fmt, tables, title, hubweb().config.hubweb.pdf_font)
    return exports.attachment(body, exports.FORMATS[fmt], f"{stem}.{fmt}")


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
    by_municipality = [
        (municipality_name(code), n) for code, n in counts.municipality_series(db(), scope)
    ]
    return render_template(
        "dashboard.html",
        per_day=charts.columns(
            series,
            value_title=t("chart.applications"),
            category_title=t("chart.day"),
            short=lambda day: str(int(day[8:])),
            summary=_summary(series),
        )
        if series
        else None,
        by_municipality=charts.rows(
            by_municipality,
            value_title=t("chart.applications"),
            category_title=t("chart.municipality"),
            summary=_summary(by_municipality),
        )
        if by_municipality
        else None,
        waiting=db().execute(packet_query).all(),
        site=counts.by_site(db(), scope),
        days_done=len(days),
        programme_days=hubweb().config.hubweb.programme_days,
        # Admin and auditor see the kit's health; a lapsing CRL stops every tablet (issue 17).
        crl=crl_status(hubweb().pki) if current_user.role != "municipality" else None,
    )


def _summary(points: list[tuple[str, int]] | Sequence[tuple[str, int]]) -> str:
    """A chart's numbers in words, for screen readers (the SVG's description)."""
    return "、".join(t("chart.point", label=label, value=value) for label, value in points)


@bp.get("/reports")
@login_required
def index() -> ResponseReturnValue:
    known = choices()
    if current_user.role == "municipality":
        mine = set(current_user.municipalities)
        known = [(c, n) for c, n in known if c in mine] or [
            (c, municipality_name(c)) for c in sorted(mine)
        ]
    args = {k: v for k, v in request.args.items() if k != "lang"}
    return render_template(
        "reports.html", reports=counts.REPORTS, args=args, municipality_choices=known
    )


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
    tables = _work_log_tables(visit)
    keep = url_for("reports.keep_work_log", visit_id=visit_id)
    return respond(tables, tables[0].title, f"worklog-{visit.date}-{visit_id}", fmt, keep)


def _work_log_tables(visit: VisitRow) -> list[ReportTable]:
    roster = read_roster(hubweb().pki.roster)
    return counts.work_log(db(), visit, Scope(), device_chain(db(), roster, visit.device_id))


@bp.post("/reports/worklog/<int:visit_id>/keep")
@roles_required("admin")
def keep_work_log(visit_id: int) -> ResponseReturnValue:
    """Keep the work log's PDF as it is now, as the next version (R21)."""
    visit = db().get(VisitRow, visit_id)
    if visit is None:
        abort(404)
    tables = _work_log_tables(visit)
    body = exports.to_pdf(tables, tables[0].title, hubweb().config.hubweb.pdf_font)
    title = t("report.worklog_kept_title", date=visit.date, visit=visit_id)
    kept = documents.keep(db(), f"worklog-{visit_id}", title, body, current_user.id)
    db().commit()
    flash(t("reports.kept", title=title, version=kept.version, sha256=kept.sha256))
    return redirect(url_for("reports.work_log", visit_id=visit_id))


@bp.get("/reports/monthly/<month>")
@bp.get("/reports/monthly/<month>.<fmt>")
@roles_required("admin", "auditor")
def monthly(month: str, fmt: str | None = None) -> ResponseReturnValue:
    if not MONTH.match(month):
        abort(400, description=t("error.bad_month"))
    # Device alarms become incident drafts first: the incident section is never silently empty.
    alarms.raise_and_commit(db(), read_roster(hubweb().pki.roster))
    tables = counts.monthly(db(), month, Scope())
    return respond(tables, tables[0].title, f"monthly-{month}", fmt)


@bp.get("/reports/completion")
@bp.get("/reports/completion.<fmt>")
@roles_required("admin", "auditor")
def completion(fmt: str | None = None) -> ResponseReturnValue:
    tables = counts.completion(db(), scope_from_request(), hubweb().config.hubweb.programme_days)
    return respond(tables, tables[0].title, f"completion-{dt.date.today():%Y%m%d}", fmt)
