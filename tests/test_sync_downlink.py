"""What the hub tells a tablet counts only when the hub signed it for that tablet (issue 17
item 3; R16): a forged ack or operator roster published on the hub broker is refused by the
tablet, and nothing is deleted or changed.

Real mutual-TLS mosquitto brokers; the forger is a client the broker lets publish on the
tablet's downlink: one holding the hub ingest's TLS credential, or another tablet on a broker
without the downlink ACL (the hub image's broker, issue 17). Each protection is also shown
to be needed: with the tablet's check switched off, the same forgery deletes the record or
replaces the roster.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from fieldkit.hub.broker import HubBroker
from fieldkit.kiosk.operators import hash_password
from fieldkit.pki import KitPki, PkiError
from fieldkit.sync.courier import Courier
from fieldkit.sync.downlink import DownlinkGuard
from fieldkit.sync.link import tls_client, tls_context
from fieldkit.sync.wire import (
    Ack,
    Acks,
    RosterOperator,
    RosterReceiver,
    down_topic,
    roster_topic,
    roster_version,
)
from tests.hubkit import (
    CourierFactory,
    IngestFactory,
    enrol_tablet,
    hub_signed,
    operator_roster,
    statistics_body,
    sync_settings,
    tablet_dir,
    wait_for,
)

REFUSED = "refused a message from the hub broker"
OPERATOR_NAME = "窓口 花子"  # an operator's name: personal data, never in a log line


class Forger:
    """A client the hub broker lets publish on a tablet's downlink (QoS 1, PUBACK awaited)."""

    def __init__(self, context: ssl.SSLContext, port: int) -> None:
        self.client = tls_client("forger", context)
        self.client.connect("localhost", port, keepalive=10)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ingest_credential(pki: KitPki) -> ssl.SSLContext:
    """The TLS identity the broker's ACL lets write every downlink (not the downlink key)."""
    return tls_context(pki.ca_cert, pki.hub_file("ingest.crt"), pki.hub_file("ingest.key"))


class NoDownlinkAclBroker(HubBroker):
    """The hub image's broker as issue 17 found it: any device may write any downlink."""

    def write_files(self) -> None:
        super().write_files()
        acl = self.directory / "acl"
        acl.write_text(acl.read_text() + "pattern write fieldkit/+/down/#\n")


@pytest.fixture
def guard_switch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """``on``: the tablet's checks as built; ``off``: every downlink accepted (to show the
    test fails without them)."""
    if request.param == "off":
        monkeypatch.setattr(DownlinkGuard, "check", lambda self, message: None)
        monkeypatch.setattr(DownlinkGuard, "check_newer", lambda self, roster, installed: None)
    return bool(request.param == "on")


def waiting_record(courier: Courier) -> str:
    """Submit a record and wait until the courier has sent it (and so is subscribed)."""
    assert courier.link.wait_connected(10)
    record_id = courier.submit_record("statistics", statistics_body())
    wait_for(lambda: courier.outbox.state().sent == 1, 10, "the record sent")
    return record_id


def in_outbox(courier: Courier) -> int:
    state = courier.outbox.state()
    return state.pending + state.sent


def ack_for(record_id: str) -> Acks:
    return Acks(items=[Ack(record_id=record_id, outcome="stored")], issued_at=time.time())


# Why the tablet refuses each (the log line names the type and the reason, nothing else).
REASONS = {
    "unsigned": "unsigned acks",
    "other-key": "acks not signed by the hub key pinned at enrolment",
    "for-another-tablet": "acks signed for another device (tab-b)",
    "altered": "acks not signed by the hub key pinned at enrolment",
}


def forged_ack(kind: str, pki: KitPki, record_id: str) -> Acks:
    if kind == "unsigned":
        # Well-formed, addressed to tab-a, nonce and all; only the signature is missing.
        return ack_for(record_id).model_copy(update={"device_id": "tab-a", "nonce": "0" * 32})
    if kind == "other-key":
        return ack_for(record_id).signed_for("tab-a", ed25519.Ed25519PrivateKey.generate())
    if kind == "for-another-tablet":
        # Genuinely the hub's, but for tab-b: replayed onto tab-a's downlink.
        return hub_signed(pki, ack_for(record_id), "tab-b")
    assert kind == "altered"
    genuine = hub_signed(pki, ack_for("f" * 32), "tab-a")
    return genuine.model_copy(update={"items": [Ack(record_id=record_id, outcome="stored")]})


@pytest.mark.parametrize("guard_switch", ["on", "off"], indirect=True)
@pytest.mark.parametrize("kind", ["unsigned", "other-key", "for-another-tablet", "altered"])
def test_a_forged_ack_on_the_hub_broker_deletes_nothing(
    pki: KitPki,
    hub_broker: HubBroker,
    make_courier: CourierFactory,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    guard_switch: bool,
) -> None:
    """R16: no hub ingest runs, so no genuine ack exists; the forger acks the record."""
    caplog.set_level(logging.INFO)
    courier = make_courier("tab-a")
    record_id = waiting_record(courier)
    forger = Forger(ingest_credential(pki), hub_broker.port)
    try:
        forger.publish(down_topic("tab-a"), forged_ack(kind, pki, record_id).encode())
        if not guard_switch:
            # Without the check the forgery deletes a record the hub never stored.
            wait_for(lambda: courier.outbox.state().acked_total == 1, 10, "the forged ack taken")
            assert in_outbox(courier) == 0
            return
        wait_for(lambda: REFUSED in caplog.text, 10, "the refusal in the log")
        assert f"{REFUSED}: {REASONS[kind]}; nothing changed" in caplog.text
        time.sleep(0.5)  # room for a wrongly taken ack to be applied
        assert courier.outbox.state().acked_total == 0
        assert in_outbox(courier) == 1
    finally:
        forger.close()


def operator(password_hash: str, *, disabled: bool = False) -> RosterOperator:
    return RosterOperator(
        id="jugyo-1",
        name=OPERATOR_NAME,
        duty="handler",
        password_hash=password_hash,
        disabled=disabled,
    )


@pytest.fixture(scope="module")
def hashes() -> tuple[str, str]:
    return hash_password("the operator's own password"), hash_password("the forger's password")


@pytest.fixture
def no_acl_broker(pki: KitPki, tmp_path: Path) -> Iterator[HubBroker]:
    with NoDownlinkAclBroker(pki, tmp_path / "broker", port=0) as broker:
        yield broker


@pytest.mark.parametrize("guard_switch", ["on", "off"], indirect=True)
def test_a_forged_roster_from_another_tablet_changes_no_password(
    pki: KitPki,
    no_acl_broker: HubBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    hashes: tuple[str, str],
    guard_switch: bool,
) -> None:
    """R13 R16: tab-b, on a broker that lets it write tab-a's downlink, sends tab-a a newer
    roster giving the operator its own password; tab-a keeps the hub's."""
    caplog.set_level(logging.INFO)
    settings = sync_settings(pki, no_acl_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    installed = hub_signed(pki, operator_roster(100.0, operator(hashes[0])))
    assert courier.apply_roster(installed.encode())
    kept = settings.roster_path().read_bytes()
    courier.start()
    bundle = tablet_dir(pki, "tab-b")
    forger = Forger(
        tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
        no_acl_broker.port,
    )
    try:
        waiting_record(courier)  # connected and subscribed
        forged = operator_roster(time.time(), operator(hashes[1])).model_copy(
            update={"device_id": "tab-a", "nonce": "1" * 32}
        )
        forger.publish(roster_topic("tab-a"), forged.encode())
        if not guard_switch:
            wait_for(lambda: courier.roster.version == forged.version, 10, "the forgery taken")
            assert settings.roster_path().read_bytes() != kept
            return
        wait_for(lambda: REFUSED in caplog.text, 10, "the refusal in the log")
        time.sleep(0.5)
        assert courier.roster == installed
        assert settings.roster_path().read_bytes() == kept
        assert OPERATOR_NAME not in caplog.text and hashes[1] not in caplog.text
    finally:
        forger.close()
        courier.stop()


@pytest.mark.parametrize("guard_switch", ["on", "off"], indirect=True)
def test_a_replayed_older_roster_is_refused(
    pki: KitPki,
    hub_broker: HubBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    hashes: tuple[str, str],
    guard_switch: bool,
) -> None:
    """The hub's own older roster for this very tablet (it had the operator enabled, with the
    old password), replayed after the hub disabled the operator: refused, still disabled."""
    caplog.set_level(logging.INFO)
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    courier = Courier("tab-a", settings)
    old = hub_signed(pki, operator_roster(100.0, operator(hashes[1])))
    new = hub_signed(pki, operator_roster(200.0, operator(hashes[0], disabled=True)))
    assert courier.apply_roster(new.encode())
    courier.start()
    forger = Forger(ingest_credential(pki), hub_broker.port)
    try:
        waiting_record(courier)
        forger.publish(roster_topic("tab-a"), old.encode())
        if not guard_switch:
            wait_for(lambda: courier.roster == old, 10, "the old roster taken back")
            return
        wait_for(lambda: "older than the one installed" in caplog.text, 10, "the refusal")
        assert courier.roster == new and courier.roster.operators[0].disabled
        assert OPERATOR_NAME not in caplog.text
    finally:
        forger.close()
        courier.stop()
    # A restarted tablet holds the same line: the installed roster is kept on disk.
    again = Courier("tab-a", settings)
    assert not again.apply_roster(
        hub_signed(pki, operator_roster(150.0, operator(hashes[1]))).encode()
    )
    assert again.roster == new
    again.outbox.close()


def test_a_repeated_or_stale_ack_is_refused(pki: KitPki) -> None:
    """Each signed message counts once; acks far older than the newest taken are stale."""
    guard = DownlinkGuard(tablet_dir(pki, "tab-a"), "tab-a")
    first = hub_signed(pki, ack_for("a" * 32))
    assert guard.accepts(first)
    assert not guard.accepts(first)  # the same message again
    stale = hub_signed(pki, ack_for("b" * 32).model_copy(update={"issued_at": time.time() - 3600}))
    assert not guard.accepts(stale)
    assert guard.accepts(hub_signed(pki, ack_for("c" * 32)))


def test_re_enrolment_pins_a_rotated_hub_key(
    pki: KitPki,
    make_ingest: IngestFactory,
    make_courier: CourierFactory,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After ``fieldkit pki downlink-key --rotate`` the running ingest signs with the new key:
    a tablet that pinned the old one keeps its records (refuses the acks), and enrolling it
    again pins the new key, after which its records drain."""
    caplog.set_level(logging.INFO)
    ingest = make_ingest(sqlite_url)
    old_pin = (tablet_dir(pki, "tab-a") / "hub-downlink.pem").read_bytes()
    courier = make_courier("tab-a")
    courier.submit_record("statistics", statistics_body())
    wait_for(lambda: courier.outbox.state().acked_total == 1, 20, "acked before the rotation")
    pki.rotate_downlink_key()
    assert pki.downlink_public.read_bytes() != old_pin
    courier.submit_record("statistics", statistics_body(1))
    wait_for(lambda: ingest.stored == 2, 20, "the hub stored the second record")
    wait_for(lambda: "not signed by the hub key pinned" in caplog.text, 10, "the refusal")
    assert courier.outbox.state().acked_total == 1 and in_outbox(courier) == 1
    courier.stop()

    pki.revoke("tab-a")
    enrol_tablet(pki, "tab-a")
    assert (tablet_dir(pki, "tab-a") / "hub-downlink.pem").read_bytes() == (
        pki.downlink_public.read_bytes()
    )
    again = make_courier("tab-a")  # the same outbox, the second record still in it
    again.submit_record("statistics", statistics_body(2))
    wait_for(lambda: again.outbox.state().pending + again.outbox.state().sent == 0, 30, "drained")
    assert ingest.stored == 3


def test_a_tablet_without_a_pinned_key_does_not_start_its_outbox(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path
) -> None:
    """An enrolment from before the signed downlink has no pin: sync says "enrol again" (its
    service then refuses every request as not enrolled) instead of trusting the broker."""
    (tablet_dir(pki, "tab-a") / "hub-downlink.pem").unlink()
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    with pytest.raises(PkiError, match="enrol this tablet again"):
        Courier("tab-a", settings)
    assert not settings.outbox.exists()  # refused before any outbox was made


def receiver(code: str, public_pem: bytes) -> RosterReceiver:
    return RosterReceiver(municipality=code, public_key=public_pem.decode())


@pytest.mark.parametrize("guard_switch", ["on", "off"], indirect=True)
def test_a_roster_with_a_tampered_receiver_key_changes_no_key(
    pki: KitPki,
    hub_broker: HubBroker,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    hashes: tuple[str, str],
    guard_switch: bool,
) -> None:  # R15 R16, issue 21
    """The hub's genuine roster for this tablet, its receiver key for 131016 swapped for the
    forger's own (so that packets would be sealed to a key the forger holds) and its version
    made to match: the signature no longer holds, the roster is refused and the tablet's
    receivers folder is as it was. With the check off the forger's key is installed."""
    caplog.set_level(logging.INFO)
    settings = sync_settings(pki, hub_broker, "tab-a", tmp_path / "outbox.sqlite")
    folder = settings.bundle / "receivers"
    genuine = pki.receivers()["131016"]
    courier = Courier("tab-a", settings)
    installed = hub_signed(
        pki, operator_roster(100.0, operator(hashes[0]), receivers=[receiver("131016", genuine)])
    )
    assert courier.apply_roster(installed.encode())
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert (folder / "131016.pem").read_bytes() == genuine
    forgers_key = x25519.X25519PrivateKey.generate().public_key()
    swapped = [receiver("131016", public_pem_x25519(forgers_key))]
    newer = hub_signed(
        pki, operator_roster(200.0, operator(hashes[0]), receivers=[receiver("131016", genuine)])
    )
    tampered = newer.model_copy(
        update={
            "receivers": swapped,
            "version": roster_version(newer.operators, newer.visits, swapped),
        }
    )
    courier.start()
    forger = Forger(ingest_credential(pki), hub_broker.port)
    try:
        waiting_record(courier)
        forger.publish(roster_topic("tab-a"), tampered.encode())
        if not guard_switch:
            wait_for(lambda: courier.roster == tampered, 10, "the tampered roster taken")
            assert (folder / "131016.pem").read_bytes() == public_pem_x25519(forgers_key)
            return
        wait_for(lambda: REFUSED in caplog.text, 10, "the refusal in the log")
        assert "not signed by the hub key pinned at enrolment" in caplog.text
        time.sleep(0.5)
        assert courier.roster == installed
        assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    finally:
        forger.close()
        courier.stop()


def public_pem_x25519(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
