"""Devices (R13, R24): the roster with each tablet's health; enrolment codes and revocation.

The admin makes a one-time enrolment code for a device id (shown once; the hub keeps its
hash); the tablet makes its own keys and enrols over EST (``fieldkit.hub.enrolment``). No
page hands out a device's private key: the hub has none. Revocation puts the certificate on
the CRL, which the hub broker reloads by itself within a second.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from wtforms import FloatField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from fieldkit.hub.db import AuditRow, ErasureRow, HealthRow, RecordRow
from fieldkit.hub.enrolment import CodeError, create_code
from fieldkit.hub.roster import current_version
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.pki import PkiError, read_roster

bp = Blueprint("devices", __name__, url_prefix="/devices")


@dataclass
class DeviceView:
    device_id: str
    revoked: bool
    last_seen: str
    av_age: str
    av_findings: str
    backlog: str
    version: str
    last_erasure: str
    operators: str = "—"
    alarms: str = "—"


class EnrolForm(FlaskForm):
    device_id = StringField("端末ID / Device id", validators=[DataRequired(), Length(max=63)])
    site = StringField("設置場所 / Site", validators=[Optional(), Length(max=200)])
    hours = FloatField(
        "有効時間 / Valid (hours)", default=24, validators=[Optional(), NumberRange(0.1, 720)]
    )


class RevokeForm(FlaskForm):
    pass


def _when(at: float | None) -> str:
    if not at:
        return "—"
    return dt.datetime.fromtimestamp(at, dt.timezone(dt.timedelta(hours=9))).strftime(
        "%Y-%m-%d %H:%M"
    )


def _av_age(report: dict[str, Any], now: float) -> str:
    """Age of the antivirus definitions, from whichever field the health report carries."""
    av = report.get("antivirus") or {}
    if "definitions_age_hours" in av:
        return f"{float(av['definitions_age_hours']):.0f} h"
    for key in ("definitions_at", "signatures_at", "updated_at"):
        if isinstance(av.get(key), int | float):
            return f"{(now - float(av[key])) / 3600:.0f} h"
    return "—"


def _av_findings(report: dict[str, Any]) -> str:
    """Open antivirus findings from the last scan, and whether sessions are refused for them."""
    av = report.get("antivirus") or {}
    if "findings" not in av:
        return "—"
    count = int(av["findings"])
    if count == 0:
        return "0"
    return f"{count} 検出 detected" + (
        " / 受付停止 sessions refused" if not av.get("gate_allowed", True) else ""
    )


def _operators(session: Session, device_id: str, current: str | None) -> str:
    """Whether the tablet holds the hub's operator roster: a tablet behind still accepts an
    operator disabled here, so the admin must see it."""
    applied = session.scalars(
        select(AuditRow)
        .where(AuditRow.device_id == device_id, AuditRow.action == "operators-applied")
        .order_by(AuditRow.at.desc())
        .limit(1)
    ).first()
    if current is None:
        return "—"
    if applied is None:
        return "未受信 not received"
    if applied.detail.get("version") == current:
        return "最新 current"
    return f"古い behind (applied {_when(applied.at)})"


# What a tablet's kiosk records when the counter fails closed (issue 15): an erasure that was
# not proven, and every session it refused to start because of it, a silent holder or the
# antivirus gate. Each is an alarm for the admin and the auditor.
ALARM_ACTIONS = ("session-refused:%", "wipe-failed%")
ALARM_WINDOW = 24 * 3600


def _alarms(session: Session, device_id: str, now: float) -> str:
    """Alarms of the last 24 hours: how many, and the latest with its time."""
    rows = session.scalars(
        select(AuditRow)
        .where(
            AuditRow.device_id == device_id,
            AuditRow.at >= now - ALARM_WINDOW,
            AuditRow.action.like(ALARM_ACTIONS[0]) | AuditRow.action.like(ALARM_ACTIONS[1]),
        )
        .order_by(AuditRow.at.desc())
    ).all()
    if not rows:
        return "—"
    return f"{len(rows)}: {rows[0].action} {_when(rows[0].at)}"


def device_views() -> list[DeviceView]:
    session = db()
    roster = read_roster(hubweb().pki.roster)
    current = current_version(session)
    seen = dict(
        session.execute(
            select(RecordRow.device_id, func.max(RecordRow.received_at)).group_by(
                RecordRow.device_id
            )
        ).all()
    )
    now = time.time()
    views = []
    for device_id in sorted(set(roster) | set(seen)):
        health = session.scalars(
            select(HealthRow)
            .where(HealthRow.device_id == device_id)
            .order_by(HealthRow.at.desc())
            .limit(1)
        ).first()
        erasure = session.scalars(
            select(ErasureRow)
            .where(ErasureRow.device_id == device_id)
            .order_by(ErasureRow.at.desc())
            .limit(1)
        ).first()
        report = health.report if health is not None else {}
        detail = report.get("detail") or {}
        entry = roster.get(device_id)
        views.append(
            DeviceView(
                device_id=device_id,
                revoked=entry.revoked if entry else True,
                last_seen=_when(seen.get(device_id)),
                av_age=_av_age(report, now),
                av_findings=_av_findings(report),
                backlog=str(detail.get("outbox_backlog", "—")),
                version=str(detail.get("version", "—")),
                last_erasure=(
                    f"{_when(erasure.at)} {erasure.level} "
                    f"{'verified' if erasure.verified else 'NOT VERIFIED'}"
                    if erasure is not None
                    else "—"
                ),
                operators=_operators(session, device_id, current),
                alarms=_alarms(session, device_id, now),
            )
        )
    return views


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    return render_template(
        "devices.html", devices=device_views(), enrol=EnrolForm(), revoke=RevokeForm()
    )


@bp.post("/enrol")
@roles_required("admin")
def enrol() -> ResponseReturnValue:
    """A one-time enrolment code, shown on this page once (never in a cookie or a log)."""
    form = EnrolForm()
    if not form.validate_on_submit():
        abort(400, description="device id missing or too long, or hours out of range")
    device_id = (form.device_id.data or "").strip()
    try:
        code, expires = create_code(
            db(),
            device_id,
            actor=current_user.id,
            hours=form.hours.data or hubweb().config.enrol.code_hours,
            site=(form.site.data or "").strip(),
        )
    except CodeError as exc:
        flash(f"コードを作れません / No code made: {exc}")
        return redirect(url_for("devices.index"))
    db().commit()
    issued = {"device_id": device_id, "code": code, "until": _when(expires)}
    return render_template(
        "devices.html",
        devices=device_views(),
        enrol=EnrolForm(formdata=None),
        revoke=RevokeForm(),
        issued=issued,
    )


@bp.post("/<device_id>/revoke")
@roles_required("admin")
def revoke(device_id: str) -> ResponseReturnValue:
    if not RevokeForm().validate_on_submit():
        abort(400, description="the form has expired; reload the page")
    try:
        serial = hubweb().pki.revoke(device_id)
    except PkiError as exc:
        flash(f"失効できません / Not revoked: {exc}")
        return redirect(url_for("devices.index"))
    audit.record(db(), current_user.id, "device-revoke", device_id, serial=f"{serial:x}")
    db().commit()
    flash(f"{device_id} を失効しました / revoked")
    return redirect(url_for("devices.index"))
