"""The day's visit chosen on the tablet (issue 23 item 2; R21): the hub's plan reaches the
tablet with the operator roster and stays there with the hub out of reach; with visits planned
for today, staff choose one before the first session; each session's statistics carry it; and
the hub counts a tablet's sessions of one day at two places apart.

The path is the real one, as in test_operator_roster.py: the hub database's plan, hub-ingest's
signed roster over the tablet's TLS link, sync keeping it on disk, the kiosk applying it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from flask import Flask
from pydantic import ValidationError
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.web.counts import Scope, by_place_visited, work_log
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import FacilityRow, VisitRow
from fieldkit.kiosk.app import detach_service, kiosk
from fieldkit.kiosk.outbound import JST, statistics_body
from fieldkit.pki import KitPki
from fieldkit.runner import stop_service
from fieldkit.sync.roster import load_roster
from fieldkit.sync.wire import Statistics
from tests.hubkit import IngestFactory, wait_for
from tests.hubweb import (
    ClientFactory,
    add_handler,
    generated_statistics,
    store_statistics,
)
from tests.support.kiosk import PASSWORD, login, make_app, post
from tests.support.sync import start_tablet, tablet_config


def plan(web_app: Flask, date: str) -> tuple[int, int, int]:
    """Two visits of tab-a on ``date`` (morning hospital, afternoon hall), one of tab-b."""
    with Session(hubweb(web_app).engine) as session:
        hospital = FacilityRow(name="市立病院", kind="hospital", municipality="202011", address="")
        hall = FacilityRow(name="公民館", kind="public-hall", municipality="202037", address="")
        session.add_all([hospital, hall])
        session.flush()

        def visit(facility: FacilityRow, device: str, start: str, end: str) -> VisitRow:
            row = VisitRow(
                facility_id=facility.id, date=date, kind="application-support",
                device_id=device, lead="op-01", staff=[], start_time=start, end_time=end,
                incidents="",
            )  # fmt: skip
            session.add(row)
            return row

        rows = [
            visit(hospital, "tab-a", "09:00", "12:00"),
            visit(hall, "tab-a", "13:00", "16:00"),
            visit(hall, "tab-b", "09:00", "16:00"),
        ]
        session.commit()
        return rows[0].id, rows[1].id, rows[2].id


def test_the_days_visit_reaches_the_tablet_is_chosen_and_counted(
    broker: LocalBroker,
    hub_broker: HubBroker,
    pki: KitPki,
    web_app: Flask,
    client_as: ClientFactory,
    make_ingest: IngestFactory,
    database_url: str,
    operator_hash: str,
    tmp_path: Path,
) -> None:
    today = dt.datetime.now(JST).date().isoformat()
    morning, afternoon, elsewhere = plan(web_app, today)
    admin = client_as("admin")
    add_handler(admin)
    ingest = make_ingest(database_url, roster_poll=0.2)
    sync, app = start_tablet(tmp_path, pki, hub_broker.port, operator_hash)
    try:
        registry = kiosk(app).operators
        wait_for(lambda: len(registry.visits_on("tab-a", today)) == 2, what="the plan on tab-a")
    finally:
        detach_service(app)
        stop_service(sync)
    # The hub out of reach: a restarted tablet still has the plan (kept with the roster).
    ingest.stop()
    sync, app = start_tablet(tmp_path, pki, hub_broker.port, operator_hash)
    try:
        wait_for(lambda: kiosk(app).operators.visits_on("tab-a", today), what="the kept plan")
    finally:
        detach_service(app)
        stop_service(sync)
    # Staff at that tablet's counter (its kiosk without the other services, which the start
    # of a session would ask: the plan is the one sync kept).
    app = make_app(tablet_config(tmp_path, pki, hub_broker.port), operator_hash)
    state = kiosk(app)
    assert state.operators.apply_roster(load_roster(tmp_path / "operators.json"))
    with app.test_client() as client:
        login(client, "op-01", PASSWORD)
        home = client.get("/")
        assert home.status_code == 302 and home.headers["Location"].endswith("/visit")
        page = client.get("/visit").get_data(as_text=True)
        assert "今日の訪問先を選んでください" in page
        assert "市立病院" in page and "公民館" in page and "09:00〜12:00" in page
        assert f'value="{elsewhere}"' not in page  # tab-b's visit is not offered
        # No choice: said, and no session can start.
        refused = post(client, "/visit", {}, page="/visit")
        assert "訪問先を一つ選んでください" in refused.get_data(as_text=True)
        assert client.get("/").headers["Location"].endswith("/visit")
        # Another tablet's visit is refused as a choice.
        post(client, "/visit", {"visit": str(elsewhere)}, page="/visit")
        assert client.get("/").status_code == 302
        post(client, "/visit", {"visit": str(afternoon)}, page="/visit")
        assert client.get("/").status_code == 200  # the ready page: sessions may start
        post(client, "/", {"mode": "support"})
        session = state.counter.current
        assert session is not None and session.visit_id == afternoon
        post(client, "/abandon", {}, page="/scan")
        assert statistics_body(session, "label")["visit_id"] == afternoon
    assert any(e.action == f"visit-chosen:{afternoon}" for e in state.audit_log)

    # At the hub: one tablet, one day, two places, counted apart by the chosen visit.
    rows = generated_statistics(12, seed=3)
    for n, row in enumerate(rows):
        row.update(device_id="tab-a", date=today, outcome="applied")
        row["visit_id"] = morning if n < 5 else afternoon  # type: ignore[assignment]
    store_statistics(web_app, rows)
    with Session(hubweb(web_app).engine) as session:
        table = by_place_visited(session, Scope(today, today))
        counted = {row[0]: row[-1] for row in table.rows}
        assert counted["市立病院"] == 5 and counted["公民館"] == 7, table.rows
        # Each visit's work log (業務日誌) counts its own sessions, not the tablet's day.
        for visit_id, expected in ((morning, 5), (afternoon, 7)):
            visit = session.get(VisitRow, visit_id)
            assert visit is not None
            totals = work_log(session, visit, Scope())[1].rows[-1]
            assert totals[0] in ("合計", "合計 total") and totals[-1] == expected, totals


def test_without_a_visit_planned_today_nobody_is_asked(
    kit_config: object, operator_hash: str
) -> None:
    app = make_app(kit_config, operator_hash)  # type: ignore[arg-type]
    with app.test_client() as client:
        login(client)
        assert client.get("/").status_code == 200
        post(client, "/", {"mode": "support"})
        session = kiosk(app).counter.current
        assert session is not None and session.visit_id is None
        post(client, "/abandon", {}, page="/scan")
        assert "visit_id" not in statistics_body(session, "label")


@pytest.mark.parametrize("visit_id", [0, -3, "1; DROP", 1.5])
def test_a_statistics_record_with_a_bad_visit_is_refused(visit_id: object) -> None:
    body = {
        "site": "s", "date": "2026-08-01", "municipality": "202011", "sex": "unknown",
        "age_band": "unknown", "mode": "support", "outcome": "applied", "visit_id": visit_id,
    }  # fmt: skip
    with pytest.raises(ValidationError, match="visit_id"):
        Statistics.model_validate(body)
