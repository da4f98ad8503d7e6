"""The card check for staff (issue 22): is this My Number Card readable, and until when are its
electronic certificates valid? Outside an application, or at the start of one in
municipal-reception mode; the kiosk keeps nothing of the card.

The kiosk asks the card service (``card/req/card/read``) when staff press Read and says the
answer in plain words with what to do next. The report names no one (``fieldkit.card.messages``)
and is not stored: it is rendered and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, g, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import login_required

from fieldkit.bus import BusError
from fieldkit.card.messages import CardReport, ReadCard
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.counter import EmptyForm, to_current_step
from fieldkit.kiosk.flow import Step
from fieldkit.kiosk.text import Lang, card_date, card_expiry, say

bp = Blueprint("card", __name__)
# A certificate this close to its end can be renewed now (JPKI: from three months before).
RENEW_FROM_DAYS = 90
READ_TIMEOUT = 10.0


@dataclass(frozen=True)
class CardAnswer:
    """What the page says: the headline, the details, what to do next, and how it looks."""

    headline: str
    details: list[str]
    next_step: str
    level: str  # "ok", "warn" or "error": the page's colour, never the only sign


def answer_for(report: CardReport | None, lang: Lang) -> CardAnswer:
    """The report in plain words; ``None`` is a card service that did not answer."""
    if report is None:
        return CardAnswer(say("card_silent", lang), [], say("card_silent_next", lang), "error")
    certificate = report.certificate
    if report.state != "ok" or certificate is None:
        state = report.state.replace("-", "_")
        key = "card_unreadable" if state == "ok" else f"card_{state}"
        return CardAnswer(say(key, lang), [], say(f"{key}_next", lang), "error")
    details = [card_expiry(certificate.valid_to, certificate.days_left, lang)]
    since = card_date(certificate.valid_from, lang)
    details.append(f"有効期間の開始: {since}" if lang == "ja" else f"Valid from {since}")
    details.append(
        f"発行者: {certificate.issuer}" if lang == "ja" else f"Issuer: {certificate.issuer}"
    )
    if certificate.expired:
        return CardAnswer(
            say("card_expired", lang), details, say("card_expired_next", lang), "error"
        )
    if certificate.not_yet_valid:
        headline = say("card_not_yet_valid", lang)
        return CardAnswer(headline, details, say("card_unreadable_next", lang), "warn")
    if certificate.days_left <= RENEW_FROM_DAYS:
        return CardAnswer(say("card_ok", lang), details, say("card_soon_next", lang), "warn")
    return CardAnswer(say("card_ok", lang), details, say("card_ok_next", lang), "ok")


def read_card(sid: str | None) -> CardReport | None:
    service = kiosk().service
    if service is None:
        return None
    try:
        request = ReadCard(sid=sid)
        return service.bus.request("card", "read", request, CardReport, timeout=READ_TIMEOUT)
    except BusError:
        return None


@bp.route("/card", methods=["GET", "POST"])
@login_required
def check() -> ResponseReturnValue:
    """Place the card, press Read, get the answer: outside an application, or at the start of
    one in municipal-reception mode (then the card service holds the read for that session
    until its wipe, and the wipe looks for its canaries)."""
    session = kiosk().counter.current
    at_start = session is not None and session.mode == "municipal" and session.step is Step.SCAN
    if session is not None and not at_start:
        return to_current_step()
    form = EmptyForm()
    answer = None
    if form.validate_on_submit():
        answer = answer_for(read_card(session.sid if session else None), g.lang)
    back = url_for("counter.scan") if session else url_for("counter.home")
    return render_template("card.html", form=form, answer=answer, back=back, in_session=at_start)
