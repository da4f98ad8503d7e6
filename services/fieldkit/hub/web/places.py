"""Municipalities by name on every page and in every export (issue 21 item 4).

The hub keeps statistics, packets and accounts by local-government code; people read names.
The table is the kit's (``fieldkit.municipalities``, the prefectures in ``[hubweb]``); the code
an applicant who did not answer is counted under reads 「回答なし」, and a code outside the
table says so with the code, so nothing is silently renamed.
"""

from __future__ import annotations

from flask import current_app, has_app_context

from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.text import t
from fieldkit.municipalities import UNANSWERED, MunicipalityTable, Offer, offer


def table() -> MunicipalityTable | None:
    return hubweb().municipalities if has_app_context() and current_app else None


def municipality_name(code: str) -> str:
    """A municipality as people read it: 長野市; 回答なし for 000000; else the code, marked."""
    if code == UNANSWERED:
        return t("unanswered_municipality")
    known = table()
    if known is not None and code in known:
        entry = known.get(code)
        several = len({m.prefecture for m in known}) > 1
        return f"{entry.prefecture}{entry.name}" if several else entry.name
    return t("unlisted_municipality", code=code)


def choices() -> list[tuple[str, str]]:
    """(code, name) of every municipality in the table, for a select list."""
    known = table()
    return [(m.code, municipality_name(m.code)) for m in known] if known is not None else []


def receivers_offer() -> Offer:
    """Which municipalities can receive packets now (a receiver key imported on the hub)."""
    known = table()
    if known is None:
        raise RuntimeError("no municipality table outside the app")
    return offer(known, hubweb().pki.receivers())
