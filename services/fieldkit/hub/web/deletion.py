"""The deletion-evidence document (R21, R24; specification §8: 「個人情報削除されたことが
分かる書類」): one signed PDF per period for the prefecture, listing every device's erasure
records and its whole record chain (verified), every sanitization certificate (verified
against the chain now), the hub's packet erasures, and the paper destruction records (entered
here, each with the registered staff member who destroyed it and a witness).

The PDF is signed by the hub's evidence key (Ed25519, ``hub/evidence-signing.key`` in the kit
PKI, 0600) and carries its certificate from the kit CA (document signing only), both made by
the admin with ``fieldkit pki evidence-signer`` (``pki init`` makes the first); the web app
only reads them. ``fieldkit evidence verify FILE --ca ca.crt`` checks a copy offline with
the kit CA's certificate alone (``signed_pdf``); the page also shows the public key to pin.
Each generation is kept as a version with its SHA-256 (``documents``).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import time

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flask import Blueprint, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session
from wtforms import StringField

from fieldkit import signed_pdf
from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web import audit, documents
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.chains import device_chain
from fieldkit.hub.web.counts import JST, ReportTable
from fieldkit.hub.web.evidence import chain_now
from fieldkit.hub.web.exports import a4_document, pdf_font, table_flowables
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import (
    PRESENT,
    REQUIRED,
    ChoiceInput,
    DateInput,
    HubForm,
    length,
    refusal,
)
from fieldkit.hub.web.models import (
    CertificateRow,
    OperatorRow,
    PacketErasureRow,
    PaperDestructionRow,
)
from fieldkit.hub.web.text import lazy, t
from fieldkit.pki import KitPki, PkiError, RosterEntry, read_roster

log = logging.getLogger(__name__)
bp = Blueprint("deletion", __name__, url_prefix="/deletion")
METHODS = {
    name: lazy(f"paper.{name}") for name in ("shredder", "dissolution", "incineration", "return")
}
YES, NO = "確認済 yes", "未確認 NO"


class PaperForm(HubForm):
    destroyed_on = DateInput(lazy("deletion.date_field"), validators=[PRESENT])
    what = StringField(lazy("deletion.what_field"), validators=[REQUIRED, length(300)])
    quantity = StringField(lazy("deletion.quantity_field"), validators=[REQUIRED, length(100)])
    method = ChoiceInput(lazy("deletion.method"), choices=list(METHODS.items()))
    staff = StringField(lazy("deletion.staff_field"), validators=[REQUIRED])
    witness = StringField(lazy("deletion.witness"), validators=[REQUIRED, length(100)])


class PeriodForm(HubForm):
    date_from = DateInput(lazy("deletion.from"), validators=[PRESENT])
    date_to = DateInput(lazy("deletion.to"), validators=[PRESENT])


def evidence_signer(pki: KitPki) -> tuple[Ed25519PrivateKey, x509.Certificate] | None:
    """The hub's evidence key and its kit-CA certificate; None (and the page says what to
    run) until the admin has had them made with ``fieldkit pki evidence-signer``. The web app
    never makes the key itself: only the CA can certify one."""
    try:
        return pki.evidence_signer()
    except PkiError:
        log.warning("deletion evidence: no certified evidence key in the PKI")
        return None


def _bounds(date_from: str, date_to: str) -> tuple[float, float]:
    start = dt.datetime.fromisoformat(date_from).replace(tzinfo=JST)
    end = dt.datetime.fromisoformat(date_to).replace(tzinfo=JST) + dt.timedelta(days=1)
    return start.timestamp(), end.timestamp()


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, JST).date().isoformat()


def period_tables(
    session: Session, roster: dict[str, RosterEntry], date_from: str, date_to: str
) -> list[ReportTable]:
    """The document's tables: devices' erasures and chains, certificates, the hub's packet
    erasures and the paper destroyed, in the period (dates inclusive, Japan time)."""
    lo, hi = _bounds(date_from, date_to)
    in_period = (ErasureRow.at >= lo, ErasureRow.at < hi)
    per_device = session.execute(
        select(
            ErasureRow.device_id,
            func.count(),
            func.sum(case((ErasureRow.verified, 1), else_=0)),
            func.sum(case((ErasureRow.signed, 1), else_=0)),
        )
        .where(*in_period)
        .group_by(ErasureRow.device_id)
        .order_by(ErasureRow.device_id)
    ).all()
    devices = ReportTable(
        "端末の消去記録 Device erasure records in the period, and each device's record chain",
        [
            "端末 device",
            "消去記録 records",
            "端末の検証 verified by device",
            "署名確認 signature checked",
            "記録の連鎖 whole chain at the hub",
        ],
    )
    for line in per_device:
        device, count = str(line[0]), int(line[1])
        verified, signed = int(line[2] or 0), int(line[3] or 0)
        chain = device_chain(session, roster, device)
        state = (
            f"連続 intact: {chain.records} records, head {chain.head[:12]}"
            if chain.intact
            else "不連続 BROKEN: " + "; ".join(chain.problems)[:300]
        )
        devices.rows.append(
            [
                device,
                count,
                f"{verified}/{count}",
                f"{signed}/{count}",
                state,
            ]
        )
    certificates = ReportTable(
        "データ消去証明書 Sanitization certificates (contract end)",
        [
            "端末 device",
            "日付 date",
            "結果 result",
            "署名 signed",
            "連鎖 closes the chain",
            "内容 note",
        ],
    )
    for certificate in session.scalars(
        select(CertificateRow)
        .where(CertificateRow.sanitized_at >= lo, CertificateRow.sanitized_at < hi)
        .order_by(CertificateRow.sanitized_at)
    ):
        chain_ok, note = chain_now(session, roster, certificate)
        certificates.rows.append(
            [
                certificate.device_id,
                _day(certificate.sanitized_at),
                "合格 pass" if certificate.result == "pass" else "不合格 FAIL",
                YES if certificate.signed else NO,
                YES if chain_ok else NO,
                note,
            ]
        )
    packets = ReportTable(
        "ハブ上の封緘データ消去 Sealed packets erased on the hub after the municipality's receipt",
        ["市区町村 municipality", "消去件数 packets erased", "初回 first", "最終 last"],
        [
            [municipality, int(count), _day(first), _day(last)]
            for municipality, count, first, last in session.execute(
                select(
                    PacketErasureRow.municipality,
                    func.count(),
                    func.min(PacketErasureRow.erased_at),
                    func.max(PacketErasureRow.erased_at),
                )
                .where(PacketErasureRow.erased_at >= lo, PacketErasureRow.erased_at < hi)
                .group_by(PacketErasureRow.municipality)
                .order_by(PacketErasureRow.municipality)
            )
        ],
    )
    paper = ReportTable(
        "紙の廃棄記録 Paper destroyed",
        ["廃棄日 date", "書類 what", "数量 how much", "方法 method", "実施者 by", "立会人 witness"],
        [
            [
                r.destroyed_on,
                r.what,
                r.quantity,
                str(METHODS.get(r.method, r.method)),
                r.staff,
                r.witness,
            ]
            for r in session.scalars(
                select(PaperDestructionRow)
                .where(
                    PaperDestructionRow.destroyed_on >= date_from,
                    PaperDestructionRow.destroyed_on <= date_to,
                )
                .order_by(PaperDestructionRow.destroyed_on, PaperDestructionRow.id)
            )
        ],
    )
    return [devices, certificates, packets, paper]


def deletion_pdf(
    tables: list[ReportTable],
    date_from: str,
    date_to: str,
    signer: tuple[Ed25519PrivateKey, x509.Certificate],
) -> bytes:
    """The document, signed: a cover table (period, hub, key), then the tables."""
    key, certificate = signer
    config = hubweb().config
    cover = ReportTable(
        "個人情報削除の証明 Evidence that personal data was deleted",
        ["項目 item", "内容 value"],
        [
            ["期間 period", f"{date_from} 〜 {date_to}"],
            ["作成 generated", dt.datetime.now(JST).strftime("%Y-%m-%d %H:%M")],
            ["ハブ hub", config.device.id],
            ["署名鍵 signing key (Ed25519)", signed_pdf.public_hex(key)],
            ["署名者の証明書 signer's certificate", certificate.subject.rfc4514_string()],
            ["証明書の発行者 certified by", certificate.issuer.rfc4514_string()],
            [
                "確認方法 how to check",
                "fieldkit evidence verify <this file> --ca <the kit CA certificate, ca.crt>",
            ],
        ],
    )
    out = io.BytesIO()
    a4_document(out, "個人情報削除の証明").build(
        table_flowables([cover, *tables], pdf_font(config.hubweb.pdf_font))
    )
    claims = {
        "document": "deletion-evidence",
        "from": date_from,
        "to": date_to,
        "hub": config.device.id,
    }
    return signed_pdf.sign(out.getvalue(), key, claims, certificate)


def _page(paper_form: PaperForm, period_form: PeriodForm) -> str:
    signer = evidence_signer(hubweb().pki)
    kept = [d for d in documents.listing(db()) if d.kind.startswith("deletion-")]
    records = (
        db()
        .scalars(select(PaperDestructionRow).order_by(PaperDestructionRow.destroyed_on.desc()))
        .all()
    )
    return render_template(
        "deletion.html",
        paper_form=paper_form,
        period_form=period_form,
        records=records,
        methods=METHODS,
        kept=kept,
        signer=signer,
        public_key=signed_pdf.public_hex(signer[0]) if signer else "",
    )


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    return _page(PaperForm(), PeriodForm())


@bp.post("/paper")
@roles_required("admin")
def record_paper() -> ResponseReturnValue:
    form = PaperForm()
    problems: list[str] = []
    if form.validate_on_submit():
        staff = (form.staff.data or "").strip()
        if db().get(OperatorRow, staff) is None:
            problems.append(t("deletion.staff_unknown"))
        if (form.witness.data or "").strip() in (staff, ""):
            problems.append(t("deletion.witness_other"))
    if form.errors or problems or form.destroyed_on.data is None:
        flash(t("not_recorded", reason=refusal(form, problems)))
        return make_response(_page(form, PeriodForm()), 400)
    row = PaperDestructionRow(
        destroyed_on=form.destroyed_on.data.isoformat(),
        what=(form.what.data or "").strip(),
        quantity=(form.quantity.data or "").strip(),
        method=form.method.data or "shredder",
        staff=(form.staff.data or "").strip(),
        witness=(form.witness.data or "").strip(),
        recorded_by=current_user.id,
        recorded_at=time.time(),
    )
    db().add(row)
    db().flush()
    audit.record(db(), current_user.id, "paper-destruction", f"paper {row.id}", staff=row.staff)
    db().commit()
    flash(t("recorded"))
    return redirect(url_for("deletion.index"))


@bp.post("/documents")
@roles_required("admin")
def generate() -> ResponseReturnValue:
    form = PeriodForm()
    valid = form.validate_on_submit()
    start, end = form.date_from.data, form.date_to.data
    problems = []
    if valid and start and end and end < start:
        problems.append(t("deletion.end_after_start"))
    if not valid or problems or start is None or end is None:
        flash(t("not_generated", reason=refusal(form, problems)))
        return make_response(_page(PaperForm(), form), 400)
    date_from, date_to = start.isoformat(), end.isoformat()
    signer = evidence_signer(hubweb().pki)
    if signer is None:
        flash(t("deletion.no_signer"))
        return make_response(_page(PaperForm(), form), 409)
    roster = read_roster(hubweb().pki.roster)
    tables = period_tables(db(), roster, date_from, date_to)
    body = deletion_pdf(tables, date_from, date_to, signer)
    title = f"個人情報削除の証明 {date_from}〜{date_to}"
    kept = documents.keep(db(), f"deletion-{date_from}-{date_to}", title, body, current_user.id)
    db().commit()
    flash(t("generated", title=title, version=kept.version, sha256=kept.sha256))
    return redirect(url_for("deletion.index"))
