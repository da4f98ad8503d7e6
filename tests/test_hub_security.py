"""Who may talk to the hub, and what the hub accepts. R15 R16

Each protection is shown holding, and (where it can be switched off) shown to be needed.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import RefusalRow
from fieldkit.hub.ingest import Ingest
from fieldkit.pki import KitPki
from fieldkit.sync.wire import up_topic
from tests.hubkit import (
    DeviceClient,
    IngestFactory,
    count_records,
    device_client,
    enrol_tablet,
    signed_record,
    statistics_body,
    tablet_dir,
    try_connect,
    wait_for,
)


def refusals(ingest: Ingest) -> list[RefusalRow]:
    with Session(ingest.engine) as session:
        return list(session.scalars(select(RefusalRow)))


def test_enrolled_device_connects(pki: KitPki, hub_broker: HubBroker) -> None:
    assert try_connect(device_client(tablet_dir(pki, "tab-a")), hub_broker.port) == "connected"


def test_client_without_certificate_is_refused(pki: KitPki, hub_broker: HubBroker) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(pki.ca_cert))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="nocert", protocol=mqtt.MQTTv5)
    client.tls_set_context(context)
    assert try_connect(client, hub_broker.port).startswith("refused")


def test_certificate_from_another_ca_is_refused(
    pki: KitPki, hub_broker: HubBroker, tmp_path: Path
) -> None:
    other = KitPki(tmp_path / "other-ca" / "pki")
    other.init("someone else's CA")
    bundle = enrol_tablet(other, "tab-a")  # same CN as a real device: the CA is what counts
    # Trust our hub (so the server side verifies) but present the foreign client certificate.
    client = device_client(bundle, ca=pki.ca_cert)
    assert try_connect(client, hub_broker.port).startswith("refused")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_below_1_2_is_refused(pki: KitPki, hub_broker: HubBroker) -> None:
    bundle = tablet_dir(pki, "tab-a")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=str(bundle / "ca.crt"))
    context.load_cert_chain(str(bundle / "client.crt"), str(bundle / "client.key"))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls12", protocol=mqtt.MQTTv5)
    client.tls_set_context(context)
    assert try_connect(client, hub_broker.port) == "connected"  # 1.2 is the floor, allowed

    # A client that offers only TLS 1.0/1.1 (with its own library's floor lowered) is refused.
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="old-tls", protocol=mqtt.MQTTv5)
    client.tls_set_context(context)
    assert try_connect(client, hub_broker.port).startswith("refused")


class BrokerWithoutCrl(HubBroker):
    """The protection switched off: the same broker, with no CRL configured."""

    def render_config(self) -> str:
        return "\n".join(
            line for line in super().render_config().splitlines() if not line.startswith("crlfile")
        )


def test_revoked_certificate_is_refused_and_the_crl_is_what_refuses_it(
    pki: KitPki, tmp_path: Path
) -> None:
    pki.revoke("tab-b")
    with HubBroker(pki, tmp_path / "with-crl", port=0) as broker:
        assert try_connect(device_client(tablet_dir(pki, "tab-b")), broker.port).startswith(
            "refused"
        )
        # The other device is untouched.
        assert try_connect(device_client(tablet_dir(pki, "tab-a")), broker.port) == "connected"
    with BrokerWithoutCrl(pki, tmp_path / "without-crl", port=0) as broker:
        assert try_connect(device_client(tablet_dir(pki, "tab-b")), broker.port) == "connected"


def test_revoked_device_records_are_refused_by_ingest_too(
    pki: KitPki, hub_broker: HubBroker, make_ingest: IngestFactory, database_url: str
) -> None:
    """Defence in depth: until the broker restarts with the new CRL, ingest refuses."""
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-b", hub_broker.port)
    device.connect()
    pki.revoke("tab-b")
    record = signed_record(pki, "tab-b")
    device.publish(up_topic("tab-b"), record.encode())
    wait_for(lambda: device.acks, what="refusal on the downlink")
    assert device.acks[0].outcome == "refused"
    assert "revoked" in device.acks[0].reason
    assert count_records(ingest) == 0
    device.close()


class PermissiveAclBroker(HubBroker):
    """The protection switched off: every device may write every device's uplink."""

    def write_files(self) -> None:
        super().write_files()
        acl = self.directory / "acl"
        acl.write_text(
            acl.read_text().replace(
                "pattern write fieldkit/%u/up/#", "pattern write fieldkit/+/up/#"
            )
        )


@pytest.mark.parametrize("acl", ["per-device", "permissive"])
def test_device_a_cannot_publish_as_device_b(
    pki: KitPki, tmp_path: Path, acl: str, sqlite_url: str
) -> None:
    broker_class = HubBroker if acl == "per-device" else PermissiveAclBroker
    from fieldkit.hub.settings import HubSection

    with broker_class(pki, tmp_path / "broker", port=0) as broker:
        ingest = Ingest(HubSection(pki=pki.root, broker_port=broker.port, database_url=sqlite_url))
        ingest.start()
        assert ingest.wait_connected()
        try:
            intruder = DeviceClient(pki, "tab-a", broker.port)
            intruder.connect()
            # Device A claims to be B, signing with its own key (it has no other).
            forged = signed_record(pki, "tab-a", device_id="tab-b")
            info = intruder.publish(up_topic("tab-b"), forged.encode())
            wait_for(lambda: info.mid in intruder.puback, 5, "PUBACK")
            intruder.close()
            if acl == "per-device":
                # mosquitto answers MQTT v5 PUBACK "Not authorized"; ingest never sees it.
                assert intruder.puback[info.mid] == "Not authorized"
                time.sleep(1.0)
                assert ingest.stored == 0 and ingest.refused == 0
                assert count_records(ingest) == 0
            else:
                # Without the ACL the forgery reaches ingest (which still refuses the signature):
                # so the broker's ACL is what keeps it from ever arriving.
                wait_for(lambda: ingest.refused == 1, what="ingest saw the forgery")
                assert count_records(ingest) == 0
        finally:
            ingest.stop()


def test_bad_signature_is_refused_visibly(
    pki: KitPki, hub_broker: HubBroker, make_ingest: IngestFactory, database_url: str
) -> None:
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    record = signed_record(pki, "tab-a")
    tampered = record.model_copy(update={"body": {**statistics_body(), "sex": "male"}})
    device.publish(up_topic("tab-a"), tampered.encode())
    wait_for(lambda: device.acks, what="refusal")
    ack = device.acks[0]
    assert (ack.record_id, ack.outcome) == (record.record_id, "refused")
    assert "signature" in ack.reason
    assert count_records(ingest) == 0
    (row,) = refusals(ingest)
    assert row.device_id == "tab-a" and "signature" in row.reason
    # And a good record right after is stored: the ingest kept running.
    good = signed_record(pki, "tab-a")
    device.publish(up_topic("tab-a"), good.encode())
    wait_for(lambda: len(device.acks) == 2, what="ack")
    assert device.acks[1].outcome == "stored"
    device.close()


def test_invalid_record_is_refused_with_the_field_named(
    pki: KitPki, hub_broker: HubBroker, make_ingest: IngestFactory, database_url: str
) -> None:
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    record = signed_record(pki, "tab-a", body={**statistics_body(), "age_band": "old"})
    device.publish(up_topic("tab-a"), record.encode())
    device.publish(up_topic("tab-a"), b"not json")
    wait_for(lambda: device.acks, what="refusal")
    assert device.acks[0].outcome == "refused"
    assert "age_band" in device.acks[0].reason
    wait_for(lambda: len(refusals(ingest)) == 2, what="both refusals recorded")
    assert count_records(ingest) == 0
    device.close()


def test_replayed_record_id_is_ignored_or_refused(
    pki: KitPki, hub_broker: HubBroker, make_ingest: IngestFactory, database_url: str
) -> None:
    ingest = make_ingest(database_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    record = signed_record(pki, "tab-a")
    device.publish(up_topic("tab-a"), record.encode())
    wait_for(lambda: len(device.acks) == 1, what="first ack")
    device.publish(up_topic("tab-a"), record.encode())  # the same record again: duplicate
    wait_for(lambda: len(device.acks) == 2, what="second ack")
    other = signed_record(
        pki, "tab-a", record_id=record.record_id, body={**statistics_body(), "outcome": "forwarded"}
    )
    device.publish(up_topic("tab-a"), other.encode())  # same id, other content: replay
    wait_for(lambda: len(device.acks) == 3, what="third ack")
    assert [a.outcome for a in device.acks] == ["stored", "duplicate", "refused"]
    assert "replay" in device.acks[2].reason
    assert count_records(ingest) == 1
    assert ingest.duplicates == 1
    device.close()


def test_refusal_log_lines_carry_no_personal_data(
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused record is logged by device, id and reason, never by its content. R14 R23"""
    caplog.set_level(logging.DEBUG)
    planted = "98765432109876543210987"
    ingest = make_ingest(sqlite_url)
    device = DeviceClient(pki, "tab-a", hub_broker.port)
    device.connect()
    bad_value = signed_record(pki, "tab-a", body={**statistics_body(), "site": 7, "sex": planted})
    device.publish(up_topic("tab-a"), bad_value.encode())
    unsigned = signed_record(pki, "tab-a", body={**statistics_body(), "site": planted})
    device.publish(up_topic("tab-a"), unsigned.model_copy(update={"signature": ""}).encode())
    wait_for(lambda: len(device.acks) == 2, what="two refusals")
    device.close()
    assert all(a.outcome == "refused" for a in device.acks)
    assert "refused a record from tab-a" in caplog.text
    assert planted not in caplog.text
    assert all(planted not in a.reason for a in device.acks)
    assert all(planted not in r.reason for r in refusals(ingest))


def test_a_lapsed_crl_is_renewed_and_devices_connect_again(pki: KitPki, tmp_path: Path) -> None:
    """Issue 17: the CRL is valid 30 days; a programme runs longer. Lapsed, mosquitto refuses
    every device; the hub signs it again before it lapses (and at start), with the same
    revocations. Without the renewal the devices stay out (the protection shown both ways)."""
    pki.revoke("tab-b")
    pki.write_crl(valid_for=dt.timedelta(seconds=-60))  # lapsed a minute ago
    with HubBroker(pki, tmp_path / "lapsed", port=0) as broker:
        assert try_connect(device_client(tablet_dir(pki, "tab-a")), broker.port).startswith(
            "refused"
        )
    assert pki.renew_crl_if_due()
    due = pki.crl_next_update()
    assert due is not None and due - dt.datetime.now(dt.UTC) > dt.timedelta(days=29)
    with HubBroker(pki, tmp_path / "renewed", port=0) as broker:
        assert try_connect(device_client(tablet_dir(pki, "tab-a")), broker.port) == "connected"
        # The revocation survives the renewal.
        assert try_connect(device_client(tablet_dir(pki, "tab-b")), broker.port).startswith(
            "refused"
        )
    assert not pki.renew_crl_if_due()  # fresh: nothing to do


class BrokerWithClientIds(HubBroker):
    """The protection switched off: clients choose their own MQTT client IDs."""

    def render_config(self) -> str:
        return "\n".join(
            line
            for line in super().render_config().splitlines()
            if not line.startswith("use_username_as_clientid")
        )


def kicked_by_a_namesake(pki: KitPki, port: int) -> bool:
    """tab-a connects as client ID "shared"; tab-b connects with the same ID. Was tab-a
    thrown off?"""
    from fieldkit.sync.link import tls_client, tls_context

    def client(device: str) -> mqtt.Client:
        bundle = tablet_dir(pki, device)
        return tls_client(
            "shared", tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key")
        )

    victim, intruder = client("tab-a"), client("tab-b")
    dropped: list[str] = []
    victim.on_disconnect = lambda c, u, f, reason, p: dropped.append(str(reason))
    victim.connect("localhost", port, keepalive=10)
    victim.loop_start()
    try:
        wait_for(victim.is_connected, 5, "tab-a connected")
        intruder.connect("localhost", port, keepalive=10)
        intruder.loop_start()
        time.sleep(1.5)
        intruder.loop_stop()
        intruder.disconnect()
        return bool(dropped)
    finally:
        victim.loop_stop()
        victim.disconnect()


def test_a_device_cannot_take_another_clients_id(pki: KitPki, tmp_path: Path) -> None:
    """Issue 17: the client ID is the certificate's name, so another tablet (or anything with a
    kit certificate) cannot keep kicking a device or the ingest off by reusing its ID."""
    with HubBroker(pki, tmp_path / "names", port=0) as broker:
        assert not kicked_by_a_namesake(pki, broker.port)
    with BrokerWithClientIds(pki, tmp_path / "free", port=0) as broker:
        assert kicked_by_a_namesake(pki, broker.port)
