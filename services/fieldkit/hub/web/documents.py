"""Documents the hub generated for the prefecture, kept as generated (R21, R27).

Every generation is a new version of its kind, stored with the SHA-256 of its bytes; nothing
replaces or edits a kept version. Keeping one is an audited change whose entry names the kind,
version and hash (never the content).
"""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import func, select
from sqlalchemy.orm import Session, defer

from fieldkit.hub.web import audit
from fieldkit.hub.web.models import DocumentRow

PDF = "application/pdf"


def keep(
    session: Session,
    kind: str,
    title: str,
    body: bytes,
    actor: str,
    extension: str = "pdf",
    mimetype: str = PDF,
) -> DocumentRow:
    """Store ``body`` as the next version of ``kind`` (the caller commits)."""
    latest = session.scalar(select(func.max(DocumentRow.version)).where(DocumentRow.kind == kind))
    version = int(latest or 0) + 1
    digest = hashlib.sha256(body).hexdigest()
    row = DocumentRow(
        kind=kind,
        version=version,
        title=title,
        filename=f"{kind}-v{version}.{extension}",
        mimetype=mimetype,
        sha256=digest,
        size=len(body),
        created_at=time.time(),
        created_by=actor,
        body=body,
    )
    session.add(row)
    session.flush()
    audit.record(
        session, actor, "document-generate", f"{kind} v{version}", sha256=digest, size=len(body)
    )
    return row


def listing(session: Session) -> list[DocumentRow]:
    """Every kept document, newest first, without loading the bodies."""
    return list(
        session.scalars(
            select(DocumentRow)
            .options(defer(DocumentRow.body))
            .order_by(DocumentRow.created_at.desc(), DocumentRow.id.desc())
        )
    )
