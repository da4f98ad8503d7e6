"""Card fixtures: one private pcscd with the virtual reader per test run, and the card service.

The PC/SC client library reads pcscd's socket path once per process (pcsc-lite's
``getSocketName`` keeps it), so every in-process read of a run goes to one pcscd: the reader
is session-scoped and each test places its own card. A test that needs another pcscd (no
reader at all, no pcscd) runs the card service in a process of its own (``serve_card``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Incoming
from fieldkit.card import SERVICE
from fieldkit.card.messages import CardReport, ReadCard
from fieldkit.config import DeviceConfig, load_config
from fieldkit.erasure import FORGOTTEN_FILTER, ForgetSession, SessionForgotten, forget_topic
from fieldkit.messages import decode
from fieldkit.processes import KIT_ENV, scrubbing_environment
from fieldkit.runner import ServiceContext, start_service, stop_service
from fieldkit.wipe.messages import MarkersAccepted, SessionMarkers
from tests.bus_events import BusEvents
from tests.conftest import BusFactory, write_config
from tests.support.jpki_certs import CardCertificate, user_auth_certificate
from tests.support.paths import REPO
from tests.support.pcsc import SLOT_0, VirtualReader, missing_parts, session_reader_directory
from tests.support.waiting import wait_for


@pytest.fixture(scope="session")
def virtual_reader() -> Iterator[VirtualReader]:
    problem = missing_parts()
    if problem:
        pytest.fail(f"{problem}; run ./dev.sh")
    directory = session_reader_directory()
    reader = VirtualReader(directory).start()
    os.environ["PCSCLITE_CSOCK_NAME"] = str(reader.socket)
    try:
        yield reader
    finally:
        reader.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def card_reader(virtual_reader: VirtualReader) -> Iterator[VirtualReader]:
    """The session's reader, empty, with a fresh log of the commands the card received."""
    virtual_reader.take_out()
    virtual_reader.apdu_log.unlink(missing_ok=True)
    wait_for(lambda: no_card_seen(virtual_reader), 5, "the reader to be empty")
    yield virtual_reader
    virtual_reader.take_out()


def no_card_seen(reader: VirtualReader) -> bool:
    from fieldkit.card.reader import read_card

    return read_card(SLOT_0).state == "no-card"


def card_section(socket: Path, reader: str | None = SLOT_0) -> str:
    line = f'reader = "{reader}"\n' if reader else ""
    return f'\n[card]\npcscd_socket = "{socket}"\n{line}'


def valid_certificate(days: int = 1214) -> CardCertificate:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=9))).date()
    return user_auth_certificate(today - dt.timedelta(days=400), today + dt.timedelta(days=days))


@pytest.fixture
def card_service(
    broker: LocalBroker, kit_config: DeviceConfig, card_reader: VirtualReader, tmp_path: Path
) -> Iterator[ServiceContext]:
    """The card service in this process, on the session's reader (slot 0 chosen)."""
    config = load_config(write_config(tmp_path, card_section(card_reader.socket)))
    ctx = start_service(SERVICE, config)
    yield ctx
    stop_service(ctx)


def read_when_placed(bus: Bus, sid: str | None = None, timeout: float = 10) -> CardReport:
    """Ask until pcscd has seen the card placed (its poll: 400 ms)."""
    reports: list[CardReport] = []

    def placed() -> bool:
        reports.append(bus.request("card", "read", ReadCard(sid=sid), CardReport))
        return reports[-1].state != "no-card"

    wait_for(placed, timeout, "pcscd to see the card", poll=0.1)
    return reports[-1]


def wait_until_serving(make_bus: BusFactory, timeout: float = 30) -> CardReport:
    bus = make_bus("tester")
    replies: list[CardReport] = []

    def answered() -> bool:
        try:
            replies.append(bus.request("card", "read", ReadCard(), CardReport, timeout=1))
        except Exception:
            return False
        return True

    wait_for(answered, timeout, "the card service to answer", poll=0.2)
    return replies[-1]


def wipe_stand_in(make_bus: BusFactory) -> tuple[Bus, list[SessionMarkers]]:
    """The wipe's identity on the bus, keeping the markers it is given (the card's canaries)."""
    received: list[SessionMarkers] = []

    def accept(markers: SessionMarkers, meta: Incoming) -> MarkersAccepted:
        received.append(markers)
        return MarkersAccepted(sid=markers.sid)

    wipe = make_bus("wipe", connect=False)
    wipe.handle_request("session-markers", SessionMarkers, accept)
    wipe.connect()
    return wipe, received


def forget_session(make_bus: BusFactory, wipe: Bus, sid: str) -> SessionForgotten:
    """The wipe's forget handshake for ``sid``; the card service's answer."""
    forgotten = BusEvents()
    make_bus("audit").observe(FORGOTTEN_FILTER, forgotten)
    wipe.publish(forget_topic(sid), ForgetSession(sid=sid))
    payload = forgotten.wait_until(
        lambda items: next((p for t, p, _ in items if t.startswith("card/")), None), 10
    )
    return decode(payload, SessionForgotten)


SERVE = ("-m", "fieldkit.serve")


class CardProcess:
    """The card service as the kit runs it: ``python -m fieldkit.serve card``, memory scrubbed."""

    def __init__(self, config: Path, runtime: Path, python: tuple[str, ...] = SERVE) -> None:
        env = scrubbing_environment(os.environ)
        env[KIT_ENV] = str(runtime)
        env.pop("PCSCLITE_CSOCK_NAME", None)  # from [card] pcscd_socket, as on a device
        self.process = subprocess.Popen(
            [sys.executable, *python, "card", "--config", str(config)], env=env, cwd=REPO
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@pytest.fixture
def serve_card(broker: LocalBroker, tmp_path: Path) -> Iterator[Callable[[str], CardProcess]]:
    started: list[CardProcess] = []

    def start(card: str) -> CardProcess:
        process = CardProcess(write_config(tmp_path, card), broker.runtime_dir)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
