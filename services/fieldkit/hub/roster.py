"""The operator roster as tablets get it, read from the hub's handler registry (R13, R22).

hub-ingest sends it down to the tablets; the hub web's device page compares each tablet's
applied version with it.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.web.models import OperatorRow
from fieldkit.sync.wire import RosterOperator, roster_version


def read_operators(session: Session) -> list[RosterOperator]:
    """The handler registry as tablets get it: IDs, names, duties, argon2id hashes."""
    rows = session.scalars(select(OperatorRow).order_by(OperatorRow.operator_id))
    return [
        RosterOperator(
            id=row.operator_id,
            name=row.name,
            duty="responsible" if row.duty == "responsible" else "handler",
            password_hash=row.password_hash,
            disabled=row.disabled,
        )
        for row in rows
    ]


def current_version(session: Session) -> str | None:
    """The version tablets should hold, or None while the registry is empty (nothing is sent)."""
    operators = read_operators(session)
    return roster_version(operators) if operators else None
