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
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Regexp

from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import MIN_PASSWORD, hash_password, roles_required
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.models import DUTIES, OperatorRow, WebAuditRow

bp = Blueprint("operators", __name__, url_prefix="/operators")
DUTY_LABELS = {"responsible": "責任者 responsible", "handler": "従事者 handler"}


class OperatorForm(FlaskForm):
    operator_id = StringField(
        "ID",
        validators=[DataRequired(), Regexp(r"^[a-z0-9][a-z0-9-]{1,31}$", message="a-z 0-9 -")],
    )
    name = StringField("氏名 / Name", validators=[DataRequired(), Length(max=100)])
    duty = SelectField("役割 / Duty", choices=[(d, DUTY_LABELS[d]) for d in DUTIES])
    password = PasswordField(
        "初期パスワード / Initial password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD, max=256)],
    )


class PasswordForm(FlaskForm):
    password = PasswordField(
        "新しいパスワード / New password",
        validators=[DataRequired(), Length(min=MIN_PASSWORD, max=256)],
    )


class ToggleForm(FlaskForm):
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
        labels=DUTY_LABELS,
        create=OperatorForm(),
        reset=PasswordForm(),
        toggle=ToggleForm(),
    )


@bp.post("")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = OperatorForm()
    if not form.validate_on_submit():
        problems = "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items())
        flash(f"登録できません / Not created: {problems}")
        return make_response(index(), 400)  # the page again, with the reason shown
    operator_id = form.operator_id.data or ""
    if db().get(OperatorRow, operator_id) is not None:
        flash(f"{operator_id} は登録済みです / exists already")
        return redirect(url_for("operators.index"))
    if (
        form.duty.data == "responsible"
        and db()
        .scalars(
            select(OperatorRow).where(OperatorRow.duty == "responsible", ~OperatorRow.disabled)
        )
        .first()
    ):
        flash("責任者は一人です。先に無効にしてください / One responsible person: disable first")
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
    flash(f"{operator_id} を登録しました / created")
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
        flash(f"パスワードは{MIN_PASSWORD}文字以上 / at least {MIN_PASSWORD} characters")
        return make_response(index(), 400)  # the page again, with the reason shown
    row.password_hash = hash_password(form.password.data or "")
    row.updated_at = time.time()
    audit.record(db(), current_user.id, "operator-password-reset", operator_id)
    db().commit()
    flash(f"{operator_id} のパスワードを変更しました / password reset")
    return redirect(url_for("operators.index"))


@bp.post("/<operator_id>/toggle")
@roles_required("admin")
def toggle(operator_id: str) -> ResponseReturnValue:
    row = _operator(operator_id)
    if not ToggleForm().validate_on_submit():
        abort(400, description="the form has expired; reload the page")
    row.disabled = not row.disabled
    row.updated_at = time.time()
    action = "operator-disable" if row.disabled else "operator-enable"
    audit.record(db(), current_user.id, action, operator_id)
    db().commit()
    return redirect(url_for("operators.index"))
