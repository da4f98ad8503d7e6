"""The forget handshake on the bus: holders zero a session and say what they erased. R6"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.config import DeviceConfig
from fieldkit.erasure import (
    FORGOTTEN_FILTER,
    ForgetSession,
    SessionForgotten,
    forget_topic,
    serve_forget_requests,
)
from fieldkit.messages import decode
from fieldkit.registry import Identity, ServiceSpec, holders, identities_for, topic_rights

SID = "0123456789abcdef0123456789abcdef"
APPLICATION_ID = "11112222333344445555666"  # synthetic

HOLDER = ServiceSpec(name="holder", summary="t", setup=lambda c: None, holds_personal_data=True)
BYSTANDER = ServiceSpec(name="bystander", summary="t", setup=lambda c: None)
WIPE = Identity(name="wipe", writes=("wipe/evt/#",), reads=(FORGOTTEN_FILTER,))


@pytest.fixture
def handshake_broker(kit_config: DeviceConfig) -> Iterator[LocalBroker]:
    runtime = kit_config.bus.runtime_dir
    runtime.mkdir(parents=True)
    identities = [*identities_for([HOLDER, BYSTANDER]), WIPE]
    with LocalBroker(runtime, identities, Endpoint(port=0)) as broker:
        yield broker


def bus(broker: LocalBroker, name: str) -> Bus:
    return Bus(
        name, broker.endpoint, read_password(broker.runtime_dir, name), announce_health=False
    )


def test_only_holders_may_hear_the_forget_broadcast() -> None:
    assert holders([HOLDER, BYSTANDER]) == ["holder"]
    assert "wipe/evt/session/+/forget" in topic_rights(HOLDER).reads
    assert "wipe/evt/session/+/forget" not in topic_rights(BYSTANDER).reads


def collect_answers(broker: LocalBroker, forget: object) -> list[SessionForgotten]:
    holder = bus(broker, "holder")
    serve_forget_requests(holder, forget)  # type: ignore[arg-type]
    holder.connect()
    wipe = bus(broker, "wipe")
    answers: list[SessionForgotten] = []
    arrived = threading.Event()

    def keep(topic: str, payload: bytes, retained: bool) -> None:
        answers.append(decode(payload, SessionForgotten))
        arrived.set()

    wipe.observe(FORGOTTEN_FILTER, keep)
    wipe.connect()
    wipe.publish(forget_topic(SID), ForgetSession(sid=SID))
    assert arrived.wait(5)
    holder.close()
    wipe.close()
    return answers


def test_a_holder_forgets_and_answers(handshake_broker: LocalBroker) -> None:
    held = {SID: bytearray(b"photo bytes")}

    def forget(sid: str) -> list[str]:
        buffer = held.pop(sid)
        buffer[:] = bytes(len(buffer))
        return ["photo buffer"]

    (answer,) = collect_answers(handshake_broker, forget)
    assert answer.ok and answer.service == "holder" and answer.erased == ["photo buffer"]
    assert held == {}


def test_a_failing_holder_answers_not_ok_without_the_exception_text(
    handshake_broker: LocalBroker,
) -> None:
    def forget(sid: str) -> list[str]:
        raise ValueError(f"could not zero {APPLICATION_ID}")

    (answer,) = collect_answers(handshake_broker, forget)
    assert not answer.ok and answer.problem == "ValueError"
    assert APPLICATION_ID not in answer.model_dump_json()
