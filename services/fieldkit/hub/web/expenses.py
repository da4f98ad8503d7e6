"""業務経費支出一覧 and its 証拠書類 (specification §7, §8): each expense line with its receipt.

A receipt is a PDF, JPEG or PNG (checked by its first bytes, not its name), at most 5 MiB,
stored once: a second upload of the same file (same SHA-256) is the same receipt. The list
exports as XLSX (every text cell kept as text) and the receipts as one ZIP whose entries are
named by their SHA-256, which the XLSX lists per line. Advertising (広告費) is capped at cards
handed over × ¥2,000; the page shows the cap against what was spent.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile

from flask import (
    Blueprint,
    abort,
    flash,
    make_response,
    redirect,
    render_template,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf.file import FileField, FileRequired
from sqlalchemy import func, select
from wtforms import StringField
from wtforms.validators import NumberRange

from fieldkit.hub.web import audit, counts, exports
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import ReportTable, Scope
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import (
    PRESENT,
    REQUIRED,
    ChoiceInput,
    DateInput,
    HubForm,
    WholeNumberInput,
    length,
    refusal,
)
from fieldkit.hub.web.models import ExpenseRow, ReceiptRow
from fieldkit.hub.web.text import lazy, t

bp = Blueprint("expenses", __name__, url_prefix="/expenses")
RECEIPT_MAX = 5 * 1024 * 1024
# The request around a receipt: the file and the form's few fields.
UPLOAD_LIMIT = RECEIPT_MAX + 64 * 1024
# The specification's §7(1) categories.
CATEGORIES = {
    name: lazy(f"expense.{name}")
    for name in (
        "personnel",
        "manual",
        "supplies",
        "equipment",
        "communication",
        "rental",
        "subcontract",
        "advertising",
        "other",
    )
}
KINDS = ((b"%PDF-", "application/pdf", "pdf"), (b"\xff\xd8\xff", "image/jpeg", "jpg"))
PNG = b"\x89PNG\r\n\x1a\n"


class ExpenseForm(HubForm):
    spent_on = DateInput(lazy("expenses.date"), validators=[PRESENT])
    category = ChoiceInput(lazy("expenses.category"), choices=list(CATEGORIES.items()))
    payee = StringField(lazy("expenses.payee"), validators=[REQUIRED, length(200)])
    description = StringField(lazy("expenses.what_for"), validators=[REQUIRED, length(500)])
    amount_yen = WholeNumberInput(
        lazy("expenses.amount"),
        validators=[PRESENT, NumberRange(min=1, max=100_000_000, message=lazy("expenses.range"))],
    )
    receipt = FileField(
        lazy("expenses.receipt_field"),
        validators=[FileRequired(message=lazy("expenses.attach"))],
    )


def receipt_type(body: bytes) -> tuple[str, str]:
    """(MIME type, extension) of a receipt from its first bytes; ValueError says why not."""
    if not body:
        raise ValueError(t("expenses.empty"))
    if len(body) > RECEIPT_MAX:
        raise ValueError(t("expenses.too_large"))
    for magic, mimetype, extension in KINDS:
        if body.startswith(magic):
            return mimetype, extension
    if body.startswith(PNG):
        return "image/png", "png"
    raise ValueError(t("expenses.bad_type"))


def extension_of(mimetype: str) -> str:
    return {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}[mimetype]


def expense_table(session_rows: list[tuple[ExpenseRow, ReceiptRow]]) -> ReportTable:
    table = ReportTable(
        t("expenses.title"),
        [
            t("number"),
            t("expenses.date"),
            t("expenses.category"),
            t("expenses.payee"),
            t("expenses.what_for"),
            t("expenses.amount"),
            t("expenses.receipt"),
            "SHA-256",
        ],
    )
    for expense, receipt in session_rows:
        table.rows.append(
            [
                expense.id,
                expense.spent_on,
                str(CATEGORIES.get(expense.category, expense.category)),
                expense.payee,
                expense.description,
                expense.amount_yen,
                f"receipts/{receipt.sha256}.{extension_of(receipt.mimetype)}",
                receipt.sha256,
            ]
        )
    if table.rows:
        table.rows.append([t("total"), "", "", "", "", sum(r[5] for r in table.rows), "", ""])
    return table


def _lines() -> list[tuple[ExpenseRow, ReceiptRow]]:
    query = (
        select(ExpenseRow, ReceiptRow)
        .join(ReceiptRow, ReceiptRow.id == ExpenseRow.receipt_id)
        .order_by(ExpenseRow.spent_on, ExpenseRow.id)
    )
    return [(e, r) for e, r in db().execute(query)]


def advertising() -> tuple[int, int]:
    """(spent on advertising, the cap the cards handed over allow)."""
    spent = db().scalar(
        select(func.coalesce(func.sum(ExpenseRow.amount_yen), 0)).where(
            ExpenseRow.category == "advertising"
        )
    )
    days = hubweb().config.hubweb.programme_days
    cap = counts.completion_figures(db(), Scope(), days).advertising_cap_yen
    return int(spent or 0), cap


def _page(form: ExpenseForm) -> str:
    spent, cap = advertising()
    return render_template(
        "expenses.html", table=expense_table(_lines()), form=form, spent=spent, cap=cap
    )


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    return _page(ExpenseForm())


@bp.post("")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = ExpenseForm()
    problems: list[str] = []
    body, mimetype = b"", ""
    if form.validate_on_submit():
        body = form.receipt.data.read(RECEIPT_MAX + 1)
        try:
            mimetype, _ = receipt_type(body)
        except ValueError as exc:
            problems.append(str(exc))
    if form.errors or problems or form.spent_on.data is None:
        flash(t("not_recorded", reason=refusal(form, problems)))
        return make_response(_page(form), 400)
    digest = hashlib.sha256(body).hexdigest()
    receipt = db().scalars(select(ReceiptRow).where(ReceiptRow.sha256 == digest)).first()
    if receipt is None:
        receipt = ReceiptRow(
            sha256=digest,
            mimetype=mimetype,
            size=len(body),
            uploaded_at=time.time(),
            uploaded_by=current_user.id,
            body=body,
        )
        db().add(receipt)
        db().flush()
    row = ExpenseRow(
        spent_on=form.spent_on.data.isoformat(),
        category=form.category.data or "other",
        payee=(form.payee.data or "").strip(),
        description=(form.description.data or "").strip(),
        amount_yen=int(form.amount_yen.data or 0),
        receipt_id=receipt.id,
        created_at=time.time(),
        created_by=current_user.id,
    )
    db().add(row)
    db().flush()
    audit.record(
        db(), current_user.id, "expense-create", f"expense {row.id}", amount=row.amount_yen,
        receipt=digest,
    )  # fmt: skip
    db().commit()
    flash(t("expenses.recorded", number=row.id, sha256=digest))
    return redirect(url_for("expenses.index"))


@bp.get("/list.xlsx")
@roles_required("admin", "auditor")
def spreadsheet() -> ResponseReturnValue:
    body = exports.to_xlsx([expense_table(_lines())])
    return exports.attachment(body, exports.FORMATS["xlsx"], "expenses.xlsx")


@bp.get("/receipts.zip")
@roles_required("admin", "auditor")
def receipts_zip() -> ResponseReturnValue:
    """Every receipt once, named by its SHA-256 as the spreadsheet lists it."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for receipt in db().scalars(select(ReceiptRow).order_by(ReceiptRow.id)):
            name = f"receipts/{receipt.sha256}.{extension_of(receipt.mimetype)}"
            # A fixed timestamp: the same receipts give the same ZIP.
            archive.writestr(zipfile.ZipInfo(name, (2026, 1, 1, 0, 0, 0)), receipt.body)
    return exports.attachment(out.getvalue(), "application/zip", "receipts.zip")


@bp.get("/receipts/<int:receipt_id>")
@roles_required("admin", "auditor")
def receipt(receipt_id: int) -> ResponseReturnValue:
    row = db().get(ReceiptRow, receipt_id)
    if row is None:
        abort(404)
    name = f"receipt-{row.sha256[:12]}.{extension_of(row.mimetype)}"
    return exports.attachment(row.body, row.mimetype, name)
