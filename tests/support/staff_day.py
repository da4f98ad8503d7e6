"""A staff day seen from the hub, for the browser tests that follow a tablet's day there
(``test_staff_day_browser.py``, ``test_kiosk_counter_browser.py::test_a_day_at_the_counter``):
the day's visit on the hub's plan, the tablet's records arriving, and the hub's pages of the
day checked with axe-core and saved to $FIELDKIT_SCREENSHOTS."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from fieldkit.broker import free_loopback_port
from fieldkit.hub.db import AuditRow, ErasureRow, StatisticsRow
from fieldkit.hub.ingest import Ingest
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import FacilityRow, VisitRow
from tests.hubweb import Visitor

DEVICE = "test-tablet-01"  # the kiosk kit's tablet (tests/conftest.py)
# The hub's records arrive over sync's reconnects and retries: generous under a loaded CI.
HUB_TIMEOUT = 180.0


def plan_the_visit(web_app: Flask, date: str) -> int:
    """The day's visit on the hub's plan: the tablet at a public hall in Matsumoto."""
    with Session(hubweb(web_app).engine) as session:
        hall = FacilityRow(name="市民会館", kind="public-hall", municipality="202029", address="")
        session.add(hall)
        session.flush()
        visit = VisitRow(
            facility_id=hall.id, date=date, kind="application-support", device_id=DEVICE,
            lead="op-01", staff=[], start_time="09:00", end_time="17:00", incidents="",
        )  # fmt: skip
        session.add(visit)
        session.commit()
        return visit.id


def at_the_hub(ingest: Ingest, sids: list[str]) -> bool:
    """Every session's statistics, its start event and a verified, signed erasure record of
    each have reached the hub's database."""
    with Session(ingest.engine) as session:
        statistics = session.scalar(
            select(func.count()).select_from(StatisticsRow).where(StatisticsRow.device_id == DEVICE)
        )
        started = list(
            session.scalars(
                select(AuditRow.detail).where(
                    AuditRow.device_id == DEVICE, AuditRow.action == "start"
                )
            )
        )
        erased = [
            row.record.get("sid")
            for row in session.scalars(select(ErasureRow).where(ErasureRow.device_id == DEVICE))
            if row.verified and row.signed
        ]
    started_sids = {d.get("session") for d in started if isinstance(d, dict)}
    return statistics == len(sids) and set(sids) <= started_sids and set(sids) <= set(erased)


def serve_hub(web_app: Flask) -> tuple[str, Callable[[], None]]:
    """The hub web app on loopback: its address, and how to stop it."""
    hub = make_server("127.0.0.1", free_loopback_port(), web_app, threaded=True)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{hub.server_port}", hub.shutdown


def work_log_counts(admin: Visitor) -> dict[str, str]:
    """The work log page's totals row, by heading (申請, 回付, 同意なし, 中断, …)."""
    table = admin.page.locator("table").filter(has=admin.page.locator("th", has_text="同意なし"))
    assert table.count() == 1
    totals = table.locator("tbody tr", has_text="合計").inner_text().split()
    headings = table.locator("thead").inner_text().split()
    return dict(zip(headings[1:], totals[1:], strict=True))


def hub_pages_of_the_day(
    browser: Any,
    hub_base: str,
    web_app: Flask,
    visit: int,
    date: str,
    expected: dict[str, str],
    shot: str = "hub-day",
) -> list[str]:
    """The admin's pages of the day: the visit's work log (its totals as ``expected``), the
    evidence page (every session erased and verified: no red row) and the devices page. Each
    checked with axe-core, saved as ``<shot>-*.png`` when asked. Returns the pages' names."""
    admin = Visitor(browser, hub_base, "admin", web_app)
    findings = list(admin.code_page_findings)
    shots = os.environ.get("FIELDKIT_SCREENSHOTS")
    seen = []
    try:
        for path, name in (
            (f"/reports/worklog/{visit}", f"{shot}-worklog"),
            (f"/evidence?date={date}&device={DEVICE}", f"{shot}-evidence"),
            ("/devices", f"{shot}-devices"),
        ):
            assert admin.go(path) == 200, path
            findings += admin.axe_serious()
            if shots:
                admin.page.screenshot(path=str(Path(shots) / f"{name}.png"), full_page=True)
            seen.append(name)
            if "worklog" in path:
                said = work_log_counts(admin)
                assert {k: said[k] for k in expected} == expected, said
            elif "evidence" in path:
                # Every session erased and verified by the hub: no red row, nothing to check.
                admin.page.get_by_text("すべての申請に、消去を確認した記録があります").wait_for()
                assert admin.page.locator("tr.alarm-row").count() == 0
            else:
                assert DEVICE in admin.page.inner_text("main")
        assert findings == []
        assert not [e for e in admin.console_errors if "Content Security Policy" in e]
    finally:
        admin.context.close()
    return seen
