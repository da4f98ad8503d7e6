"""The local bus against a real mosquitto: validation, ACL, authentication, retained state. R29"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Literal

import paho.mqtt.client as mqtt
import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import (
    Bus,
    BusError,
    Endpoint,
    RequestRefused,
    RequestTimeout,
    collect_retained,
    read_password,
    retained_violations,
)
from fieldkit.config import DeviceConfig
from fieldkit.messages import ErrorReply, Health, Message, Ping, Pong, decode
from fieldkit.monitor import StatusReply, StatusRequest
from fieldkit.registry import identities_for, load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from tests.bus_events import BusEvents
from tests.conftest import INTRUDER, TESTER, BusFactory, raw_client


@pytest.fixture
def monitor(broker: LocalBroker, kit_config: DeviceConfig) -> Iterator[ServiceContext]:
    (spec,) = load_specs(["monitor"])
    ctx = start_service(spec, kit_config)
    yield ctx
    stop_service(ctx)


class StatusWithWrongType(Message):
    """A status request whose ``service`` field has the wrong type."""

    type: Literal["status"] = "status"
    service: int


def test_invalid_message_is_answered_with_the_field_and_the_service_keeps_answering(
    monitor: ServiceContext, make_bus: BusFactory
) -> None:
    tester = make_bus("tester")
    errors = BusEvents()
    tester.observe("monitor/error", errors)

    with pytest.raises(RequestRefused) as refused:
        tester.request("monitor", "status", StatusWithWrongType(service=42), StatusReply)

    assert refused.value.reply.fields == ["service"]
    assert "service" in refused.value.reply.reason
    assert "42" not in refused.value.reply.reason  # the value is never echoed
    published = decode(errors.wait_any()[1], ErrorReply)
    assert published.fields == ["service"]
    assert published.topic == "tester/req/monitor/status"

    # Still serving: a valid request is answered, and so is ping.
    reply = tester.request("monitor", "status", StatusRequest(), StatusReply)
    assert any(h.service == "monitor" and h.state == "online" for h in reply.services)
    assert tester.request("monitor", "ping", Ping(), Pong).service == "monitor"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "payload is not JSON"),
        (b"\xff\xfe", "payload is not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"v": 2, "type": "status"}', "v: Input should be 1"),
        (b'{"v": 1, "type": "status", "extra": 1}', "extra: Extra inputs are not permitted"),
    ],
)
def test_malformed_payloads_are_refused_with_a_reason(
    monitor: ServiceContext, make_bus: BusFactory, broker: LocalBroker, payload: bytes, reason: str
) -> None:
    tester = make_bus("tester")
    errors = BusEvents()
    tester.observe("monitor/error", errors)
    client = raw_client(broker, "tester")
    client.connect(broker.endpoint.host, broker.endpoint.port)
    client.loop_start()
    client.publish("tester/req/monitor/status", payload, qos=1).wait_for_publish(5)
    assert reason in decode(errors.wait_any()[1], ErrorReply).reason
    client.disconnect()
    client.loop_stop()
    assert tester.request("monitor", "ping", Ping(), Pong).pid > 0


def test_a_service_cannot_publish_on_another_services_topics(
    monitor: ServiceContext, make_bus: BusFactory
) -> None:
    watcher = make_bus("audit")
    seen = BusEvents()
    watcher.observe("monitor/#", seen)
    intruder = make_bus("intruder")

    with pytest.raises(BusError, match="Not authorized"):
        intruder.publish("monitor/evt/forged", Ping())
    with pytest.raises(BusError, match="Not authorized"):
        intruder.publish("tester/req/monitor/status", StatusRequest())

    # The intended receiver never saw either message.
    intruder.publish("intruder/evt/own", Ping())  # allowed: its own namespace
    time.sleep(0.5)
    assert [t for t, _, _ in seen.items] == []


class BrokerWithoutAcl(LocalBroker):
    def render_config(self) -> str:
        return "\n".join(
            line for line in super().render_config().splitlines() if not line.startswith("acl_file")
        )


def test_without_the_acl_the_forged_publish_gets_through(kit_config: DeviceConfig) -> None:
    """The protection is needed: the same forgery succeeds when the ACL is left out."""
    runtime = kit_config.bus.runtime_dir
    identities = [*identities_for(load_specs()), TESTER, INTRUDER]
    with BrokerWithoutAcl(runtime, identities, Endpoint(port=0)) as open_broker:
        watcher = Bus("audit", open_broker.endpoint, read_password(runtime, "audit"))
        seen = BusEvents()
        watcher.observe("monitor/#", seen)
        watcher.connect()
        intruder = Bus(
            "intruder",
            open_broker.endpoint,
            read_password(runtime, "intruder"),
            announce_health=False,
        )
        intruder.connect()
        intruder.publish("monitor/evt/forged", Ping())
        seen.wait_any()
        intruder.close()
        watcher.close()


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_unauthenticated_clients_cannot_connect(broker: LocalBroker, password: str | None) -> None:
    result: dict[str, object] = {}
    done = threading.Event()
    identity = None if password is None else "monitor"
    client = raw_client(broker, identity, password)

    def on_connect(c: object, u: object, flags: object, reason: mqtt.ReasonCode, p: object) -> None:
        result["reason"] = reason
        done.set()

    client.on_connect = on_connect
    client.connect(broker.endpoint.host, broker.endpoint.port)
    client.loop_start()
    assert done.wait(5)
    client.loop_stop()
    reason = result["reason"]
    assert isinstance(reason, mqtt.ReasonCode)
    assert reason.is_failure
    assert str(reason) in {"Not authorized", "Bad user name or password"}


def test_request_times_out_when_nobody_answers(make_bus: BusFactory) -> None:
    tester = make_bus("tester")
    with pytest.raises(RequestTimeout, match="did not answer"):
        tester.request("nobody", "status", StatusRequest(), StatusReply, timeout=0.5)


def test_only_health_is_retained_and_a_retained_session_message_is_caught(
    monitor: ServiceContext, make_bus: BusFactory, broker: LocalBroker
) -> None:
    tester = make_bus("tester")
    tester.request("monitor", "status", StatusRequest(), StatusReply)
    retained = collect_retained(make_bus("audit", connect=False), wait=0.5)
    assert "health/monitor" in retained
    assert retained_violations(retained) == []

    # The check can fail: a service that retains a session-scoped message is caught.
    client = raw_client(broker, "monitor")
    client.connect(broker.endpoint.host, broker.endpoint.port)
    client.loop_start()
    sid = "c0ffee00c0ffee00"
    client.publish(f"monitor/evt/session/{sid}", b"{}", qos=1, retain=True).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()
    retained = collect_retained(make_bus("audit", connect=False), wait=0.5)
    assert retained_violations(retained) == [f"monitor/evt/session/{sid}"]


def test_bus_works_over_a_unix_socket(kit_config: DeviceConfig) -> None:
    runtime = kit_config.bus.runtime_dir
    runtime.mkdir(parents=True)
    endpoint = Endpoint(socket=runtime / "bus.sock")
    with LocalBroker(runtime, identities_for(load_specs()), endpoint):
        ctx = start_service(load_specs(["monitor"])[0], kit_config)
        try:
            assert ctx.bus.endpoint.socket == endpoint.socket
            audit = Bus("audit", endpoint, read_password(runtime, "audit"), announce_health=False)
            retained = collect_retained(audit, wait=0.5)
            assert decode(retained["health/monitor"], Health).state == "online"
        finally:
            stop_service(ctx)


def test_closing_the_bus_ends_a_request_still_waiting_for_its_answer(
    make_bus: BusFactory,
) -> None:
    """A service stopping must not leave a thread waiting out a request's timeout (the wipe's
    hand-over to a sync that is not running): closing the bus fails the request at once."""
    tester = make_bus("tester")
    failed: list[BaseException] = []

    def ask() -> None:
        try:
            tester.request("sync", "status", Ping(), Pong, timeout=120)
        except BusError as exc:
            failed.append(exc)

    asking = threading.Thread(target=ask)
    asking.start()
    deadline = time.monotonic() + 30
    while not tester._pending and time.monotonic() < deadline:  # the request is out
        time.sleep(0.01)
    time.sleep(0.1)  # and published; nobody answers
    tester.close()
    asking.join(60)
    assert not asking.is_alive()
    # Ended by the close, not by the timeout (a close racing the publish fails that instead).
    assert len(failed) == 1 and not isinstance(failed[0], RequestTimeout)
