"""Forms whose labels and refusals come from the hub's text catalogue, in the reader's language.

Labels and messages are ``Lazy`` phrases (named at import, said when shown). wtforms' own
messages (a validator given no message) come from wtforms' Japanese translation on a Japanese
page, so no English slips through a form we forgot to word.
"""

from __future__ import annotations

from typing import Any

from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectField
from wtforms.i18n import get_translations
from wtforms.validators import DataRequired, InputRequired, Length, ValidationError

from fieldkit.hub.web.text import lang, lazy, t


class HubForm(FlaskForm):
    """Every form of the hub: wtforms' built-in messages in the reader's language."""

    class Meta(FlaskForm.Meta):
        def get_translations(self, form: Any) -> Any:
            return get_translations(["ja"]) if lang() == "ja" else None


# Text: blank or only spaces is missing.
REQUIRED = DataRequired(message=lazy("form.required"))
# Dates and numbers: present, so that a badly formed value is refused for its form (and
# 0 by its range), not as missing.
PRESENT = InputRequired(message=lazy("form.required"))


def length(limit: int, least: int = 0) -> Length:
    if least:
        return Length(min=least, max=limit, message=lazy("form.too_short", limit=least))
    return Length(max=limit, message=lazy("form.too_long", limit=limit))


class DateInput(DateField):
    """A date (YYYY-MM-DD) refused in the reader's language."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError(t("form.bad_date")) from None


class WholeNumberInput(IntegerField):
    """A whole number refused in the reader's language."""

    def process_formdata(self, valuelist: list[Any]) -> None:
        try:
            super().process_formdata(valuelist)
        except ValueError:
            raise ValueError(t("form.bad_number")) from None


class ChoiceInput(SelectField):
    """One of the listed choices, refused in the reader's language."""

    def pre_validate(self, form: Any) -> None:
        try:
            super().pre_validate(form)
        except ValidationError:
            raise ValidationError(t("form.choose")) from None


def refusal(form: FlaskForm, problems: list[str] | None = None) -> str:
    """Why a form was refused, each field named by its label."""
    reasons = [
        f"{getattr(form, name).label.text}: {'、'.join(str(e) for e in errors)}"
        for name, errors in form.errors.items()
        if name != "csrf_token"
    ]
    if "csrf_token" in form.errors:
        reasons.append(t("form.expired"))
    return "; ".join(reasons + (problems or []))
