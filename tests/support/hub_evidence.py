"""Erasure evidence at the hub for the hub web tests: a device's record chain as ingest keeps
it, a sanitization certificate as `fieldkit wipe device` writes it, its upload."""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from fieldkit.hub.db import ErasureRow
from fieldkit.hub.web.counts import JST
from fieldkit.hub.web.extensions import hubweb
from fieldkit.pki import KitPki, load_ed25519_private
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from fieldkit.wipe.sanitize import (
    Certificate,
    EvidenceChain,
    Media,
    Method,
    Person,
    Verification,
    sign_certificate,
)
from tests.hubkit import tablet_dir
from tests.hubweb import add_record


def chain_at_hub(web_app: Flask, pki: KitPki, tmp_path: Path, count: int) -> list[ErasureRecord]:
    """``count`` erasure records of tab-a, signed with its enrolled key, as ingest keeps them."""
    key = load_ed25519_private(tablet_dir(pki, "tab-a") / "signing.key")
    store = EvidenceStore(tmp_path / "tab-a-evidence.sqlite")
    now = time.time()
    records = [
        store.append(
            ErasureRecord(kind="session", device="tab-a", started=now - 2, finished=now, ok=True),
            key,
        )
        for _ in range(count)
    ]
    store.close()
    keep_at_hub(web_app, records)
    return records


def keep_at_hub(web_app: Flask, records: list[ErasureRecord]) -> None:
    with Session(hubweb(web_app).engine) as session:
        for record in records:
            rid = add_record(session, "tab-a", "erasure", record.finished)
            session.add(
                ErasureRow(
                    record_id=rid,
                    device_id="tab-a",
                    at=record.finished,
                    level="session",
                    verified=True,
                    signed=True,
                    record=record.model_dump(mode="json"),
                )
            )
        session.commit()


def certificate_of(pki: KitPki, device: str, records: int, head: str) -> Certificate:
    """A certificate as ``fieldkit wipe device`` writes it (the sanitization itself is shown in
    test_wipe_sanitize); signed with the device's enrolled key."""
    key = load_ed25519_private(tablet_dir(pki, "tab-a") / "signing.key")
    certificate = Certificate(
        device=device,
        media=Media(
            make="QEMU", model="disk", serial="0001", media_type="file", size_bytes=1 << 26,
            target="/dev/vda3",
        ),
        method=Method(
            category="Purge", technique="Cryptographic Erase + Overwrite", steps=["a", "b"],
            tool="fieldkit wipe device", tool_version="test",
        ),
        verification=Verification(
            method="sampling", subsections=1000, locations_per_subsection=2,
            first_and_last=True, sample_bytes=512, samples_read=2002, samples_failed=0,
            seed="00", keyslots_left=0, result="pass",
        ),
        sanitized_by=Person(name="消去 太郎", role="sanitized"),
        verified_by=Person(name="検証 花子", role="verified"),
        date=dt.datetime.now(JST).strftime("%Y-%m-%dT%H:%M:%S%z"),
        location="長野市",
        evidence_chain=EvidenceChain(records=records, head=head, intact=True),
        result="pass",
    )  # fmt: skip
    return sign_certificate(certificate, key)


def upload(client: FlaskClient, text: str | bytes, token: str | None = None) -> Any:
    data = {"certificate": (io.BytesIO(text.encode() if isinstance(text, str) else text), "c.json")}
    if token is not None:
        data["csrf_token"] = token  # type: ignore[assignment]
    return client.post("/evidence/certificates", data=data, content_type="multipart/form-data")


def lose_at_hub(web_app: Flask, record: ErasureRecord) -> None:
    """The hub no longer holds ``record`` (as if sync had not delivered it yet)."""
    with Session(hubweb(web_app).engine) as session:
        held = [
            row.record_id
            for row in session.scalars(select(ErasureRow))
            if row.record["record_id"] == record.record_id
        ]
        session.execute(delete(ErasureRow).where(ErasureRow.record_id.in_(held)))
        session.commit()
