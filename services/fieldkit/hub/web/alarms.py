"""Device alarms become incident drafts (R25): a virus found, a failed wipe, a gap in a
device's erasure-record chain, a revoked device. Each alarm raises one draft, once (its
``source`` names the alarm), for the admin to complete with how much, how and the response,
so the incident section of the monthly report is never silently empty.

The draft's text is written by the hub from the text catalogue's phrases and ids (no applicant
data), in Japanese, the language of the incident report it becomes (whoever's page raised it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fieldkit.hub.db import AuditRow, ErasureRow, HealthRow, RecordRow
from fieldkit.hub.web import audit
from fieldkit.hub.web.chains import device_chain
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.models import IncidentRow
from fieldkit.hub.web.text import CATALOGUE
from fieldkit.pki import RosterEntry

HUB = "hub"  # the actor of drafts the hub raises


@dataclass(frozen=True)
class Alarm:
    source: str
    occurred_on: str
    what: str
    where: str


def _said(key: str, **values: object) -> str:
    """A draft's words: the catalogue's Japanese, never the reader's language of the moment."""
    return CATALOGUE.say(key, "ja", **values)


def _where(device: str) -> str:
    return _said("alarm_draft.where", device=device)


def _day(at: float) -> str:
    return dt.datetime.fromtimestamp(at, JST).date().isoformat()


def _wipe_failures(session: Session) -> list[Alarm]:
    alarms = [
        Alarm(
            f"wipe-failed:{row.record_id}",
            _day(row.at),
            _said("alarm_draft.wipe_failed", device=row.device_id),
            _where(row.device_id),
        )
        for row in session.scalars(
            select(AuditRow).where(AuditRow.action.like("wipe-failed%")).order_by(AuditRow.at)
        )
    ]
    alarms += [
        Alarm(
            f"erasure-unverified:{row.record_id}",
            _day(row.at),
            _said(
                "alarm_draft.unverified",
                device=row.device_id,
                level=_said(f"level.{row.level}")
                if f"level.{row.level}" in CATALOGUE
                else row.level,
            ),
            _where(row.device_id),
        )
        for row in session.scalars(
            select(ErasureRow).where(~ErasureRow.verified).order_by(ErasureRow.at)
        )
    ]
    return alarms


def _virus_findings(session: Session) -> list[Alarm]:
    """One alarm per device and day on which a health report counted antivirus findings."""
    days: dict[tuple[str, str], int] = {}
    for row in session.scalars(select(HealthRow).order_by(HealthRow.at)):
        antivirus = row.report.get("antivirus") or {}
        found = antivirus.get("findings")
        if isinstance(found, int) and found > 0:
            key = (row.device_id, _day(row.at))
            days[key] = max(days.get(key, 0), found)
    return [
        Alarm(
            f"virus:{device}:{day}",
            day,
            _said("alarm_draft.virus", device=device, count=count),
            _where(device),
        )
        for (device, day), count in sorted(days.items())
    ]


def integrity_change_set(integrity: dict[str, Any]) -> str:
    """What a failed file-integrity check found, as a digest: the same change reported by
    every daily check until it is dealt with is one incident, a new change another."""
    paths = sorted(f"{p.get('change')}:{p.get('path')}" for p in integrity.get("paths") or [])
    counts = [integrity.get(k) for k in ("added", "removed", "changed", "error")]
    return hashlib.sha256(repr((counts, paths)).encode()).hexdigest()[:16]


def _integrity_changes(session: Session) -> list[Alarm]:
    """A file-integrity check on a device that found a change outside the expected paths, or
    could not run (issue 19 item 3): one alarm per device and change set."""
    alarms: dict[tuple[str, str], Alarm] = {}
    for row in session.scalars(select(HealthRow).order_by(HealthRow.at)):
        integrity = (row.report or {}).get("integrity")
        if not isinstance(integrity, dict) or integrity.get("ok", True):
            continue
        key = (row.device_id, integrity_change_set(integrity))
        if key in alarms:
            continue
        shown = ", ".join(str(p.get("path")) for p in (integrity.get("paths") or [])[:5])
        more = int(integrity.get("added") or 0) + int(integrity.get("removed") or 0)
        more += int(integrity.get("changed") or 0)
        if integrity.get("error"):
            what = _said("alarm_draft.integrity_error", device=row.device_id)
        else:
            what = _said(
                "alarm_draft.integrity",
                device=row.device_id,
                added=integrity.get("added", 0),
                removed=integrity.get("removed", 0),
                changed=integrity.get("changed", 0),
                paths=shown + (" …" if more > 5 else ""),
            )
        alarms[key] = Alarm(
            f"integrity:{row.device_id}:{key[1]}", _day(row.at), what, _where(row.device_id)
        )
    return list(alarms.values())


def _chain_gaps(session: Session, roster: dict[str, RosterEntry]) -> list[Alarm]:
    devices = sorted(set(session.scalars(select(ErasureRow.device_id).distinct())))
    alarms = []
    for device in devices:
        if device not in roster:
            continue  # not enrolled here: the evidence page says so; not an incident
        chain = device_chain(session, roster, device)
        if chain.intact:
            continue
        problems = "; ".join(chain.problems)
        digest = hashlib.sha256(problems.encode()).hexdigest()[:16]
        alarms.append(
            Alarm(
                f"chain:{device}:{digest}",
                dt.datetime.now(JST).date().isoformat(),
                _said("alarm_draft.chain", device=device, n=len(chain.problems)),
                _where(device),
            )
        )
    return alarms


def _revoked(session: Session, roster: dict[str, RosterEntry]) -> list[Alarm]:
    alarms = []
    for device, entry in sorted(roster.items()):
        if not entry.revoked:
            continue
        last = session.scalars(
            select(RecordRow.received_at)
            .where(RecordRow.device_id == device)
            .order_by(RecordRow.received_at.desc())
            .limit(1)
        ).first()
        alarms.append(
            Alarm(
                f"revoked:{device}:{entry.serial}",
                _day(last) if last else dt.datetime.now(JST).date().isoformat(),
                _said("alarm_draft.revoked", device=device, serial=f"{entry.serial:x}"),
                _where(device),
            )
        )
    return alarms


def device_alarms(session: Session, roster: dict[str, RosterEntry]) -> list[Alarm]:
    return [
        *_virus_findings(session),
        *_integrity_changes(session),
        *_wipe_failures(session),
        *_chain_gaps(session, roster),
        *_revoked(session, roster),
    ]


def raise_and_commit(session: Session, roster: dict[str, RosterEntry]) -> None:
    """Raise the drafts and commit them; if another worker raised the same draft at the same
    moment (the unique ``source``), its drafts stand and this one's are dropped."""
    try:
        if raise_drafts(session, roster):
            session.commit()
    except IntegrityError:
        session.rollback()


def raise_drafts(session: Session, roster: dict[str, RosterEntry]) -> list[IncidentRow]:
    """An incident draft for every alarm that has none yet (the caller commits)."""
    raised = set(session.scalars(select(IncidentRow.source).where(IncidentRow.source.is_not(None))))
    drafts = []
    for alarm in device_alarms(session, roster):
        if alarm.source in raised:
            continue
        row = IncidentRow(
            reported_at=time.time(),
            reported_by=HUB,
            occurred_on=alarm.occurred_on,
            what=alarm.what,
            how_much="",
            location=alarm.where,
            how="",
            response="",
            status="draft",
            source=alarm.source,
        )
        session.add(row)
        session.flush()
        raised.add(alarm.source)
        audit.record(session, HUB, "incident-draft", f"incident {row.id}", alarm=alarm.source)
        drafts.append(row)
    return drafts
