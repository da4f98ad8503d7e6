"""The web audit log: who changed what on the hub, as a hash chain (R22, R26).

Each entry's hash is SHA-256 over the previous hash and the entry's canonical JSON, so
``verify_chain`` finds an edited, inserted or deleted row. Entries name accounts, operator
IDs, device IDs and record counts — never applicant data.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.web.models import WebAuditRow

GENESIS = "0" * 64


def entry_hash(prev_hash: str, at: float, actor: str, action: str, target: str, detail: Any) -> str:
    body = json.dumps(
        [prev_hash, repr(at), actor, action, target, detail],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session, actor: str, action: str, target: str = "", **detail: str | int | bool
) -> WebAuditRow:
    """Append one entry (the caller commits it with the change it describes)."""
    last = session.scalars(select(WebAuditRow).order_by(WebAuditRow.id.desc()).limit(1)).first()
    prev = last.hash if last is not None else GENESIS
    at = time.time()
    row = WebAuditRow(
        at=at,
        actor=actor[:64],
        action=action[:64],
        target=target[:200],
        detail=dict(detail),
        prev_hash=prev,
        hash=entry_hash(prev, at, actor[:64], action[:64], target[:200], dict(detail)),
    )
    session.add(row)
    session.flush()
    return row


def verify_chain(session: Session) -> tuple[bool, int | None]:
    """(True, None) if the chain is whole, else (False, id of the first bad entry)."""
    prev = GENESIS
    for row in session.scalars(select(WebAuditRow).order_by(WebAuditRow.id)):
        expected = entry_hash(prev, row.at, row.actor, row.action, row.target, row.detail)
        if row.prev_hash != prev or row.hash != expected:
            return False, row.id
        prev = row.hash
    return True, None
