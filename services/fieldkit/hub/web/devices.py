"""Devices (R13, R24): the roster with each tablet's health; enrolment codes and revocation.

The admin makes a one-time enrolment code for a device id (shown once; the hub keeps its
hash); the tablet makes its own keys and enrols over EST (``fieldkit.hub.enrolment``). No
page hands out a device's private key: the hub has none. Revocation puts the certificate on
the CRL, which the hub broker reloads by itself within a second.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import Text, cast, func, select
from sqlalchemy.orm import Session
from wtforms import FloatField, StringField
from wtforms.validators import NumberRange, Optional

from fieldkit.hub.db import AuditRow, DeviceStatusRow, ErasureRow, HealthRow, RecordRow
from fieldkit.hub.enrolment import CodeError, create_code
from fieldkit.hub.roster import current_version
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import REQUIRED, HubForm, length
from fieldkit.hub.web.places import municipality_name, receivers_offer
from fieldkit.hub.web.text import lazy, t
from fieldkit.municipalities import Offer
from fieldkit.pki import PkiError, read_roster

bp = Blueprint("devices", __name__, url_prefix="/devices")
DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


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
    kernel_audit: str = "—"
    integrity: str = "—"
    # A red row: the last erasure failed, a virus was found, or an alarm in the last 24 h.
    attention: bool = False


class EnrolForm(HubForm):
    device_id = StringField(lazy("devices.device_id"), validators=[REQUIRED, length(63)])
    site = StringField(lazy("devices.site"), validators=[Optional(), length(200)])
    hours = FloatField(
        lazy("devices.hours"), default=24, validators=[Optional(), NumberRange(0.1, 720)]
    )


class RevokeForm(HubForm):
    pass


def _when(at: float | None) -> str:
    if not at:
        return "—"
    return dt.datetime.fromtimestamp(at, JST).strftime("%Y-%m-%d %H:%M")


def _age(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 48:
        return t("hours", n=f"{hours:.0f}")
    return t("days", n=f"{hours / 24:.0f}")


def _av_age(report: dict[str, Any] | None, now: float) -> str:
    """Age of the antivirus definitions, from whichever field the health report carries."""
    av = (report or {}).get("antivirus") or {}
    if "definitions_age_hours" in av:
        return _age(float(av["definitions_age_hours"]) * 3600)
    for key in ("definitions_at", "signatures_at", "updated_at"):
        if isinstance(av.get(key), int | float):
            return _age(now - float(av[key]))
    if av:
        # The antivirus reported, without definitions (never updated): say so.
        return t("devices.no_definitions")
    return t("devices.not_reported")


def _av_findings(report: dict[str, Any] | None) -> tuple[str, bool]:
    """Open antivirus findings from the last scan (and whether sessions are refused)."""
    av = (report or {}).get("antivirus") or {}
    if "findings" not in av:
        return t("devices.not_reported"), False
    count = int(av["findings"])
    if count == 0:
        return "0", False
    refused = not av.get("gate_allowed", True)
    return t("devices.findings_refused" if refused else "devices.findings", n=count), True


def _backlog(status: DeviceStatusRow | None) -> tuple[str, str]:
    """The outbox backlog and the software version, from the tablet's latest status."""
    if status is None:
        return t("devices.not_reported"), t("devices.not_reported")
    pending, oldest = status.outbox_pending, status.outbox_oldest_at
    backlog = (
        t("devices.backlog_oldest", n=pending, age=_age(max(0.0, status.reported_at - oldest)))
        if pending and oldest
        else t("devices.backlog_value", n=pending)
    )
    if status.outbox_refused:
        backlog += t("devices.backlog_refused", n=status.outbox_refused)
    return backlog + t("devices.reported_at", at=_when(status.reported_at)), status.version


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
        return t("devices.roster_missing")
    if applied.detail.get("version") == current:
        return t("devices.roster_current")
    return t("devices.roster_behind", at=_when(applied.at))


# What a tablet's kiosk records when the counter fails closed (issue 15): an erasure that was
# not proven, and every session it refused to start because of it, a silent holder or the
# antivirus gate. Each is an alarm for the admin and the auditor.
ALARM_ACTIONS = ("session-refused:%", "wipe-failed%")
ALARM_WINDOW = 24 * 3600


def _alarms(session: Session, device_id: str, now: float) -> tuple[str, bool]:
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
        return t("none"), False
    kind = "session-refused" if rows[0].action.startswith("session-refused") else "wipe-failed"
    what = t(f"alarm.{kind}")
    return t("devices.alarm_count", n=len(rows), what=what, at=_when(rows[0].at)), True


# A device's health reports: the antivirus's, after each update and scan.
HEALTH_LOOKBACK = 50


def _antivirus_report(session: Session, device_id: str) -> dict[str, Any] | None:
    for row in session.scalars(
        select(HealthRow)
        .where(HealthRow.device_id == device_id)
        .order_by(HealthRow.at.desc())
        .limit(HEALTH_LOOKBACK)
    ):
        if (row.report or {}).get("antivirus"):
            return row.report
    return None


def _latest_with(session: Session, device_id: str, field: str) -> HealthRow | None:
    """The device's latest health report that carries ``field`` (an object, not null): the
    reports are JSON as ingest stored them (``"field": {`` in both SQLite's and PostgreSQL's
    text of the column), so the database finds it, however many other reports came since."""
    return session.scalars(
        select(HealthRow)
        .where(
            HealthRow.device_id == device_id,
            cast(HealthRow.report, Text).like(f'%"{field}": {{%'),
        )
        .order_by(HealthRow.at.desc())
        .limit(1)
    ).first()


def _integrity(session: Session, device_id: str) -> tuple[str, bool]:
    """The last file-integrity check (issue 19 item 3): OK, or what changed (red)."""
    row = _latest_with(session, device_id, "integrity")
    if row is None:
        return t("devices.not_reported"), False
    result = row.report["integrity"]
    if result.get("ok"):
        return t("devices.integrity_ok", at=_when(row.at)), False
    if result.get("error"):
        return t("devices.integrity_error", at=_when(row.at), error=result["error"]), True
    paths = [str(p.get("path")) for p in result.get("paths") or []]
    total = sum(int(result.get(k) or 0) for k in ("added", "removed", "changed"))
    shown = ", ".join(paths[:5]) + (" …" if total > 5 else "")
    return t(
        "devices.integrity_changed",
        at=_when(row.at),
        added=result.get("added", 0),
        removed=result.get("removed", 0),
        changed=result.get("changed", 0),
        paths=shown,
    ), True


def _kernel_audit(session: Session, device_id: str) -> tuple[str, bool]:
    """The last kernel audit summary (issue 19 item 2): events per rule key since the one
    before, lost events, whether auditd runs. Red when auditd is stopped or events were lost."""
    row = _latest_with(session, device_id, "kernel_audit")
    if row is None:
        return t("devices.not_reported"), False
    summary = row.report["kernel_audit"]
    keys = summary.get("keys") or {}
    listed = ", ".join(f"{k} {n}" for k, n in sorted(keys.items())) or t("none")
    running = summary.get("daemon") == "running"
    lost = summary.get("lost_since")
    lost = summary.get("lost", 0) if lost is None else lost
    text = t(
        "devices.audit_summary",
        at=_when(row.at),
        window=t("devices.audit_window" if summary.get("since") else "devices.audit_first"),
        events=summary.get("events", 0),
        keys=listed,
        lost=lost,
        daemon=t("devices.audit_running" if running else "devices.audit_stopped"),
    )
    if summary.get("enabled") != 2:
        text += t("devices.audit_unlocked")
    return text, (not running) or bool(lost)


def device_views() -> list[DeviceView]:
    session = db()
    roster = read_roster(hubweb().pki.roster)
    current = current_version(session, hubweb().pki.receivers())
    seen = dict(
        session.execute(
            select(RecordRow.device_id, func.max(RecordRow.received_at)).group_by(
                RecordRow.device_id
            )
        ).all()
    )
    # Last contact: the latest record or status report the hub received from the tablet.
    for status_row in session.scalars(select(DeviceStatusRow)):
        seen[status_row.device_id] = max(
            seen.get(status_row.device_id, 0.0), status_row.received_at
        )
    now = time.time()
    views = []
    for device_id in sorted(set(roster) | set(seen)):
        erasure = session.scalars(
            select(ErasureRow)
            .where(ErasureRow.device_id == device_id)
            .order_by(ErasureRow.at.desc())
            .limit(1)
        ).first()
        antivirus = _antivirus_report(session, device_id)
        findings, virus = _av_findings(antivirus)
        backlog, version = _backlog(session.get(DeviceStatusRow, device_id))
        alarms, alarmed = _alarms(session, device_id, now)
        integrity, tampered = _integrity(session, device_id)
        kernel_audit, audit_trouble = _kernel_audit(session, device_id)
        entry = roster.get(device_id)
        wiped = erasure is not None and erasure.verified and erasure.signed
        views.append(
            DeviceView(
                device_id=device_id,
                revoked=entry.revoked if entry else True,
                last_seen=_when(seen.get(device_id)) if device_id in seen else t("devices.never"),
                av_age=_av_age(antivirus, now),
                av_findings=findings,
                backlog=backlog,
                version=version,
                last_erasure=(
                    t(
                        "devices.wipe_ok" if wiped else "devices.wipe_failed",
                        at=_when(erasure.at),
                        level=t(f"level.{erasure.level}"),
                    )
                    if erasure is not None
                    else t("devices.not_reported")
                ),
                operators=_operators(session, device_id, current),
                alarms=alarms,
                kernel_audit=kernel_audit,
                integrity=integrity,
                attention=virus
                or alarmed
                or tampered
                or audit_trouble
                or (erasure is not None and not wiped),
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
        abort(400, description=t("devices.bad_enrol"))
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
        # The reasons create_code gives are the command line's (English): the page says its own.
        reason = t("error.bad_device") if not DEVICE_ID.match(device_id) else str(exc)
        flash(t("devices.no_code", reason=reason))
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
        abort(400, description=t("error.csrf"))
    try:
        serial = hubweb().pki.revoke(device_id)
    except PkiError as exc:
        flash(t("devices.not_revoked", reason=str(exc)))
        return redirect(url_for("devices.index"))
    audit.record(db(), current_user.id, "device-revoke", device_id, serial=f"{serial:x}")
    db().commit()
    flash(t("devices.revoked", device=device_id))
    return redirect(url_for("devices.index"))


@bp.get("/municipalities", endpoint="municipalities")
@roles_required("admin", "auditor")
def municipalities() -> ResponseReturnValue:
    """Which municipalities can receive packets (a receiver key on the hub) and which the
    tablets offer for forwarding only, with the reason (issue 21 item 4)."""
    fingerprints = hubweb().pki.receiver_key_ids()
    return render_template(
        "municipalities.html",
        offer=labelled(receivers_offer()),
        fingerprints=fingerprints,
    )


@dataclass(frozen=True)
class Named:
    code: str
    label: str


@dataclass(frozen=True)
class NamedOffer:
    receivers: list[Named]
    forward_only: list[Named]
    unknown_keys: list[str]


def labelled(offer: Offer) -> NamedOffer:
    return NamedOffer(
        receivers=[Named(m.code, municipality_name(m.code)) for m in offer.receivers],
        forward_only=[Named(m.code, municipality_name(m.code)) for m in offer.forward_only],
        unknown_keys=offer.unknown_keys,
    )
