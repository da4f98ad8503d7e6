"""A staff day across the kiosk and the hub, in Chromium (issue 21, "Must show"): an operator
logs in at the tablet and serves two applicants — one without a form, forwarded to the
municipality; one who does not agree to the terms — each session ended with one tap and wiped;
sync carries the statistics, the audit events and the erasure records to the real hub broker
and ingest; the hub's admin then finds the day's counts (回付 1, 同意なし 1) in the visit's work
log and both sessions erased and verified on the evidence page.

Every screen on both sides: axe-core (nothing serious or critical); the kiosk's also the
Japanese-text check. Screens go to $FIELDKIT_SCREENSHOTS when set. Every wait is on a
condition with a deadline (the pages, the records at the hub), never a fixed sleep.
R2 R6 R8 R13 R21 R24"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask

from fieldkit.hub.broker import HubBroker
from fieldkit.hub.ingest import Ingest
from fieldkit.hub.web.counts import JST
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.flow import Outcome
from tests.hubkit import IngestFactory
from tests.kiosk_kit import KioskFactory
from tests.support.kiosk_browser import Counter, serve
from tests.support.staff_day import (
    HUB_TIMEOUT,
    at_the_hub,
    hub_pages_of_the_day,
    plan_the_visit,
    serve_hub,
)
from tests.support.waiting import wait_for

MANUAL = "申請書IDを手で入力する(23けた)"
WIPED = "前の方のデータを消去し、残っていないことを確かめました"


@pytest.fixture
def tablet_and_hub(
    start_kiosk: KioskFactory,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    database_url: str,
    web_app: Flask,
) -> Iterator[tuple[Flask, str, Ingest, str]]:
    """The tablet's kit syncing to the hub broker, ingest into the hub web app's database,
    both served on loopback. No camera: the applicants' IDs are typed."""
    ingest = make_ingest(database_url)
    # The holders get 30 s to answer the wipe (2 s in the kit's tests, which a loaded machine
    # misses: "holder kiosk did not answer", and the wipe fails closed).
    app = start_kiosk(camera=False, hub_port=hub_broker.port, holder_timeout=30.0)
    kiosk_base, stop_kiosk = serve(app)
    hub_base, stop_hub = serve_hub(web_app)
    try:
        yield app, kiosk_base, ingest, hub_base
    finally:
        stop_hub()
        stop_kiosk()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_staff_day_at_the_tablet_and_at_the_hub(
    tablet_and_hub: tuple[Flask, str, Ingest, str], web_app: Flask, browser: Any
) -> None:
    app, kiosk_base, ingest, hub_base = tablet_and_hub
    today = dt.datetime.now(JST).date().isoformat()
    visit = plan_the_visit(web_app, today)
    at = Counter(browser, kiosk_base)
    sids: list[str] = []
    try:
        at.login()

        # The first applicant has no form: forwarded to where they live, chosen by name (R8).
        at.start("support")
        session = kiosk(app).counter.current
        assert session is not None
        sids.append(session.sid)
        at.check("day-scan")
        at.tap(at.button("申請書がない・IDが分からない(市町村へ回付)"))
        at.page.wait_for_url("**/forward")
        at.check("day-forward")
        at.pick(at.page.get_by_role("combobox"), "202029")
        at.tap(at.button("次へ"))
        at.next_applicant("市町村へ回付しました", "day-ended-forwarded")
        assert WIPED in at.page.content()
        assert session.outcome is Outcome.FORWARDED

        # The second types a form's ID, then does not agree to the terms (R2).
        at.start("support")
        session = kiosk(app).counter.current
        assert session is not None
        sids.append(session.sid)
        at.page.get_by_label(MANUAL).fill("9876 5432 1098 7654 3210 987")
        at.tap(at.button("次へ"))
        at.page.wait_for_url("**/terms")
        at.check("day-terms")
        at.tap(at.button("同意しない"))
        at.next_applicant("同意いただけなかった", "day-ended-declined")
        assert WIPED in at.page.content()
        assert session.outcome is Outcome.DECLINED
        assert kiosk(app).counter.current is None
        assert at.console_errors == [] and at.not_found == []
    finally:
        at.context.close()

    # sync delivers both sessions' statistics, audit events and erasure records to the hub.
    wait_for(lambda: at_the_hub(ingest, sids), HUB_TIMEOUT, "the day's records at the hub")

    pages = hub_pages_of_the_day(
        browser,
        hub_base,
        web_app,
        visit,
        today,
        {"回付": "1", "同意なし": "1", "申請": "0", "中断": "0"},
    )
    assert pages == ["hub-day-worklog", "hub-day-evidence", "hub-day-devices"]
