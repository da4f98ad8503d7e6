"""A device's erasure-record chain as the hub holds it (R24): the records, the keys the hub
enrolled for the device, and the chain followed from its genesis. Shared by the evidence page,
the work log and the deletion-evidence document; no Flask."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow
from fieldkit.pki import RosterEntry
from fieldkit.wipe.record import ChainSummary, ErasureRecord, follow_chain


def device_records(session: Session, device: str) -> list[ErasureRecord]:
    """The erasure records the hub holds for a device (a malformed one is skipped: ingest
    already shows it as not signed)."""
    records = []
    query = select(ErasureRow.record).where(ErasureRow.device_id == device).order_by(ErasureRow.at)
    body: dict[str, Any]
    for body in session.scalars(query):
        try:
            records.append(ErasureRecord.model_validate(body))
        except ValueError:
            continue
    return records


def enrolled_key(roster: dict[str, RosterEntry], device: str) -> str | None:
    entry = roster.get(device)
    return entry.signing_public.hex() if entry is not None else None


def enrolled_keys(roster: dict[str, RosterEntry], device: str) -> set[str]:
    """The keys the hub enrolled for the device, the current one and earlier enrolments'."""
    entry = roster.get(device)
    return entry.signing_keys_hex() if entry is not None else set()


def device_chain(session: Session, roster: dict[str, RosterEntry], device: str) -> ChainSummary:
    keys = enrolled_keys(roster, device)
    if not keys:
        summary = follow_chain(device_records(session, device))
        return ChainSummary(summary.records, summary.head, ["device not enrolled on this hub"])
    return follow_chain(device_records(session, device), keys)
