"""Erasure evidence (R24), per day and optionally per device: the devices' own erasure records
and whether each device's chain of them is intact, the hub's erasures of picked-up packets,
contract-end sanitization certificates (uploaded here and checked), and each device's
certificate state; exportable as a 消去記録.

What the hub checks, so an auditor need not take a tablet's word:
- each erasure record hashes to itself and is signed by the device's enrolled key (ingest);
- a device's records, followed by their links from the first, form one chain with no gap or
  fork (a record that never arrived shows as the records after it not being reached);
- a sanitization certificate is signed by the same enrolled key and closes that chain: the
  records the hub holds end exactly where the certificate says the device's chain ended.
The auditor can repeat the last two offline: ``/evidence/records/<device>.jsonl`` is the
input of ``fieldkit certificate verify CERT --records FILE``.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass

from flask import (
    Blueprint,
    Response,
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
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from fieldkit.hub.db import AuditRow, ErasureRow
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.chains import device_chain, device_records, enrolled_key, enrolled_keys
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import HubForm, refusal
from fieldkit.hub.web.models import CertificateRow, PacketErasureRow
from fieldkit.hub.web.places import municipality_name
from fieldkit.hub.web.reports import respond
from fieldkit.hub.web.text import lazy, reasons_words, t
from fieldkit.models import RECORD_ID_PATTERN
from fieldkit.pki import RosterEntry, read_roster
from fieldkit.wipe.record import ErasureRecord
from fieldkit.wipe.sanitize import Certificate, chain_problems, verify_certificate

bp = Blueprint("evidence", __name__)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CERTIFICATE_ID = re.compile(RECORD_ID_PATTERN)


class CertificateForm(HubForm):
    certificate = FileField(
        lazy("evidence.certificate_file"),
        validators=[FileRequired(message=lazy("form.file_required"))],
    )


@dataclass(frozen=True)
class Checked:
    certificate: Certificate
    signed: bool
    chain_ok: bool
    chain_note: str


def check_certificate(session: Session, text: str) -> Checked:
    """Parse and check an uploaded certificate; ValueError says why it is not one at all."""
    try:
        certificate = Certificate.model_validate_json(text)
    except ValueError as exc:
        detail = str(exc).splitlines()[0]
        raise ValueError(t("evidence.not_certificate", detail=detail)) from None
    if not CERTIFICATE_ID.match(certificate.certificate_id):
        raise ValueError(t("evidence.bad_certificate_id"))
    if not DEVICE.match(certificate.device):
        raise ValueError(t("evidence.not_device", device=repr(certificate.device[:70])))
    roster = read_roster(hubweb().pki.roster)
    key = enrolled_key(roster, certificate.device)
    if key is None:
        raise ValueError(t("evidence.not_enrolled", device=certificate.device))
    signed = not verify_certificate(text, key)
    keys = enrolled_keys(roster, certificate.device)
    chain_ok, note = chain_note(certificate, device_records(session, certificate.device), keys)
    return Checked(certificate, signed, chain_ok, note)


def chain_note(
    certificate: Certificate, records: list[ErasureRecord], keys: set[str]
) -> tuple[bool, str]:
    """Whether the records, signed by the device's enrolled keys, end where the certificate
    says; and in words (the problems, or the chain's length and head)."""
    problems = chain_problems(certificate, records, keys or {"(not enrolled)"})
    chain = certificate.evidence_chain
    if problems or chain is None:
        return False, "; ".join(problems)[:2000]
    return True, f"{chain.records} records, ending at {chain.head[:12]}"


def chain_now(
    session: Session, roster: dict[str, RosterEntry], row: CertificateRow
) -> tuple[bool, str]:
    """The chain check against the records the hub holds now: a record that arrived after
    the upload can close a gap (the row keeps what was found at upload)."""
    certificate = Certificate.model_validate_json(row.body)
    keys = enrolled_keys(roster, row.device_id)
    return chain_note(certificate, device_records(session, row.device_id), keys)


def sanitized_at(certificate: Certificate) -> float:
    for parse in (
        lambda s: dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S%z"),
        dt.datetime.fromisoformat,
    ):
        try:
            when = parse(certificate.date)
        except ValueError:
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=JST)
        return when.timestamp()
    raise ValueError(t("evidence.bad_date", date=repr(certificate.date)))


# A session's wipe is recorded moments after it ends; one ended just before midnight is looked
# for this long into the next day.
WIPE_GRACE = 6 * 3600


@dataclass
class SessionErasure:
    """One session a device's kiosk started, and what the hub holds of its erasure."""

    device: str
    sid: str
    started: float | None
    records: list[ErasureRow]

    @property
    def passed(self) -> bool:
        return any(r.verified and r.signed for r in self.records)

    def problem(self) -> str:
        """Why this session has no passing erasure record, in words ('' if it has one)."""
        if self.passed:
            return ""
        if not self.records:
            return t("evidence.problem_missing")
        failed = [r for r in self.records if not r.verified]
        if failed:
            why = reasons_words(list(failed[-1].record.get("failures") or [])) or "—"
            return t("evidence.problem_failed", why=why)
        return t("evidence.problem_unsigned")


def session_erasures(
    session: Session, lo: float, hi: float, device: str | None
) -> list[SessionErasure]:
    """Every session started on the day (the kiosk's ``start`` audit events) or wiped on it
    (session erasure records), each with the session erasure records the hub holds for it."""
    mine = [AuditRow.device_id == device] if device else []
    started: dict[tuple[str, str], float] = {}
    for row in session.scalars(
        select(AuditRow).where(
            AuditRow.action == "start", AuditRow.at >= lo, AuditRow.at < hi, *mine
        )
    ):
        sid = str((row.detail or {}).get("session") or "")
        if sid:
            started[(row.device_id, sid)] = row.at
    wiped: dict[tuple[str, str], list[ErasureRow]] = {}
    for record in session.scalars(
        select(ErasureRow)
        .where(
            ErasureRow.level == "session",
            ErasureRow.at >= lo,
            ErasureRow.at < hi + WIPE_GRACE,
            *([ErasureRow.device_id == device] if device else []),
        )
        .order_by(ErasureRow.at)
    ):
        sid = str((record.record or {}).get("sid") or "")
        key = (record.device_id, sid)
        if sid and (key in started or record.at < hi):
            wiped.setdefault(key, []).append(record)
    return [
        SessionErasure(dev, sid, started.get((dev, sid)), wiped.get((dev, sid), []))
        for dev, sid in sorted(set(started) | set(wiped), key=lambda k: (k[0], started.get(k, 0.0)))
    ]


def evidence_tables(session: Session, date: str, device: str | None = None) -> list[ReportTable]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=JST)
    lo, hi = start.timestamp(), (start + dt.timedelta(days=1)).timestamp()
    suffix = f" — {device}" if device else ""
    roster = read_roster(hubweb().pki.roster)

    def clock(at: float | None) -> str:
        return dt.datetime.fromtimestamp(at, JST).strftime("%H:%M:%S") if at else "—"

    def mine(column: InstrumentedAttribute[str]) -> list[ColumnElement[bool]]:
        return [column == device] if device else []

    def yes_no(flag: bool) -> str:
        return t("checked_yes") if flag else t("checked_no")

    records = session.scalars(
        select(ErasureRow)
        .where(ErasureRow.at >= lo, ErasureRow.at < hi, *mine(ErasureRow.device_id))
        .order_by(ErasureRow.device_id, ErasureRow.at)
    ).all()
    sessions = session_erasures(session, lo, hi, device)
    certificates = session.scalars(
        select(CertificateRow)
        .where(
            CertificateRow.sanitized_at >= lo,
            CertificateRow.sanitized_at < hi,
            *mine(CertificateRow.device_id),
        )
        .order_by(CertificateRow.sanitized_at)
    ).all()
    named = (
        {r.device_id for r in records}
        | {c.device_id for c in certificates}
        | {s.device for s in sessions}
    )
    chained = [device] if device else sorted(named)
    chain_of = {name: device_chain(session, roster, name) for name in chained}

    per_device = ReportTable(
        t("evidence.sessions_title") + f" — {date}{suffix}",
        [
            t("device"),
            t("evidence.sessions"),
            t("evidence.erased"),
            t("evidence.failed"),
            t("evidence.missing"),
            t("evidence.chain"),
            t("evidence.verdict"),
        ],
        note=t("evidence.sessions_note"),
    )
    for name in chained:
        own = [s for s in sessions if s.device == name]
        passed = sum(s.passed for s in own)
        missing = sum(not s.records for s in own)
        failed = len(own) - passed - missing
        chain = chain_of[name]
        bad = bool(failed or missing or not chain.intact)
        per_device.rows.append(
            [
                name,
                len(own),
                passed,
                failed,
                missing,
                t("evidence.intact") if chain.intact else reasons_words(chain.problems),
                t("evidence.verdict_bad") if bad else t("evidence.verdict_ok"),
            ]
        )
        per_device.alarms.append(bad)

    to_check = [s for s in sessions if not s.passed]
    problem_sessions = ReportTable(
        t("evidence.session_rows_title") + f" — {date}{suffix}",
        [t("device"), t("evidence.session"), t("col.time"), t("evidence.problem")],
        [[s.device, s.sid, clock(s.started), s.problem()] for s in to_check],
        alarms=[True] * len(to_check),
    )

    device_records = ReportTable(
        t("evidence.title", date=date, suffix=suffix),
        [
            t("device"),
            t("col.time"),
            t("col.level"),
            t("col.verified"),
            t("col.signed"),
            t("evidence.record"),
        ],
        [
            [
                r.device_id,
                clock(r.at),
                t(f"level.{r.level}"),
                yes_no(r.verified),
                yes_no(r.signed),
                r.record_id,
            ]
            for r in records
        ],
        alarms=[not (r.verified and r.signed) for r in records],
    )
    sanitizations = ReportTable(
        t("evidence.sanitization_title", date=date, suffix=suffix),
        [
            t("device"),
            t("col.time"),
            t("evidence.result"),
            t("col.signed"),
            t("evidence.closes_chain"),
            t("evidence.checked"),
            t("evidence.uploaded_by"),
            t("evidence.certificate"),
        ],
    )
    for c in certificates:
        chain_ok, note = chain_now(session, roster, c)
        sanitizations.rows.append(
            [
                c.device_id,
                clock(c.sanitized_at),
                t("evidence.pass") if c.result == "pass" else t("evidence.fail"),
                yes_no(c.signed),
                yes_no(chain_ok),
                reasons_words(note.split("; "), 2000),
                c.uploaded_by,
                c.certificate_id,
            ]
        )
        sanitizations.alarms.append(not (c.result == "pass" and c.signed and chain_ok))
    chains = ReportTable(
        t("evidence.chains_title"),
        [t("device"), t("evidence.chain_records"), t("evidence.head"), t("state")],
        [
            [
                name,
                str(c.records),
                c.head[:12],
                t("evidence.intact") if c.intact else reasons_words(c.problems, 10_000),
            ]
            for name, c in chain_of.items()
        ],
        alarms=[not c.intact for c in chain_of.values()],
    )
    hub = ReportTable(
        t("evidence.hub_title"),
        [t("col.time"), t("municipality"), t("device"), t("evidence.confirmed_by"), "SHA-256"],
        [
            [
                clock(r.erased_at),
                municipality_name(r.municipality),
                r.device_id,
                r.erased_by,
                r.ciphertext_sha256,
            ]
            for r in session.scalars(
                select(PacketErasureRow)
                .where(
                    PacketErasureRow.erased_at >= lo,
                    PacketErasureRow.erased_at < hi,
                    *mine(PacketErasureRow.device_id),
                )
                .order_by(PacketErasureRow.erased_at)
            )
        ],
    )
    device_certificates = ReportTable(
        t("evidence.device_certificates"),
        [t("device"), t("evidence.serial"), t("state"), t("evidence.signing_key")],
        [
            [
                name,
                f"{entry.serial:x}",
                t("revoked") if entry.revoked else t("active"),
                entry.signing_public.hex(),
            ]
            for name, entry in sorted(roster.items())
            if not device or name == device
        ],
    )
    return [
        per_device,
        problem_sessions,
        device_records,
        chains,
        sanitizations,
        hub,
        device_certificates,
    ]


def problem_count(tables: list[ReportTable]) -> int:
    """What the page asks the reader to check: sessions without a passing erasure record, and
    broken chains, failed records and certificates that do not hold."""
    _, problem_sessions, device_records, chains, sanitizations = tables[:5]
    return (
        len(problem_sessions.rows)
        + sum(chains.alarms)
        + sum(sanitizations.alarms)
        + sum(
            1
            for alarm, row in zip(device_records.alarms, device_records.rows, strict=True)
            if alarm and row[2] != t("level.session")
        )
    )


def day_and_device() -> tuple[str, str | None]:
    date = request.args.get("date") or dt.datetime.now(JST).date().isoformat()
    if not DATE.match(date):
        abort(400, description=t("error.bad_date"))
    device = request.args.get("device") or None
    if device is not None and not DEVICE.match(device):
        abort(400, description=t("error.bad_device"))
    return date, device


@bp.get("/evidence")
@bp.get("/evidence.<fmt>")
@roles_required("admin", "auditor")
def day(fmt: str | None = None) -> ResponseReturnValue:
    date, device = day_and_device()
    tables = evidence_tables(db(), date, device)
    stem = f"erasure-evidence-{date}" + (f"-{device}" if device else "")
    title = t("evidence.heading") + f" {date}" + (f" — {device}" if device else "")
    if fmt is not None:
        return respond(tables, title, stem, fmt)
    sanitizations = tables[4]
    return render_template(
        "evidence.html",
        tables=tables,
        title=title,
        date=date,
        device=device or "",
        form=CertificateForm(),
        problems=problem_count(tables),
        certificates=[(row[0], row[-1]) for row in sanitizations.rows],
    )


@bp.post("/evidence/certificates")
@roles_required("admin")
def upload() -> ResponseReturnValue:
    """Bring a contract-end sanitization certificate to the hub: kept as uploaded, with what
    the hub checked. One that is not a certificate, or names a device the hub never enrolled,
    is refused with the reason; one uploaded twice is kept once."""
    form = CertificateForm()
    if not form.validate_on_submit():
        return refuse(t("evidence.not_recorded", reason=refusal(form)), 400)
    try:
        text = form.certificate.data.read().decode("utf-8")
        checked = check_certificate(db(), text)
        at = sanitized_at(checked.certificate)
    except UnicodeDecodeError:
        return refuse(t("evidence.not_recorded", reason=t("evidence.not_text")), 400)
    except ValueError as exc:
        return refuse(t("evidence.not_recorded", reason=str(exc).splitlines()[0]), 400)
    certificate = checked.certificate
    fields = {
        "device_id": certificate.device,
        "sanitized_at": at,
        "result": certificate.result,
        "signed": checked.signed,
        "chain_ok": checked.chain_ok,
        "chain_note": checked.chain_note,
        "uploaded_by": current_user.id,
        "uploaded_at": time.time(),
        "body": text,
    }
    held = db().get(CertificateRow, certificate.certificate_id)
    if held is not None and (held.signed or not checked.signed):
        return refuse(t("evidence.already", certificate=certificate.certificate_id), 409)
    if held is not None:
        # An altered copy came first under this ID; the genuine one takes its place (both
        # uploads stay in the audit log), so a bad copy cannot block the real certificate.
        for name, value in fields.items():
            setattr(held, name, value)
    else:
        db().add(CertificateRow(certificate_id=certificate.certificate_id, **fields))
    audit.record(
        db(),
        current_user.id,
        "sanitization-certificate",
        f"certificate {certificate.certificate_id}",
        device=certificate.device,
        result=certificate.result,
        signed=checked.signed,
        chain=checked.chain_ok,
        replaced_unsigned_copy=held is not None,
    )
    try:
        db().commit()
    except IntegrityError:  # the same certificate, uploaded at the same moment elsewhere
        db().rollback()
        return refuse(t("evidence.already", certificate=certificate.certificate_id), 409)
    verdict = t("checked_yes") if checked.signed and checked.chain_ok else t("checked_no")
    flash(t("evidence.recorded", certificate=certificate.certificate_id, verdict=verdict))
    date = dt.datetime.fromtimestamp(at, JST).date().isoformat()
    return redirect(url_for("evidence.day", date=date, device=certificate.device))


def refuse(message: str, status: int) -> ResponseReturnValue:
    flash(message)
    return make_response(day(), status)


@bp.get("/evidence/certificates/<certificate_id>.json")
@roles_required("admin", "auditor")
def certificate_json(certificate_id: str) -> ResponseReturnValue:
    row = db().get(CertificateRow, certificate_id)
    if row is None:
        abort(404)
    response = Response(row.body, mimetype="application/json")
    disposition = f'attachment; filename="sanitization-{row.certificate_id}.json"'
    response.headers["Content-Disposition"] = disposition
    return response


@bp.get("/evidence/records/<device>.jsonl")
@roles_required("admin", "auditor")
def records_export(device: str) -> ResponseReturnValue:
    """A device's erasure records as JSON lines, for ``fieldkit certificate verify --records``."""
    if not DEVICE.match(device):
        abort(404)
    lines = [record.model_dump_json() + "\n" for record in device_records(db(), device)]
    response = Response("".join(lines), mimetype="application/x-ndjson")
    response.headers["Content-Disposition"] = f'attachment; filename="erasure-{device}.jsonl"'
    return response
