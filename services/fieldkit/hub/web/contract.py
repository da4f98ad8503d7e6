"""The contract's details and the forms made from them (R27): 様式1 業務着手届, 様式2 業務日程表,
様式3 業務実施代理人届 and 様式4 業務完了報告書, generated as PDFs and kept (``documents``).

The admin enters the details once; every form reads them. 様式2's schedule comes from the
visits on the hub, 様式4's results from the statistics the kits sent and the cards recorded
at issuance-support visits. The auditor reads the page and downloads every kept version.
"""

from __future__ import annotations

import datetime as dt
import time

from flask import (
    Blueprint,
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
from sqlalchemy import select
from wtforms import StringField, TextAreaField
from wtforms.validators import NumberRange, Optional

from fieldkit.hub.web import audit, counts, documents, exports, paper
from fieldkit.hub.web.auth import roles_required
from fieldkit.hub.web.counts import Scope
from fieldkit.hub.web.extensions import db, hubweb
from fieldkit.hub.web.formfields import (
    PRESENT,
    REQUIRED,
    DateInput,
    HubForm,
    WholeNumberInput,
    length,
    refusal,
)
from fieldkit.hub.web.models import ContractRow, DocumentRow, FacilityRow, VisitRow
from fieldkit.hub.web.text import lazy, t

bp = Blueprint("contract", __name__, url_prefix="/contract")
MAX_AMOUNT = 2_000_000_000


def date_field(label: str, required: bool = True) -> DateInput:
    return DateInput(label, validators=[PRESENT if required else Optional()])


class ContractForm(HubForm):
    work_name = StringField(lazy("contract.work_name"), validators=[REQUIRED, length(200)])
    client = StringField(lazy("contract.client"), validators=[REQUIRED, length(200)])
    signed_on = date_field(lazy("contract.signed_on"))
    started_on = date_field(lazy("contract.started_on"))
    period_start = date_field(lazy("contract.period_start"))
    period_end = date_field(lazy("contract.period_end"))
    completed_on = date_field(lazy("contract.completed_on"), required=False)
    amount_yen = WholeNumberInput(
        lazy("contract.amount"),
        validators=[
            PRESENT,
            NumberRange(
                min=1,
                max=MAX_AMOUNT,
                message=lazy("contract.amount_range"),
            ),
        ],
    )
    contractor_address = StringField(
        lazy("contract.contractor_address"), validators=[REQUIRED, length(300)]
    )
    contractor_name = StringField(
        lazy("contract.contractor_name"), validators=[REQUIRED, length(200)]
    )
    representative = StringField(
        lazy("contract.representative"), validators=[REQUIRED, length(100)]
    )
    agent_name = StringField(lazy("contract.agent_name"), validators=[REQUIRED, length(100)])
    agent_title = StringField(lazy("contract.agent_title"), validators=[Optional(), length(100)])
    work_summary = TextAreaField(
        lazy("contract.work_summary"), validators=[Optional(), length(4000)]
    )


class GenerateForm(HubForm):
    issued_on = date_field(lazy("contract.issued_on"))


def contract_problems(form: ContractForm) -> list[str]:
    """What is wrong between the dates (each field has been checked on its own)."""
    start, end = form.period_start.data, form.period_end.data
    problems = []
    if start and end and end < start:
        problems.append(t("contract.end_after_start"))
    for field in (form.started_on, form.completed_on):
        if start and end and field.data and not start <= field.data <= end:
            problems.append(t("contract.within_period", field=field.label.text))
    if form.signed_on.data and start and form.signed_on.data > start:
        problems.append(t("contract.signed_before"))
    return problems


def stored_contract() -> ContractRow | None:
    return db().get(ContractRow, 1)


def as_paper(row: ContractRow) -> paper.Contract:
    return paper.Contract(
        work_name=row.work_name,
        client=row.client,
        signed_on=row.signed_on,
        started_on=row.started_on,
        period_start=row.period_start,
        period_end=row.period_end,
        completed_on=row.completed_on,
        amount_yen=row.amount_yen,
        contractor_address=row.contractor_address,
        contractor_name=row.contractor_name,
        representative=row.representative,
        agent_name=row.agent_name,
        agent_title=row.agent_title,
        work_summary=row.work_summary,
    )


def _page(form: ContractForm, generate: GenerateForm) -> str:
    return render_template(
        "contract.html",
        form=form,
        generate=generate,
        contract=stored_contract(),
        documents=documents.listing(db()),
        forms=paper.FORMS,
    )


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    row = stored_contract()
    form = ContractForm(obj=_form_values(row)) if row else ContractForm()
    return _page(form, GenerateForm(issued_on=dt.date.today()))


def _form_values(row: ContractRow) -> object:
    """The stored row with its ISO dates as dates, for the form's initial values."""

    class Values:
        pass

    values = Values()
    for name in ContractForm.__dict__:
        if hasattr(row, name):
            value = getattr(row, name)
            if name in ("signed_on", "started_on", "period_start", "period_end", "completed_on"):
                value = dt.date.fromisoformat(value) if value else None
            setattr(values, name, value)
    return values


@bp.post("")
@roles_required("admin")
def save() -> ResponseReturnValue:
    form = ContractForm()
    valid = form.validate_on_submit()
    problems = contract_problems(form) if valid else []
    if not valid or problems:
        flash(t("not_saved", reason=refusal(form, problems)))
        return make_response(_page(form, GenerateForm(issued_on=dt.date.today())), 400)
    row = stored_contract() or ContractRow(id=1)
    for name in (
        "work_name",
        "client",
        "contractor_address",
        "contractor_name",
        "representative",
        "agent_name",
        "agent_title",
        "work_summary",
    ):
        setattr(row, name, (getattr(form, name).data or "").strip())
    for name in ("signed_on", "started_on", "period_start", "period_end", "completed_on"):
        value = getattr(form, name).data
        setattr(row, name, value.isoformat() if value else "")
    row.amount_yen = int(form.amount_yen.data or 0)
    row.updated_at = time.time()
    row.updated_by = current_user.id
    db().add(row)
    audit.record(db(), current_user.id, "contract-update", "contract")
    db().commit()
    flash(t("contract.saved"))
    return redirect(url_for("contract.index"))


def planned_visits() -> list[paper.PlannedVisit]:
    rows = db().execute(
        select(VisitRow, FacilityRow).join(FacilityRow, FacilityRow.id == VisitRow.facility_id)
    )
    return [
        paper.PlannedVisit(
            date=visit.date,
            facility=facility.name,
            municipality=facility.municipality,
            kind=visit.kind,
            start_time=visit.start_time,
            end_time=visit.end_time,
        )
        for visit, facility in rows
    ]


def render_form(kind: str, contract: paper.Contract, issued_on: str) -> bytes:
    """One of 様式1-4 as PDF bytes, from the contract and what the hub holds now."""
    font = hubweb().config.hubweb.pdf_font
    if kind == "form1":
        return paper.form1(contract, issued_on, font)
    if kind == "form2":
        return paper.form2(contract, planned_visits(), issued_on, font)
    if kind == "form3":
        return paper.form3(contract, issued_on, font)
    scope = counts.covering(db(), Scope(contract.period_start, contract.period_end))
    days = hubweb().config.hubweb.programme_days
    figures = counts.completion_figures(db(), scope, days)
    # The attachments are the completion report's tables after its summary (the 別紙).
    attachments = counts.completion(db(), scope, days)[1:]
    return paper.form4(contract, figures, attachments, issued_on, font)


@bp.post("/documents")
@roles_required("admin")
def generate() -> ResponseReturnValue:
    """Generate the form whose button was pressed (``kind``: form1 … form4) and keep it."""
    kind = request.form.get("kind", "")
    if kind not in paper.FORMS:
        abort(400, description=t("contract.unknown_form"))
    form = GenerateForm()
    row = stored_contract()
    if row is None:
        flash(t("contract.save_first"))
        return make_response(_page(ContractForm(), GenerateForm(issued_on=dt.date.today())), 400)
    if not form.validate_on_submit() or form.issued_on.data is None:
        flash(t("not_generated", reason=refusal(form)))
        return make_response(_page(ContractForm(obj=_form_values(row)), form), 400)
    number, title = paper.FORMS[kind]
    body = render_form(kind, as_paper(row), form.issued_on.data.isoformat())
    kept = documents.keep(db(), kind, f"{number} {title}", body, current_user.id)
    db().commit()
    flash(t("generated", title=f"{number} {title}", version=kept.version, sha256=kept.sha256))
    return redirect(url_for("contract.index"))


@bp.get("/documents/<int:document_id>")
@roles_required("admin", "auditor")
def download(document_id: int) -> ResponseReturnValue:
    row = db().get(DocumentRow, document_id)
    if row is None:
        abort(404)
    response = exports.attachment(row.body, row.mimetype, row.filename)
    response.headers["X-Content-SHA256"] = row.sha256
    return response
