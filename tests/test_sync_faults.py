"""Faults with real processes: after each, every record is at the hub exactly once, none is
lost, and the outbox drains. R15 R21 R24"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.bus import BusError
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import RecordRow, make_engine
from fieldkit.hub.ingest import Ingest
from fieldkit.pki import KitPki
from fieldkit.sync.courier import Courier
from fieldkit.sync.messages import Accepted, SubmitRecord
from fieldkit.sync.outbox import Outbox
from tests.conftest import BusFactory
from tests.hubkit import (
    CourierFactory,
    HubIngestProcess,
    IngestFactory,
    count_records,
    record_ids,
    statistics_body,
    wait_for,
)
from tests.support.sync import tablet_config


def assert_exactly_once(ingest: Ingest, expected: set[str]) -> None:
    ids = record_ids(ingest)
    assert len(ids) == len(set(ids))  # the primary key makes a second copy impossible
    assert set(ids) == expected


def drained(courier: Courier) -> bool:
    state = courier.outbox.state()
    return state.pending == 0 and state.sent == 0 and state.refused == 0


def test_hub_broker_restarted_mid_burst(
    make_ingest: IngestFactory,
    make_courier: CourierFactory,
    hub_broker: HubBroker,
    sqlite_url: str,
) -> None:
    ingest = make_ingest(sqlite_url)
    courier = make_courier("tab-a")
    submitted: list[str] = []

    def burst() -> None:
        for i in range(1500):
            submitted.append(courier.submit_record("statistics", statistics_body(i)))

    producer = threading.Thread(target=burst)
    producer.start()
    wait_for(lambda: count_records(ingest) >= 200, what="burst under way")
    hub_broker.stop()  # mid-burst: in-flight messages and acks are lost with it
    assert count_records(ingest) < 1500, "the restart did not land mid-burst"
    time.sleep(1.0)
    hub_broker.start()
    producer.join(60)
    wait_for(lambda: drained(courier), 60, "outbox drained")
    assert_exactly_once(ingest, set(submitted))
    assert courier.outbox.state().acked_total == 1500


def test_hub_ingest_down_for_a_while(
    make_ingest: IngestFactory, make_courier: CourierFactory, database_url: str
) -> None:
    first = make_ingest(database_url)
    courier = make_courier("tab-a")
    before = [courier.submit_record("statistics", statistics_body(i)) for i in range(50)]
    wait_for(lambda: drained(courier), what="first batch acked")
    first.stop()
    during = [courier.submit_record("statistics", statistics_body(i)) for i in range(200)]
    time.sleep(2.5)  # several ack timeouts pass; records are re-sent into the void
    state = courier.outbox.state()
    assert state.pending + state.sent == 200  # kept, not dropped
    second = make_ingest(database_url)
    wait_for(lambda: drained(courier), 60, "outbox drained after ingest returned")
    assert_exactly_once(second, set(before) | set(during))


def test_duplicate_deliveries_are_stored_once(
    make_ingest: IngestFactory, make_courier: CourierFactory, sqlite_url: str
) -> None:
    # An ack timeout far shorter than the ingest's batching makes the tablet re-send
    # records the hub already has.
    ingest = make_ingest(sqlite_url, batch_wait=0.3, batch_max=50)
    courier = make_courier("tab-a", ack_timeout=0.05, backoff_max=0.1)
    ids = {courier.submit_record("statistics", statistics_body(i)) for i in range(300)}
    wait_for(lambda: drained(courier), 60, "outbox drained")
    assert ingest.duplicates > 0
    assert_exactly_once(ingest, ids)


def test_sync_killed_with_sigkill_mid_delivery(
    broker: LocalBroker,
    make_bus: BusFactory,
    tmp_path: Path,
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    sqlite_url: str,
) -> None:
    config = tablet_config(tmp_path, pki, hub_broker.port)
    config_file = tmp_path / "device.toml"
    command = [
        sys.executable,
        "-m",
        "fieldkit",
        "--config",
        str(config_file),
        "service",
        "run",
        "sync",
    ]

    def start_sync() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        wait_for(lambda: _answers(tester), 30, "sync answering")
        return process

    tester = make_bus("tester")
    accepted: list[str] = []
    sync = start_sync()
    # The hub ingest is not running yet: records pile up in the outbox, sent but not acked.
    for i in range(1000):
        accepted.append(
            tester.request(
                "sync", "submit", SubmitRecord(kind="statistics", body=statistics_body(i)), Accepted
            ).record_id
        )
    ingest = make_ingest(sqlite_url, batch_max=20)
    # Kill sync as soon as the hub has committed some: others are in flight, unacked.
    deadline = time.monotonic() + 30
    while count_records(ingest) == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
    os.kill(sync.pid, signal.SIGKILL)
    sync.wait(10)
    at_kill = count_records(ingest)
    assert 0 < at_kill < len(accepted), "the kill did not land mid-delivery"
    outbox = Outbox(config.sync.outbox, max_records=10**6, max_bytes=10**12)
    state = outbox.state()
    outbox.close()
    # Nothing accepted was lost: whatever the hub lacks is still in the outbox.
    assert state.pending + state.sent >= len(accepted) - at_kill

    sync = start_sync()
    try:
        for i in range(100):
            accepted.append(
                tester.request(
                    "sync",
                    "submit",
                    SubmitRecord(kind="statistics", body=statistics_body(i)),
                    Accepted,
                ).record_id
            )
        wait_for(lambda: count_records(ingest) == len(accepted), 60, "all records at the hub")
        time.sleep(0.5)
    finally:
        sync.terminate()
        sync.wait(10)
    assert_exactly_once(ingest, set(accepted))
    outbox = Outbox(config.sync.outbox, max_records=10**6, max_bytes=10**12)
    try:
        wait_for(lambda: outbox.state().pending + outbox.state().sent == 0, 5, "drained")
    finally:
        outbox.close()
    with Session(ingest.engine) as session:
        assert session.scalar(select(func.count(RecordRow.record_id.distinct()))) == len(accepted)


def _answers(tester: object) -> bool:
    from fieldkit.bus import Bus
    from fieldkit.sync.messages import OutboxStatus, StatusRequest

    assert isinstance(tester, Bus)
    try:
        tester.request("sync", "status", StatusRequest(), OutboxStatus, timeout=0.5)
    except BusError:
        return False
    return True


def test_hub_ingest_killed_with_sigkill_mid_burst(
    make_courier: CourierFactory,
    hub_broker: HubBroker,
    pki: KitPki,
    tmp_path: Path,
    database_url: str,
) -> None:
    """The real `fieldkit service run hub-ingest` process, SIGKILLed while committing."""
    # Small batches (a commit each) keep the ingest busy long enough to be killed mid-burst.
    ingest = HubIngestProcess(tmp_path / "ingest", pki, hub_broker.port, database_url, batch_max=10)
    engine = make_engine(database_url)

    def at_hub() -> int:
        try:
            with Session(engine) as session:
                return int(session.scalar(select(func.count()).select_from(RecordRow)) or 0)
        except SQLAlchemyError:
            return 0  # not migrated yet

    try:
        courier = make_courier("tab-a")
        ids = {courier.submit_record("statistics", statistics_body(i)) for i in range(3000)}
        ingest.start()  # after the submits: the burst meets a freshly started ingest
        deadline = time.monotonic() + 60
        while at_hub() == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        ingest.kill()
        at_kill = at_hub()
        assert at_kill < 3000, "the kill did not land mid-burst"
        ingest.start()
        wait_for(lambda: drained(courier), 90, "outbox drained after ingest restarted")
        with Session(engine) as session:
            stored = list(session.scalars(select(RecordRow.record_id)))
        assert len(stored) == len(set(stored))
        assert set(stored) == ids
    finally:
        ingest.stop()
        engine.dispose()
