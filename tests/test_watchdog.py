"""The watchdog heartbeat and the sd_notify protocol, against a real broker and real sockets.

Issue 15 item 5: a service whose work thread is stuck must stop telling the service manager
that it is alive. R29. (The supervisor's side, with `fieldkit up`: tests/test_runner.py.)
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import Incoming
from fieldkit.messages import Ping, Pong
from fieldkit.watchdog import (
    JOBS,
    NOTIFY_SOCKET,
    WATCHDOG_PID,
    WATCHDOG_USEC,
    Heartbeat,
    Jobs,
    NotifySocket,
    busy,
    notify,
    parse_notification,
    watchdog_timeout,
)
from tests.conftest import BusFactory


@pytest.fixture
def manager() -> Iterator[NotifySocket]:
    """The service manager's end of the protocol, as the development runner binds it."""
    sock = NotifySocket("test")
    yield sock
    sock.close()


def received(manager: NotifySocket, wait: float = 0.0) -> list[dict[str, str]]:
    time.sleep(wait)
    return manager.receive()


def test_notify_reaches_an_abstract_socket_and_a_path(
    manager: NotifySocket, tmp_path: Path
) -> None:
    assert manager.address.startswith("@")
    assert notify("READY=1", "STATUS=running", environ={NOTIFY_SOCKET: manager.address})
    assert received(manager) == [{"READY": "1", "STATUS": "running"}]

    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd_like:
        systemd_like.bind(str(path))
        assert notify("WATCHDOG=1", environ={NOTIFY_SOCKET: str(path)})
        assert parse_notification(systemd_like.recv(4096)) == {"WATCHDOG": "1"}


def test_notify_without_a_manager_does_nothing(tmp_path: Path) -> None:
    assert not notify("READY=1", environ={})
    # A manager that went away: reported, not raised (the service keeps working).
    assert not notify("READY=1", environ={NOTIFY_SOCKET: str(tmp_path / "gone")})


def test_the_watchdog_is_on_only_for_the_process_it_names() -> None:
    base = {NOTIFY_SOCKET: "@x", WATCHDOG_USEC: "2500000"}
    assert watchdog_timeout(base) == 2.5
    # systemd names the main process; a gunicorn worker is the main process's child.
    assert watchdog_timeout({**base, WATCHDOG_PID: str(os.getpid())}) == 2.5
    assert watchdog_timeout({**base, WATCHDOG_PID: str(os.getppid())}) == 2.5
    # Another process's: neither this one nor its parent (which may be pid 1 in a container).
    other = next(pid for pid in (2, 3, 4) if pid not in (os.getpid(), os.getppid()))
    assert watchdog_timeout({**base, WATCHDOG_PID: str(other)}) is None
    assert watchdog_timeout({**base, WATCHDOG_USEC: "0"}) is None
    assert watchdog_timeout({**base, WATCHDOG_USEC: "soon"}) is None
    assert watchdog_timeout({WATCHDOG_USEC: "2500000"}) is None


def test_the_heartbeat_beats_only_while_the_bus_thread_answers(
    make_bus: BusFactory, manager: NotifySocket, tmp_path: Path
) -> None:
    """A handler stuck in a read (a FIFO nobody writes, as the wipe was on /proc/kmsg) holds
    the bus thread: the service's own ping goes unanswered, and no WATCHDOG=1 is sent."""
    service = make_bus("monitor", announce_health=True)  # answers ping, like every service
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    entered = threading.Event()

    def read_stuck(_: Ping, __: Incoming) -> Pong:
        entered.set()
        with fifo.open("rb") as stream:  # blocks until a writer opens it
            stream.read()
        return Pong(service="monitor", pid=os.getpid())

    service.handle_request("read", Ping, read_stuck)
    heartbeat = Heartbeat(
        service, timeout=1.0, jobs=Jobs(), environ={NOTIFY_SOCKET: manager.address}
    )

    assert heartbeat.beat()
    assert received(manager) == [{"WATCHDOG": "1"}]

    make_bus("tester").publish("tester/req/monitor/read", Ping())
    assert entered.wait(5)
    try:
        assert not heartbeat.beat()
        assert received(manager) == [
            {"STATUS": "no heartbeat: its bus did not answer a ping within 0.5s"}
        ]
    finally:
        release(fifo)  # the read returns: the bus thread is free again
    assert heartbeat.beat()
    assert received(manager) == [{"STATUS": "running"}, {"WATCHDOG": "1"}]


def release(fifo: Path) -> None:
    """Give the stuck reader a writer, then end of file."""
    deadline = time.monotonic() + 5
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:  # ENXIO: the reader has not opened it yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_dead_broker_connection_stops_the_heartbeat(
    make_bus: BusFactory, broker: LocalBroker, manager: NotifySocket
) -> None:
    service = make_bus("monitor", announce_health=True)
    heartbeat = Heartbeat(
        service, timeout=1.0, jobs=Jobs(), environ={NOTIFY_SOCKET: manager.address}
    )
    assert heartbeat.beat()
    broker.stop()
    assert not heartbeat.beat()
    assert [m for m in received(manager) if "WATCHDOG" in m] == [{"WATCHDOG": "1"}]


def test_a_job_over_its_maximum_stops_the_heartbeat(
    make_bus: BusFactory, manager: NotifySocket
) -> None:
    service = make_bus("monitor", announce_health=True)
    jobs = Jobs()
    heartbeat = Heartbeat(service, timeout=1.0, jobs=jobs, environ={NOTIFY_SOCKET: manager.address})
    with jobs.busy("session wipe", 0.3):
        assert heartbeat.beat()  # within its time: the service is working, not hung
        time.sleep(0.4)
        assert not heartbeat.beat()
        assert received(manager) == [
            {"WATCHDOG": "1"},
            {"STATUS": "no heartbeat: session wipe is over its 0.3s"},
        ]
    assert heartbeat.beat()
    assert received(manager)[-1] == {"WATCHDOG": "1"}


def test_busy_declares_a_job_for_this_process() -> None:
    with busy("daily scan", 0.05):
        assert JOBS.overrun() == []
        time.sleep(0.1)
        assert JOBS.overrun() == ["daily scan is over its 0.05s"]
    assert JOBS.overrun() == []


def test_the_heartbeat_thread_beats_every_half_period_until_stopped(
    make_bus: BusFactory, manager: NotifySocket
) -> None:
    service = make_bus("monitor", announce_health=True)
    heartbeat = Heartbeat(
        service, timeout=0.4, jobs=Jobs(), environ={NOTIFY_SOCKET: manager.address}
    )
    heartbeat.start()
    # Three beats, however long a loaded machine takes (no timed assert: a deadline only).
    beats: list[dict[str, str]] = []
    deadline = time.monotonic() + 30
    while len(beats) < 3 and time.monotonic() < deadline:
        beats += [m for m in received(manager, wait=0.1) if m == {"WATCHDOG": "1"}]
    heartbeat.stop()
    assert len(beats) >= 3
    received(manager, wait=0.5)  # a beat already on its way when stop() was called
    assert received(manager, wait=1.0) == []
