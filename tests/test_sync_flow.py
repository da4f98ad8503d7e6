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
