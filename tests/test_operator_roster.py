"""Operators made on the hub log in on the tablet; disabling or resetting one on the hub takes
effect there; a tablet that starts without the hub keeps the last roster it got (R13, R22).

The path is the real one: the hub web app's form writes the handler registry, hub-ingest reads
it and sends the roster down the tablet's TLS link (pushed on change, and answered when sync
asks on connect), sync keeps it on disk and passes it on the local bus, the kiosk applies it.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import AuditRow
from fieldkit.hub.web.extensions import hubweb
from fieldkit.hub.web.models import OperatorRow
from fieldkit.kiosk.app import detach_service, kiosk
from fieldkit.kiosk.operators import OperatorRegistry, hash_password
from fieldkit.kiosk.settings import OperatorEntry
from fieldkit.pki import KitPki
from fieldkit.runner import stop_service
from fieldkit.sync.courier import Courier
from fieldkit.sync.wire import OperatorRoster, RosterOperator
from tests.hubkit import IngestFactory, hub_signed, operator_roster, sync_settings, wait_for
from tests.hubweb import HANDLER_PASSWORD, ClientFactory, add_handler, csrf_token
from tests.support.kiosk import PASSWORD, login
from tests.support.sync import start_tablet

HUB_PASSWORD = HANDLER_PASSWORD
NEW_PASSWORD = "another long passphrase"


def test_hub_operators_reach_the_kiosk_and_changes_follow(
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
    admin = client_as("admin")
    created = add_handler(admin)
    token = csrf_token(admin, "/operators")
    assert created.status_code == 302
    ingest = make_ingest(database_url, roster_poll=0.2)
    sync, app = start_tablet(tmp_path, pki, hub_broker.port, operator_hash)
    registry = kiosk(app).operators
    try:
        wait_for(lambda: registry.get("jugyo-1"), what="the hub's operator on the tablet")
        with app.test_client() as client:
            assert login(client, "jugyo-1", HUB_PASSWORD).status_code == 302
            assert client.get("/").status_code == 200
            # Disabled on the hub: the tablet refuses it, and its open login ends.
            admin.post("/operators/jugyo-1/toggle", data={"csrf_token": token})
            wait_for(lambda: registry.get("jugyo-1") is None, what="the disable on the tablet")
            assert client.get("/").status_code == 302
        with app.test_client() as client:
            assert login(client, "jugyo-1", HUB_PASSWORD).status_code == 401
        # Enabled again with a new password: only the new one opens the tablet.
        admin.post("/operators/jugyo-1/toggle", data={"csrf_token": token})
        admin.post(
            "/operators/jugyo-1/password", data={"password": NEW_PASSWORD, "csrf_token": token}
        )

        # The enable and the new password may reach the tablet as two rosters: wait for the
        # one with the hash the hub holds now (a CI run under load logged in between them).
        def hub_hash() -> str:
            with Session(hubweb(web_app).engine) as session:
                row = session.get(OperatorRow, "jugyo-1")
                return row.password_hash if row is not None else ""

        def has_new_password() -> bool:
            entry = registry.get("jugyo-1")
            return entry is not None and entry.password_hash == hub_hash()

        wait_for(has_new_password, what="the new password on the tablet")
        wait_for(lambda: ingest.operators and registry.roster_version == ingest.operators.version)
        with app.test_client() as client:
            assert login(client, "jugyo-1", HUB_PASSWORD).status_code == 401
        with app.test_client() as client:
            assert login(client, "jugyo-1", NEW_PASSWORD).status_code == 302
        # The operators from the device config are still there.
        with app.test_client() as client:
            assert login(client, "op-01", PASSWORD).status_code == 302
    finally:
        detach_service(app)
        stop_service(sync)

    # The hub has evidence of each roster the tablet applied.
    def applied() -> list[AuditRow]:
        with Session(ingest.engine) as session:
            query = select(AuditRow).where(AuditRow.action == "operators-applied")
            return list(session.scalars(query))

    wait_for(lambda: len(applied()) >= 3, what="operators-applied evidence at the hub")
    assert {row.device_id for row in applied()} == {"tab-a"}

    # The last login, just before the kiosk stopped, still reaches the hub: the kiosk hands
    # its queued records to sync before it leaves the bus.
    def logins() -> set[str]:
        with Session(ingest.engine) as session:
            query = select(AuditRow.actor).where(AuditRow.action == "login")
            return set(session.scalars(query))

    wait_for(lambda: "op-01" in logins(), what="the last login's audit event at the hub")
    # Kept for the next start: readable by sync only, hashes and no password.
    kept = tmp_path / "operators.json"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    text = kept.read_text()
    assert "$argon2id$" in text and NEW_PASSWORD not in text and HUB_PASSWORD not in text

    # The admin sees the tablet holds the current roster ...
    def tablet_row() -> str:
        page = admin.get("/devices").get_data(as_text=True)
        return next(row for row in page.split("<tr>") if "<td>tab-a</td>" in row)

    wait_for(lambda: "<td>最新</td>" in tablet_row(), what="tab-a shown as current")

    # Without the hub (ingest stopped), a restarted tablet still knows the operators.
    ingest.stop()
    sync, app = start_tablet(tmp_path, pki, hub_broker.port, operator_hash)
    try:
        wait_for(lambda: kiosk(app).operators.get("jugyo-1"), what="the kept roster")
        with app.test_client() as client:
            assert login(client, "jugyo-1", NEW_PASSWORD).status_code == 302
    finally:
        detach_service(app)
        stop_service(sync)
    # ... and, after a change it could not receive, that it is behind (it still accepts an
    # operator disabled on the hub until it gets the roster).
    admin.post("/operators/jugyo-1/toggle", data={"csrf_token": token})
    assert "<td>古い（" in tablet_row()


@pytest.fixture(scope="module")
def hashes() -> tuple[str, str]:
    return hash_password("first long password"), hash_password("second long password")


def test_sync_keeps_only_a_consistent_newer_roster(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path, hashes: tuple[str, str]
) -> None:
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    first = operator_roster(100.0, RosterOperator(
        id="jugyo-1", name="窓口 花子", duty="handler", password_hash=hashes[0], disabled=False
    ))  # fmt: skip
    # A roster whose operators do not match its version (altered on the way) is refused.
    altered = first.model_copy(
        update={"operators": [first.operators[0].model_copy(update={"password_hash": hashes[1]})]}
    )
    # Signed by the hub as it stands (the hub's key is not what this test is about:
    # test_sync_downlink.py is).
    assert not courier.apply_roster(hub_signed(pki, altered).encode())
    assert not settings.roster_path().exists()
    assert not courier.apply_roster(b'{"v": 1, "type": "operator-roster", "version": "x"}')
    signed = hub_signed(pki, first)
    assert courier.apply_roster(signed.encode())
    # An older roster, even a consistent one, does not replace a newer one.
    older = operator_roster(50.0, first.operators[0].model_copy(update={"disabled": True}))
    assert not courier.apply_roster(hub_signed(pki, older).encode())
    assert courier.roster == signed
    courier.outbox.close()
    # A restart reads it back.
    again = Courier("tab-a", settings)
    assert again.roster == signed
    again.outbox.close()
    assert stat.S_IMODE(settings.roster_path().stat().st_mode) == 0o600


def test_the_kiosk_merges_the_hub_roster_over_its_configured_operators(
    hashes: tuple[str, str],
) -> None:
    configured = [
        OperatorEntry(id="op-01", name="窓口 一郎", password_hash=hashes[0]),
        OperatorEntry(id="op-02", name="窓口 二郎", password_hash=hashes[0]),
    ]
    registry = OperatorRegistry(configured, max_failures=5, lockout_seconds=600)
    hub = operator_roster(
        10.0,
        RosterOperator(
            id="op-01", name="窓口 一郎", duty="handler", password_hash=hashes[0], disabled=True
        ),
        RosterOperator(
            id="jugyo-1", name="窓口 花子", duty="responsible", password_hash=hashes[1],
            disabled=False,
        ),
    )  # fmt: skip
    assert registry.apply_roster(hub)
    assert registry.get("op-01") is None  # the hub disabled it
    assert registry.get("op-02") is not None  # only in the config: stays
    entry = registry.get("jugyo-1")
    assert entry is not None and entry.password_hash == hashes[1]
    # Older or empty rosters change nothing.
    assert not registry.apply_roster(operator_roster(5.0))
    assert not registry.apply_roster(OperatorRoster(version="", issued_at=99.0))
    assert registry.get("jugyo-1") is not None and registry.roster_version == hub.version
