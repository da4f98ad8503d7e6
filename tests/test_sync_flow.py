"""Tablet → hub over mutual TLS: records stored once, acked after commit. R15 R16 R21 R24"""

from __future__ import annotations

from fieldkit.pki import KitPki
from tests.hubkit import (
    CourierFactory,
    IngestFactory,
    count_records,
    statistics_body,
    wait_for,
)


def test_records_reach_the_hub_once_and_the_outbox_drains(
    make_ingest: IngestFactory, make_courier: CourierFactory, database_url: str, pki: KitPki
) -> None:
    ingest = make_ingest(database_url)
    courier = make_courier("tab-a")
    ids = [courier.submit_record("statistics", statistics_body(i)) for i in range(50)]
    wait_for(lambda: courier.outbox.state().acked_total == 50, what="all acked")
    assert count_records(ingest) == 50
    state = courier.outbox.state()
    assert (state.pending, state.sent, state.refused) == (0, 0, 0)
    assert len(set(ids)) == 50


def test_every_record_kind_lands_in_its_own_table(
    make_ingest: IngestFactory, make_courier: CourierFactory, database_url: str
) -> None:
    """Statistics (R21), erasure evidence (R24), audit (R14) and health each in their table."""
    import time

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from fieldkit.hub.db import AuditRow, ErasureRow, HealthRow, StatisticsRow

    ingest = make_ingest(database_url)
    courier = make_courier("tab-a")
    now = time.time()
    ids = {
        StatisticsRow: courier.submit_record("statistics", statistics_body()),
        ErasureRow: courier.submit_record(
            "erasure",
            {
                "at": now,
                "level": "session",
                "verified": True,
                "record": {"sid": "c0ffee", "locations": 7, "signature": "sig"},
            },
        ),
        AuditRow: courier.submit_record(
            "audit", {"at": now, "actor": "operator-3", "action": "session-end"}
        ),
        HealthRow: courier.submit_record(
            "health", {"at": now, "services": {"capture": "online"}, "antivirus": {"age_h": 3}}
        ),
    }
    wait_for(lambda: count_records(ingest) == 4, what="four records")
    with Session(ingest.engine) as session:
        for table, record_id in ids.items():
            row = session.get(table, record_id)
            assert row is not None and row.device_id == "tab-a", table.__name__
        erasure = session.scalars(select(ErasureRow)).one()
        assert erasure.verified and erasure.level == "session"
        assert erasure.record["locations"] == 7
