"""The roster as tablets get it: the handler registry and the planned visits of the coming
days, read from the hub's database (R13, R21, R22; issue 23 item 2), and the municipalities'
receiver keys imported on the hub (public keys only, from the PKI's ``receivers/``; issue 21).

hub-ingest sends it down to the tablets, and enrolment hands it over; the hub web's device
page compares each tablet's applied version with it. The visits go with it so that a tablet
can offer the day's visit to its staff with its hub out of reach. The receiver keys go with it
so that a municipality whose key is imported after a tablet enrolled can receive applications
from that tablet after the next roster, without enrolling it again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping

from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.web.models import FacilityRow, OperatorRow, VisitRow
from fieldkit.sealing_keys import SealingKeyError, read_public
from fieldkit.sync.wire import (
    OperatorRoster,
    RosterOperator,
    RosterReceiver,
    RosterVisit,
    roster_version,
)

log = logging.getLogger(__name__)

JST = dt.timezone(dt.timedelta(hours=9))
# From yesterday (a tablet whose clock or day started before the hub's) to two weeks ahead:
# the schedule is there offline for any visit the hub may not hear of in time.
VISITS_BEFORE = dt.timedelta(days=1)
VISITS_AHEAD = dt.timedelta(days=14)


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


def read_visits(session: Session, today: dt.date | None = None) -> list[RosterVisit]:
    """Every device's planned visits from yesterday to two weeks ahead (Japan's dates)."""
    today = today or dt.datetime.now(JST).date()
    first, last = (today - VISITS_BEFORE).isoformat(), (today + VISITS_AHEAD).isoformat()
    rows = session.execute(
        select(VisitRow, FacilityRow)
        .join(FacilityRow, FacilityRow.id == VisitRow.facility_id)
        .where(VisitRow.date >= first, VisitRow.date <= last)
        .order_by(VisitRow.date, VisitRow.start_time, VisitRow.id)
    )
    return [
        RosterVisit(
            id=visit.id,
            device_id=visit.device_id,
            date=visit.date,
            facility=facility.name,
            municipality=facility.municipality,
            kind=visit.kind,
            start_time=visit.start_time,
            end_time=visit.end_time,
        )
        for visit, facility in rows
    ]


def read_receivers(keys: Mapping[str, bytes]) -> list[RosterReceiver]:
    """The receiver keys as tablets get them (``keys``: ``KitPki.receivers()``), each checked
    to be a public X25519 key and written out in its canonical PEM. A file that is not (it
    cannot have been imported so) is left out, said in the log."""
    found = []
    for code, pem in sorted(keys.items()):
        try:
            key = read_public(pem)
        except SealingKeyError as exc:
            log.error("receiver key of %s not sent to the tablets: %s", code, exc)
            continue
        public = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        found.append(RosterReceiver(municipality=code, public_key=public.decode()))
    return found


def tablet_roster(
    session: Session,
    issued_at: float | None = None,
    receivers: Mapping[str, bytes] | None = None,
) -> OperatorRoster | None:
    """The roster tablets should hold, or None while the registry is empty (nothing is sent:
    the tablets keep their configured operators). ``receivers``: the PKI's receiver keys
    (``KitPki.receivers()``), carried as the whole set; None for a roster without keys."""
    operators = read_operators(session)
    if not operators:
        return None
    visits = read_visits(session)
    keys = read_receivers(receivers) if receivers is not None else None
    return OperatorRoster(
        version=roster_version(operators, visits, keys),
        issued_at=time.time() if issued_at is None else issued_at,
        operators=operators,
        visits=visits,
        receivers=keys,
    )


def current_version(session: Session, receivers: Mapping[str, bytes] | None = None) -> str | None:
    """The version tablets should hold, or None while the registry is empty (nothing is sent)."""
    roster = tablet_roster(session, issued_at=0.0, receivers=receivers)
    return roster.version if roster is not None else None
