"""Tablet operators and the handler registry (R13, R22).

Each operator is the 責任者 (responsible person) or a 従事者 (handler); creating, disabling,
re-enabling and resetting a password each write an entry to the web audit chain, so the
registry's history is the audit log. Passwords are kept as argon2id hashes only.
"""

from __future__ import annotations

import time

from flask import Blueprint, abort, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import Regexp

from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import MIN_PASSWORD, hash_password, roles_required
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.formfields import REQUIRED, HubForm, length, refusal
from fieldkit.hub.web.models import DUTIES, OperatorRow, WebAuditRow
from fieldkit.hub.web.text import lazy, t

bp = Blueprint("operators", __name__, url_prefix="/operators")


class OperatorForm(HubForm):
    operator_id = StringField(
        lazy("operators.id"),
        validators=[
            REQUIRED,
            Regexp(r"^[a-z0-9][a-z0-9-]{1,31}$", message=lazy("operators.id_rule")),
        ],
    )
    name = StringField(lazy("operators.name"), validators=[REQUIRED, length(100)])
    duty = SelectField(lazy("operators.duty"), choices=[(d, lazy(f"duty.{d}")) for d in DUTIES])
    password = PasswordField(
        lazy("operators.initial_password"), validators=[REQUIRED, length(256, MIN_PASSWORD)]
    )


class PasswordForm(HubForm):
    password = PasswordField(
        lazy("operators.new_password"), validators=[REQUIRED, length(256, MIN_PASSWORD)]
    )


class ToggleForm(HubForm):
    pass


@bp.get("")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    operators = db().scalars(select(OperatorRow).order_by(OperatorRow.operator_id)).all()
    history = (
        db()
        .scalars(
            select(WebAuditRow)
            .where(WebAuditRow.action.like("operator-%"))
            .order_by(WebAuditRow.id.desc())
            .limit(100)
        )
        .all()
    )
    return render_template(
        "operators.html",
        operators=operators,
        history=history,
        create=OperatorForm(),
        reset=PasswordForm(),
        toggle=ToggleForm(),
    )


@bp.post("")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = OperatorForm()
    if not form.validate_on_submit():
        flash(t("operators.not_created", reason=refusal(form)))
        return make_response(index(), 400)  # the page again, with the reason shown
    operator_id = form.operator_id.data or ""
    if db().get(OperatorRow, operator_id) is not None:
        flash(t("operators.exists", operator=operator_id))
        return redirect(url_for("operators.index"))
    if (
        form.duty.data == "responsible"
        and db()
        .scalars(
            select(OperatorRow).where(OperatorRow.duty == "responsible", ~OperatorRow.disabled)
        )
        .first()
    ):
        flash(t("operators.one_responsible"))
        return redirect(url_for("operators.index"))
    db().add(
        OperatorRow(
            operator_id=operator_id,
            name=form.name.data or "",
            duty=form.duty.data or "handler",
            password_hash=hash_password(form.password.data or ""),
            disabled=False,
            updated_at=time.time(),
        )
    )
    audit.record(db(), current_user.id, "operator-create", operator_id, duty=form.duty.data or "")
    db().commit()
    flash(t("operators.created", operator=operator_id))
    return redirect(url_for("operators.index"))


def _operator(operator_id: str) -> OperatorRow:
    row = db().get(OperatorRow, operator_id)
    if row is None:
        abort(404)
    return row


@bp.post("/<operator_id>/password")
@roles_required("admin")
def reset_password(operator_id: str) -> ResponseReturnValue:
    row = _operator(operator_id)
    form = PasswordForm()
    if not form.validate_on_submit():
        flash(t("operators.password_rule", n=MIN_PASSWORD))
        return make_response(index(), 400)  # the page again, with the reason shown
    row.password_hash = hash_password(form.password.data or "")
    row.updated_at = time.time()
    audit.record(db(), current_user.id, "operator-password-reset", operator_id)
    db().commit()
    flash(t("operators.password_reset", operator=operator_id))
    return redirect(url_for("operators.index"))


@bp.post("/<operator_id>/toggle")
@roles_required("admin")
def toggle(operator_id: str) -> ResponseReturnValue:
    row = _operator(operator_id)
    if not ToggleForm().validate_on_submit():
        abort(400, description=t("error.csrf"))
    row.disabled = not row.disabled
    row.updated_at = time.time()
    action = "operator-disable" if row.disabled else "operator-enable"
    audit.record(db(), current_user.id, action, operator_id)
    db().commit()
    return redirect(url_for("operators.index"))
