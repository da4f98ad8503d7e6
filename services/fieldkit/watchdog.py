"""The service manager's watchdog: the sd_notify protocol, and a heartbeat that proves work.

systemd (``Type=notify``, ``WatchdogSec=``) in the images and the development runner
(``fieldkit up``) alike give a service ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``; a service that
does not send ``WATCHDOG=1`` within ``WATCHDOG_USEC`` is killed and restarted.

A heartbeat from a timer thread would only prove the timer is alive. This one proves that the
thread doing the service's work is: every half period the service sends itself a ``ping``
over the broker, and beats only when its own bus answered. A handler stuck in a read, or a
dead broker connection, stops the heartbeat. A worker thread that runs long jobs declares
each with ``busy(name, max_seconds)``; while a job overruns its maximum, the heartbeat stops.

The protocol is one datagram of ``KEY=VALUE`` lines (sd_notify(3)); it is written here rather
than taken from a library: the maintained ones either need libsystemd's C headers
(systemd-python) or do not say whether the watchdog is on for this process.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from fieldkit.bus import Bus, BusError
from fieldkit.messages import Ping, Pong

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def _socket_address(address: str) -> str:
    # "@name" is Linux's abstract namespace: a leading NUL byte, no file.
    return "\0" + address[1:] if address.startswith("@") else address


def notify(*assignments: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Tell the service manager ``READY=1``, ``WATCHDOG=1``, ``STATUS=…``; False if none listens.

    Without ``NOTIFY_SOCKET`` (a service run by hand) this does nothing."""
    address = environ.get(NOTIFY_SOCKET, "")
    if not address.startswith(("/", "@")):  # unset, or a kind of socket (vsock) not used here
        return False
    payload = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(payload, _socket_address(address))
    except OSError as exc:
        log.warning("the service manager did not take a notification: %s", exc)
        return False
    return True


def watchdog_timeout(environ: Mapping[str, str] = os.environ) -> float | None:
    """Seconds within which the service manager expects ``WATCHDOG=1`` from this process.

    None when there is no watchdog, or it is for another process. ``WATCHDOG_PID`` may be
    absent (the development runner sets the environment before exec) or name this process's
    parent: the kiosk's gunicorn master is the unit's main process, its worker does the work.
    """
    if not environ.get(NOTIFY_SOCKET):
        return None
    try:
        usec = int(environ.get(WATCHDOG_USEC, ""))
    except ValueError:
        return None
    pid = environ.get(WATCHDOG_PID)
    if usec <= 0 or pid not in (None, str(os.getpid()), str(os.getppid())):
        return None
    return usec / 1_000_000


@dataclass(frozen=True)
class _Job:
    name: str
    max_seconds: float
    deadline: float


class Jobs:
    """Long jobs in progress on a service's worker threads, each with the time it may take."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, _Job] = {}
        self._keys = itertools.count()

    @contextlib.contextmanager
    def busy(self, name: str, max_seconds: float) -> Iterator[None]:
        """A job of at most ``max_seconds`` runs inside this block; ``name`` is a fixed label."""
        job = _Job(name, max_seconds, time.monotonic() + max_seconds)
        with self._lock:
            key = next(self._keys)
            self._running[key] = job
        try:
            yield
        finally:
            with self._lock:
                del self._running[key]

    def overrun(self) -> list[str]:
        """What each job still running past its maximum is, for a status line."""
        now = time.monotonic()
        with self._lock:
            late = [job for job in self._running.values() if now > job.deadline]
        return [f"{job.name} is over its {job.max_seconds:g}s" for job in late]


# This process's jobs: one service per process, so its worker threads need no handle to share.
JOBS = Jobs()


def busy(name: str, max_seconds: float) -> contextlib.AbstractContextManager[None]:
    """``with busy("session wipe", 30):`` — past 30 s the heartbeat stops until the job ends."""
    return JOBS.busy(name, max_seconds)


class Heartbeat:
    """Sends ``WATCHDOG=1`` every half ``timeout`` while the service's own bus answers it."""

    def __init__(
        self,
        bus: Bus,
        timeout: float,
        *,
        jobs: Jobs = JOBS,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.bus = bus
        self.period = timeout / 2
        self._jobs = jobs
        self._environ = environ
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
        self._missing = ""  # why the last beat was not sent; logged once per change

    @classmethod
    def from_environment(
        cls, bus: Bus, environ: Mapping[str, str] = os.environ
    ) -> Heartbeat | None:
        """A heartbeat if the service manager set a watchdog for this process, else None."""
        timeout = watchdog_timeout(environ)
        return None if timeout is None else cls(bus, timeout, environ=environ)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.period + 1)

    def beat(self) -> bool:
        """One round: ping this service over the broker and, if its bus answered, beat."""
        why = self._why_not()
        if why:
            if why != self._missing:
                log.error("%s: no watchdog heartbeat: %s", self.bus.identity, why)
                notify(f"STATUS=no heartbeat: {why}", environ=self._environ)
            self._missing = why
            return False
        if self._missing:
            log.info("%s: watchdog heartbeat resumed", self.bus.identity)
            self._missing = ""
            notify("STATUS=running", environ=self._environ)
        return notify("WATCHDOG=1", environ=self._environ)

    def _why_not(self) -> str:
        late = self._jobs.overrun()
        if late:
            return "; ".join(late)
        try:
            pong = self.bus.request(self.bus.identity, "ping", Ping(), Pong, timeout=self.period)
        except BusError:
            return f"its bus did not answer a ping within {self.period:g}s"
        if pong.pid != os.getpid():  # another instance under the same name answered
            return f"pid {pong.pid} answered this process's ping"
        return ""

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.beat()
            self._stop.wait(max(0.0, started + self.period - time.monotonic()))


def parse_notification(datagram: bytes) -> dict[str, str]:
    """``READY=1\\nSTATUS=…`` as a mapping; lines without ``=`` are ignored, as systemd does."""
    text = datagram.decode("utf-8", errors="replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class NotifySocket:
    """The service manager's end: a datagram socket one supervised service notifies.

    Its address is in the abstract namespace (no file, no path-length limit), with a random
    part so that it is not guessed; one socket per service tells which service spoke."""

    def __init__(self, label: str) -> None:
        self.address = f"@fieldkit-notify/{secrets.token_hex(8)}/{label}"
        self._sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        self._sock.bind(_socket_address(self.address))

    def receive(self) -> list[dict[str, str]]:
        """Every notification waiting, oldest first; never blocks."""
        received: list[dict[str, str]] = []
        while True:
            try:
                datagram = self._sock.recv(4096)
            except BlockingIOError:
                return received
            received.append(parse_notification(datagram))

    def close(self) -> None:
        self._sock.close()
