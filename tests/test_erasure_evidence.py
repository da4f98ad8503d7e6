"""Erasure evidence the auditor can rely on (R24): the tablet's wipe signs its records with the
key the hub enrolled, and the hub checks each record's hash and signature against that key
before it shows it as signed. A record signed by any other key, or altered, is kept (it is
still evidence) but shown as not verified."""

from __future__ import annotations

import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.config import DeviceConfig
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import ErasureRow
from fieldkit.pki import KitPki, load_ed25519_private
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from fieldkit.wipe.service import signing_key_path
from tests.hubkit import DeviceClient, IngestFactory, signed_record, tablet_dir, wait_for


def daily_record(store: EvidenceStore, key: Ed25519PrivateKey) -> ErasureRecord:
    now = time.time()
    record = ErasureRecord(kind="daily", device="tab-a", started=now - 1, finished=now, ok=True)
    return store.append(record, key)


def test_the_hub_checks_each_erasure_record_against_the_enrolled_key(
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    database_url: str,
    tmp_path: Path,
) -> None:
    ingest = make_ingest(database_url)
    enrolled = load_ed25519_private(tablet_dir(pki, "tab-a") / "signing.key")
    store = EvidenceStore(tmp_path / "evidence.sqlite")
    genuine = daily_record(store, enrolled)
    altered = daily_record(store, enrolled).model_copy(update={"ok": False})
    other_store = EvidenceStore(tmp_path / "other.sqlite")
    foreign = daily_record(other_store, Ed25519PrivateKey.generate())
    store.close()
    other_store.close()
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    try:
        for record in (genuine, altered, foreign):
            body = {
                "at": record.finished,
                "level": record.kind,
                "verified": record.ok,
                "record": record.model_dump(mode="json"),
            }
            envelope = signed_record(pki, "tab-a", "erasure", body=body)
            device.publish("fieldkit/tab-a/up/record", envelope.encode())

        def rows() -> dict[str, bool]:
            with Session(ingest.engine) as session:
                found = session.scalars(select(ErasureRow))
                return {row.record["record_id"]: row.signed for row in found}

        wait_for(lambda: len(rows()) == 3, what="three erasure records at the hub")
    finally:
        device.close()
    assert rows() == {
        genuine.record_id: True,
        altered.record_id: False,  # its content no longer matches its hash
        foreign.record_id: False,  # signed, but not by the key the hub enrolled
    }


def test_an_enrolled_tablet_signs_erasure_records_with_its_enrolment_key(
    pki: KitPki, tmp_path: Path
) -> None:
    own = tmp_path / "keys" / "device.pem"
    enrolled = DeviceConfig(
        device={"id": "tab-a", "role": "tablet"},
        sync={"bundle": tablet_dir(pki, "tab-a")},
        wipe={"device_key": own},
    )
    assert signing_key_path(enrolled) == tablet_dir(pki, "tab-a") / "signing.key"
    not_enrolled = enrolled.model_copy(
        update={"sync": enrolled.sync.model_copy(update={"bundle": tmp_path / "none"})}
    )
    assert signing_key_path(not_enrolled) == own
