"""Web accounts (admin only) and the audit log with its chain check (admin and auditor)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from fieldkit.hub.web import audit
from fieldkit.hub.web.auth import (
    MIN_PASSWORD,
    create_account,
    end_sessions,
    reset_second_factor,
    roles_required,
)
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import db
from fieldkit.hub.web.models import ROLES, AccountRow, WebAuditRow

bp = Blueprint("accounts", __name__)
ROLE_LABELS = {
    "admin": "管理者 admin",
    "municipality": "市区町村 municipality",
    "auditor": "監査 auditor (read-only)",
}


class AccountForm(FlaskForm):
    username = StringField(
        "ユーザー名 / Username",
        validators=[
            DataRequired(),
            Regexp(r"^[A-Za-z0-9._-]{3,64}$", message="3-64 A-Z a-z 0-9 . _ -"),
        ],
    )
    role = SelectField("役割 / Role", choices=[(r, ROLE_LABELS[r]) for r in ROLES])
    municipalities = StringField(
        "市区町村コード (カンマ区切り) / Municipality codes",
        validators=[Optional(), Regexp(r"^\d{6}(,\s*\d{6})*$", message="6-digit codes")],
    )
    password = PasswordField(
        "パスワード / Password", validators=[DataRequired(), Length(min=MIN_PASSWORD, max=256)]
    )


class ToggleForm(FlaskForm):
    pass


@bp.get("/accounts")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    return render_template(
        "accounts.html",
        accounts=db().scalars(select(AccountRow).order_by(AccountRow.username)).all(),
        labels=ROLE_LABELS,
        form=AccountForm(),
        toggle=ToggleForm(),
    )


@bp.post("/accounts")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = AccountForm()
    if not form.validate_on_submit():
        problems = "; ".join(f"{k}: {', '.join(v)}" for k, v in form.errors.items())
        flash(f"作成できません / Not created: {problems}")
        return make_response(index(), 400)  # the page again, with the reason shown
    codes = [c.strip() for c in (form.municipalities.data or "").split(",") if c.strip()]
    try:
        create_account(
            db(),
            form.username.data or "",
            form.password.data or "",
            form.role.data or "",
            codes,
            actor=current_user.id,
        )
    except ValueError as exc:
        flash(f"作成できません / Not created: {exc}")
        return make_response(index(), 400)  # the page again, with the reason shown
    db().commit()
    return redirect(url_for("accounts.index"))


def another_account(username: str) -> AccountRow | None:
    """The account an admin changes: it exists, is not their own, and the form is genuine."""
    row = db().get(AccountRow, username)
    if row is None or username == current_user.id or not ToggleForm().validate_on_submit():
        return None
    return row


NOT_CHANGED = "変更できません / Not changed"


@bp.post("/accounts/<username>/toggle")
@roles_required("admin")
def toggle(username: str) -> ResponseReturnValue:
    row = another_account(username)
    if row is None:
        flash(NOT_CHANGED)
        return make_response(index(), 400)  # the page again, with the reason shown
    row.disabled = not row.disabled
    if row.disabled:
        end_sessions(row)
    audit.record(
        db(), current_user.id, "account-disable" if row.disabled else "account-enable", username
    )
    db().commit()
    return redirect(url_for("accounts.index"))


@bp.post("/accounts/<username>/second-factor/reset")
@roles_required("admin")
def reset_second_factor_of(username: str) -> ResponseReturnValue:
    """Another account sets up its second factor again at its next login (a lost phone)."""
    row = another_account(username)
    if row is None:
        flash(NOT_CHANGED)
        return make_response(index(), 400)
    reset_second_factor(db(), row, actor=current_user.id)
    db().commit()
    flash(
        f"{username}: 次回ログイン時に確認コードを再設定 / "
        "sets up a new second factor at the next login"
    )
    return redirect(url_for("accounts.index"))


@bp.get("/audit")
@roles_required("admin", "auditor")
def audit_log() -> ResponseReturnValue:
    whole, bad = audit.verify_chain(db())
    rows = db().scalars(select(WebAuditRow).order_by(WebAuditRow.id.desc()).limit(500)).all()
    return render_template(
        "audit.html",
        rows=rows,
        whole=whole,
        bad=bad,
        when=lambda at: dt.datetime.fromtimestamp(at, JST).strftime("%Y-%m-%d %H:%M:%S"),
    )
