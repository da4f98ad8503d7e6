"""Web accounts (admin only) and the audit log with its chain check (admin and auditor)."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, flash, make_response, redirect, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from wtforms import PasswordField, SelectField, SelectMultipleField, StringField
from wtforms.validators import Regexp

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
from fieldkit.hub.web.formfields import REQUIRED, HubForm, length, refusal
from fieldkit.hub.web.models import ROLES, AccountRow, WebAuditRow
from fieldkit.hub.web.places import choices as municipality_choices
from fieldkit.hub.web.text import lazy, t

bp = Blueprint("accounts", __name__)


class AccountForm(HubForm):
    username = StringField(
        lazy("accounts.username"),
        validators=[
            REQUIRED,
            Regexp(r"^[A-Za-z0-9._-]{3,64}$", message=lazy("accounts.username_rule")),
        ],
    )
    role = SelectField(lazy("accounts.role"), choices=[(r, lazy(f"role.{r}")) for r in ROLES])
    # Chosen by name from the kit's municipality table (set per request: choices()).
    municipalities = SelectMultipleField(lazy("accounts.municipalities"), choices=[])
    password = PasswordField(
        lazy("accounts.password"), validators=[REQUIRED, length(256, MIN_PASSWORD)]
    )


def account_form() -> AccountForm:
    form = AccountForm()
    form.municipalities.choices = municipality_choices()
    return form


class ToggleForm(HubForm):
    pass


@bp.get("/accounts")
@roles_required("admin", "auditor")
def index() -> ResponseReturnValue:
    return render_template(
        "accounts.html",
        accounts=db().scalars(select(AccountRow).order_by(AccountRow.username)).all(),
        form=account_form(),
        toggle=ToggleForm(),
    )


@bp.post("/accounts")
@roles_required("admin")
def create() -> ResponseReturnValue:
    form = account_form()
    if not form.validate_on_submit():
        flash(t("accounts.not_created", reason=refusal(form)))
        return make_response(index(), 400)  # the page again, with the reason shown
    codes = list(form.municipalities.data or [])
    if form.role.data == "municipality" and not codes:
        flash(t("accounts.not_created", reason=t("accounts.needs_municipality")))
        return make_response(index(), 400)
    if db().get(AccountRow, form.username.data or "") is not None:
        flash(t("accounts.not_created", reason=t("accounts.exists")))
        return make_response(index(), 400)
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
        flash(t("accounts.not_created", reason=str(exc)))
        return make_response(index(), 400)  # the page again, with the reason shown
    db().commit()
    return redirect(url_for("accounts.index"))


def another_account(username: str) -> AccountRow | None:
    """The account an admin changes: it exists, is not their own, and the form is genuine."""
    row = db().get(AccountRow, username)
    if row is None or username == current_user.id or not ToggleForm().validate_on_submit():
        return None
    return row


NOT_CHANGED = lazy("accounts.not_changed")


@bp.post("/accounts/<username>/toggle")
@roles_required("admin")
def toggle(username: str) -> ResponseReturnValue:
    row = another_account(username)
    if row is None:
        flash(str(NOT_CHANGED))
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
        flash(str(NOT_CHANGED))
        return make_response(index(), 400)
    reset_second_factor(db(), row, actor=current_user.id)
    db().commit()
    flash(t("accounts.factor_reset", username=username))
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
