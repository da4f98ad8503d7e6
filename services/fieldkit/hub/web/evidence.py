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
from typing import Any

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
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import ColumnElement, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.models import CertificateRow, PacketErasureRow
from fieldkit.hub.web.reports import respond
from fieldkit.models import RECORD_ID_PATTERN
from fieldkit.pki import RosterEntry, read_roster
from fieldkit.wipe.record import ChainSummary, ErasureRecord, follow_chain
from fieldkit.wipe.sanitize import Certificate, chain_problems, verify_certificate

bp = Blueprint("evidence", __name__)
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DEVICE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
CERTIFICATE_ID = re.compile(RECORD_ID_PATTERN)
YES, NO = "確認済 yes", "未確認 NO"


class CertificateForm(FlaskForm):
    certificate = FileField(
        "消去証明書 (JSON) / Sanitization certificate (JSON)", validators=[FileRequired()]
    )


def device_records(session: Session, device: str) -> list[ErasureRecord]:
    """The erasure records the hub holds for a device (a malformed one is skipped: ingest
    already shows it as not signed)."""
    records = []
    query = select(ErasureRow.record).where(ErasureRow.device_id == device).order_by(ErasureRow.at)
    body: dict[str, Any]
    for body in session.scalars(query):
        try:
            records.append(ErasureRecord.model_validate(body))
        except ValueError:
            continue
    return records


def enrolled_key(roster: dict[str, RosterEntry], device: str) -> str | None:
    entry = roster.get(device)
    return entry.signing_public.hex() if entry is not None else None


def enrolled_keys(roster: dict[str, RosterEntry], device: str) -> set[str]:
    """The keys the hub enrolled for the device, the current one and earlier enrolments'."""
    entry = roster.get(device)
    return entry.signing_keys_hex() if entry is not None else set()


def device_chain(session: Session, roster: dict[str, RosterEntry], device: str) -> ChainSummary:
    keys = enrolled_keys(roster, device)
    if not keys:
        summary = follow_chain(device_records(session, device))
        return ChainSummary(summary.records, summary.head, ["device not enrolled on this hub"])
    return follow_chain(device_records(session, device), keys)


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
        raise ValueError(f"not a sanitization certificate: {str(exc).splitlines()[0]}") from None
    if not CERTIFICATE_ID.match(certificate.certificate_id):
        raise ValueError("the certificate ID must be 32 hexadecimal digits")
    if not DEVICE.match(certificate.device):
        raise ValueError(f"device {certificate.device[:70]!r} is not a device ID")
    roster = read_roster(hubweb().pki.roster)
    key = enrolled_key(roster, certificate.device)
    if key is None:
        raise ValueError(f"device {certificate.device} is not enrolled on this hub")
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
    raise ValueError(f"the certificate's date {certificate.date!r} is not a date and time")


def evidence_tables(session: Session, date: str, device: str | None = None) -> list[ReportTable]:
    start = dt.datetime.fromisoformat(date).replace(tzinfo=JST)
    lo, hi = start.timestamp(), (start + dt.timedelta(days=1)).timestamp()
    suffix = f" — {device}" if device else ""
    roster = read_roster(hubweb().pki.roster)

    def clock(at: float) -> str:
        return dt.datetime.fromtimestamp(at, JST).strftime("%H:%M:%S")

    def mine(column: InstrumentedAttribute[str]) -> list[ColumnElement[bool]]:
        return [column == device] if device else []

    records = session.scalars(
        select(ErasureRow)
        .where(ErasureRow.at >= lo, ErasureRow.at < hi, *mine(ErasureRow.device_id))
        .order_by(ErasureRow.device_id, ErasureRow.at)
    ).all()
    devices = ReportTable(
        f"消去記録 Erasure records — {date}{suffix}",
        [
            "端末 device",
            "時刻 time",
            "レベル level",
            "端末の検証 device verified",
            "署名 signed by the enrolled key",
            "記録ID record",
        ],
        [
            [
                r.device_id,
                clock(r.at),
                r.level,
                "済 yes" if r.verified else "未 NO",
                YES if r.signed else NO,
                r.record_id,
            ]
            for r in records
        ],
    )
    certificates = session.scalars(
        select(CertificateRow)
        .where(
            CertificateRow.sanitized_at >= lo,
            CertificateRow.sanitized_at < hi,
            *mine(CertificateRow.device_id),
        )
        .order_by(CertificateRow.sanitized_at)
    ).all()
    sanitizations = ReportTable(
        f"データ消去証明書 Sanitization certificates — {date}{suffix}",
        [
            "端末 device",
            "時刻 time",
            "結果 result",
            "署名 signed by the enrolled key",
            "記録の連鎖 closes the erasure-record chain (as received now)",
            "確認内容 checked",
            "登録者 uploaded by",
            "証明書ID certificate",
        ],
        [
            [
                c.device_id,
                clock(c.sanitized_at),
                "合格 pass" if c.result == "pass" else "不合格 FAIL",
                YES if c.signed else NO,
                YES if chain_ok else NO,
                note,
                c.uploaded_by,
                c.certificate_id,
            ]
            for c in certificates
            for chain_ok, note in [chain_now(session, roster, c)]
        ],
    )
    named = {r.device_id for r in records} | {c.device_id for c in certificates}
    chained = [device] if device else sorted(named)
    chains = ReportTable(
        "記録の連鎖 Erasure-record chain per device (all records the hub holds)",
        ["端末 device", "連鎖の記録数 records on the chain", "末尾 head", "状態 state"],
        [
            [
                name,
                str(c.records),
                c.head[:12],
                "連続 intact" if c.intact else "; ".join(c.problems),
            ]
            for name, c in ((n, device_chain(session, roster, n)) for n in chained)
        ],
    )
    hub = ReportTable(
        "ハブ上の封緘データ消去 Sealed packets erased on the hub after receipt",
        ["時刻 time", "市区町村 municipality", "端末 device", "受領確認者 by", "SHA-256"],
        [
            [clock(r.erased_at), r.municipality, r.device_id, r.erased_by, r.ciphertext_sha256]
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
        "端末証明書 Device certificates",
        [
            "端末 device",
            "シリアル serial",
            "状態 state",
            "署名鍵 signing key (for fieldkit certificate verify --public-key)",
        ],
        [
            [
                name,
                f"{entry.serial:x}",
                "失効 revoked" if entry.revoked else "有効 active",
                entry.signing_public.hex(),
            ]
            for name, entry in sorted(roster.items())
            if not device or name == device
        ],
    )
    return [devices, chains, sanitizations, hub, device_certificates]


def day_and_device() -> tuple[str, str | None]:
    date = request.args.get("date") or dt.datetime.now(JST).date().isoformat()
    if not DATE.match(date):
        abort(400, description="'date' must be YYYY-MM-DD")
    device = request.args.get("device") or None
    if device is not None and not DEVICE.match(device):
        abort(400, description="'device' must be a device ID (a-z, 0-9 and -)")
    return date, device


@bp.get("/evidence")
@bp.get("/evidence.<fmt>")
@roles_required("admin", "auditor")
def day(fmt: str | None = None) -> ResponseReturnValue:
    date, device = day_and_device()
    tables = evidence_tables(db(), date, device)
    stem = f"erasure-evidence-{date}" + (f"-{device}" if device else "")
    if fmt is not None:
        return respond(tables, tables[0].title, stem, fmt)
    return render_template(
        "evidence.html",
        tables=tables,
        title=tables[0].title,
        date=date,
        device=device or "",
        form=CertificateForm(),
    )


@bp.post("/evidence/certificates")
@roles_required("admin")
def upload() -> ResponseReturnValue:
    """Bring a contract-end sanitization certificate to the hub: kept as uploaded, with what
    the hub checked. One that is not a certificate, or names a device the hub never enrolled,
    is refused with the reason; one uploaded twice is kept once."""
    form = CertificateForm()
    if not form.validate_on_submit():
        problems = "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items())
        return refuse(f"登録できません / Not recorded: {problems}", 400)
    try:
        text = form.certificate.data.read().decode("utf-8")
        checked = check_certificate(db(), text)
        at = sanitized_at(checked.certificate)
    except (UnicodeDecodeError, ValueError) as exc:
        return refuse(f"登録できません / Not recorded: {str(exc).splitlines()[0]}", 400)
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
        return refuse(f"登録済み / Already recorded: certificate {certificate.certificate_id}", 409)
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
        return refuse(f"登録済み / Already recorded: certificate {certificate.certificate_id}", 409)
    verdict = "確認済 verified" if checked.signed and checked.chain_ok else "要確認 NOT verified"
    flash(f"登録しました / Recorded: certificate {certificate.certificate_id} ({verdict})")
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
