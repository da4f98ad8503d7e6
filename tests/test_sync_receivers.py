"""Receiver keys imported on the hub after a tablet enrolled reach it with the signed roster
(issue 21): sync writes them into the bundle's ``receivers/`` folder, the kiosk offers that
municipality for an application, and the packet sealed to the key is accepted by the hub.

The end-to-end test takes the real path: the contractor's `fieldkit pki receiver import`, the
hub web app's handler registry, hub-ingest's roster on the real mutual-TLS hub broker, the
tablet's sync service and kiosk on its real local broker. A tampered key in a roster is
refused in ``test_sync_downlink.py`` (with the check off, shown taken).
"""

from __future__ import annotations

import logging
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import SealedPacketRow
from fieldkit.hub.roster import tablet_roster
from fieldkit.kiosk.app import kiosk
from fieldkit.kiosk.flow import Step
from fieldkit.kiosk.operators import hash_password
from fieldkit.pki import KitPki
from fieldkit.sealing import open_packet
from fieldkit.sync.courier import Courier
from fieldkit.sync.wire import RosterOperator, RosterReceiver
from tests.hubkit import (
    IngestFactory,
    hub_signed,
    operator_roster,
    sync_settings,
    tablet_dir,
    wait_for,
)
from tests.hubweb import ClientFactory, add_handler
from tests.kiosk_kit import KioskFactory
from tests.support.kiosk import login, post
from tests.support.municipality import MUNICIPALITY_MACHINES

DEVICE = "test-tablet-01"  # the kiosk kit's tablet (tests/conftest.py)
NAGANO = "202011"  # 長野市: in the kit's table; its key is imported only after enrolment


def operator() -> RosterOperator:
    return RosterOperator(
        id="jugyo-1",
        name="窓口 花子",
        duty="handler",
        password_hash=hash_password("the operator's own password"),
        disabled=False,
    )


def receiver(code: str, pem: bytes) -> RosterReceiver:
    return RosterReceiver(municipality=code, public_key=pem.decode())


def pem_of(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def folder_of(courier: Courier) -> dict[str, bytes]:
    folder = courier.settings.bundle / "receivers"
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_a_roster_adds_replaces_and_removes_receiver_keys(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:  # issue 21
    """The folder holds exactly the roster's keys, each readable by the kiosk (0644); a roster
    without ``receivers`` (one from before) leaves the folder alone."""
    caplog.set_level(logging.INFO)
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    try:
        chiyoda = pki.receivers()["131016"]
        assert folder_of(courier) == {"131016.pem": chiyoda}  # from the enrolment
        # Without receivers: nothing changes.
        assert courier.apply_roster(hub_signed(pki, operator_roster(10.0, operator())).encode())
        assert folder_of(courier) == {"131016.pem": chiyoda}
        # A key imported later arrives.
        nagano = pem_of(x25519.X25519PrivateKey.generate().public_key())
        both = [receiver("131016", chiyoda), receiver(NAGANO, nagano)]
        assert courier.apply_roster(
            hub_signed(pki, operator_roster(20.0, operator(), receivers=both)).encode()
        )
        assert folder_of(courier) == {"131016.pem": chiyoda, f"{NAGANO}.pem": nagano}
        mode = (settings.bundle / "receivers" / f"{NAGANO}.pem").stat().st_mode
        assert stat.S_IMODE(mode) == 0o644
        # Replaced (the municipality made a new key) and removed (taken off the hub).
        renewed = pem_of(x25519.X25519PrivateKey.generate().public_key())
        assert courier.apply_roster(
            hub_signed(
                pki, operator_roster(30.0, operator(), receivers=[receiver(NAGANO, renewed)])
            ).encode()
        )
        assert folder_of(courier) == {f"{NAGANO}.pem": renewed}
        assert "added -, replaced 202011, removed 131016" in caplog.text
        # No temporary file is left behind.
        assert not list((settings.bundle / "receivers").glob(".*"))
    finally:
        courier.outbox.close()


@pytest.mark.parametrize("bad", ["private", "not-x25519", "twice"])
def test_a_roster_with_a_key_that_is_not_a_public_sealing_key_changes_nothing(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path, bad: str
) -> None:  # issue 21: public keys only
    """Signed by the hub and all (a hub bug, not a forgery): a private key, a key of another
    kind or a municipality named twice refuses the whole roster; folder and roster stay."""
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    try:
        before = folder_of(courier)
        private = x25519.X25519PrivateKey.generate()
        good = receiver(NAGANO, pem_of(private.public_key()))
        if bad == "private":
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            wrong = [receiver(NAGANO, pem)]
        elif bad == "not-x25519":
            wrong = [receiver(NAGANO, (settings.bundle / "hub-downlink.pem").read_bytes())]
        else:
            wrong = [good, good]
        roster = hub_signed(pki, operator_roster(10.0, operator(), receivers=wrong))
        assert not courier.apply_roster(roster.encode())
        assert folder_of(courier) == before
        assert courier.roster.version == ""
        assert not settings.roster_path().exists()
        # The same with the key as it should be is taken (the refusal was the key's).
        fixed = hub_signed(pki, operator_roster(20.0, operator(), receivers=[good]))
        assert courier.apply_roster(fixed.encode())
        assert folder_of(courier) == {f"{NAGANO}.pem": pem_of(private.public_key())}
    finally:
        courier.outbox.close()


def test_the_hubs_roster_carries_public_receiver_keys_and_a_new_key_makes_a_new_version(
    pki: KitPki, web_app: Flask, client_as: ClientFactory
) -> None:
    from fieldkit.hub.web.extensions import hubweb

    admin = client_as("admin")
    add_handler(admin)
    with Session(hubweb(web_app).engine) as session:
        before = tablet_roster(session, receivers=pki.receivers())
        assert before is not None and before.receivers is not None
        assert [r.municipality for r in before.receivers] == ["131016"]
        MUNICIPALITY_MACHINES.register(pki, NAGANO)
        after = tablet_roster(session, receivers=pki.receivers())
    assert after is not None and after.receivers is not None
    assert [r.municipality for r in after.receivers] == ["131016", NAGANO]
    assert after.version != before.version
    assert all("PRIVATE" not in r.public_key for r in after.receivers)


def test_a_key_imported_on_the_hub_after_enrolment_reaches_the_kiosk_and_its_packet_the_hub(
    start_kiosk: KioskFactory,
    hub_broker: HubBroker,
    pki: KitPki,
    web_app: Flask,
    client_as: ClientFactory,
    make_ingest: IngestFactory,
    database_url: str,
    tmp_path: Path,
) -> None:  # R8 R15, issue 21 item 4
    admin = client_as("admin")
    add_handler(admin)
    ingest = make_ingest(database_url, roster_poll=0.2)
    # The kit's tablet, enrolled now (with the keys of 131016 and 202029), syncing to the hub.
    app = start_kiosk(camera=False, hub_port=hub_broker.port, holder_timeout=30.0)
    bundle = tablet_dir(pki, DEVICE)
    target = bundle / "receivers" / f"{NAGANO}.pem"
    assert not target.exists()  # enrolled before 長野市 had a key
    kept_roster = tmp_path / "operators.json"
    wait_for(kept_roster.exists, 60, "the hub's first roster on the tablet")
    with app.test_client() as client:
        to_statistics(client, app)
        offered, forward_only = split(client.get("/statistics").get_data(as_text=True))
        assert ">長野市<" in forward_only and ">長野市<" not in offered

        # The contractor imports the key 長野市 made, as the manual says.
        made = MUNICIPALITY_MACHINES.key(NAGANO)
        run = subprocess.run(
            [
                *(sys.executable, "-m", "fieldkit", "pki", "--dir", str(pki.root)),
                *("receiver", "import", NAGANO, str(made.public)),
                *("--fingerprint", made.fingerprint),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        wait_for(target.exists, 60, "長野市's key in the tablet's receivers folder")
        assert target.read_bytes() == made.public.read_bytes()
        # The same statistics page, reloaded: 長野市 is offered for an application now.
        offered, forward_only = split(client.get("/statistics").get_data(as_text=True))
        assert ">長野市<" in offered and ">長野市<" not in forward_only
        post(client, "/statistics", {"municipality": NAGANO, "age_band": "80-89"})
        post(client, "/submit", {}, page="/review")
        session = kiosk(app).counter.current
        assert session is not None and session.step in (Step.PRINT, Step.DONE)

    def packets() -> list[SealedPacketRow]:
        with Session(ingest.engine) as db:
            query = select(SealedPacketRow).where(SealedPacketRow.municipality == NAGANO)
            return list(db.scalars(query))

    wait_for(packets, 120, "the packet for 長野市 stored by hub-ingest")
    (row,) = packets()
    # Only 長野市's private key opens it: the tablet sealed to the key the hub imported.
    opened = open_packet(row.packet(), MUNICIPALITY_MACHINES.private(NAGANO), None)
    assert b"98765432109876543210987" in opened

    # The hub's device page: the tablet holds the current roster (its version covers the keys).
    def tablet_row() -> str:
        page = admin.get("/devices").get_data(as_text=True)
        return next(row for row in page.split("<tr>") if f"<td>{DEVICE}</td>" in row)

    wait_for(lambda: "<td>最新</td>" in tablet_row(), 60, "the tablet shown as current")


def to_statistics(client: FlaskClient, app: Flask) -> None:
    login(client)
    post(client, "/", {"mode": "support"})
    post(client, "/scan", {"application_id": "9876 5432 1098 7654 3210 987"})
    post(client, "/terms", {"answer": "agree"})
    kiosk(app).counter.set_photo(b"\xff\xd8print\xff\xd9", b"\xff\xd8online\xff\xd9")
    post(client, "/options", {"e_certificate": "yes", "braille": "no"})
    current = kiosk(app).counter.current
    assert current is not None and current.step is Step.STATISTICS


def split(page: str) -> tuple[str, str]:
    main, _, rest = page.partition('id="forward-only"')
    return main, rest


def test_a_receivers_folder_sync_cannot_write_holds_back_no_operator_and_is_written_later(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The operators (a disabled one must reach the tablet) are kept whatever happens to the
    keys; the keys are written at the next status round once the folder can take them."""
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    folder = settings.bundle / "receivers"
    aside = tmp_path / "receivers-aside"
    try:
        folder.rename(aside)
        folder.write_text("not a folder")  # as root, a mode would not stop the write
        nagano = pem_of(x25519.X25519PrivateKey.generate().public_key())
        roster = hub_signed(
            pki,
            operator_roster(10.0, operator(), receivers=[receiver(NAGANO, nagano)]),
        )
        assert courier.apply_roster(roster.encode())
        assert courier.roster == roster and settings.roster_path().exists()
        assert "receiver keys from the hub not written into the bundle" in caplog.text
        folder.unlink()
        aside.rename(folder)
        courier.announce()  # the status round (the hub is not connected: nothing is sent)
        assert folder_of(courier) == {f"{NAGANO}.pem": nagano}
    finally:
        courier.outbox.close()
