"""Running services: one service in this process, or the whole kit under a supervisor.

``fieldkit up`` starts the local broker and one child process per registered service,
restarts a crashed child with exponential backoff, and on Ctrl-C / SIGTERM stops the
children, then the broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, BusError, Endpoint, read_endpoint, read_password
from fieldkit.config import DeviceConfig
from fieldkit.processes import KIT_ENV, die_with_parent, scrubbing_environment
from fieldkit.registry import ServiceSpec, identities_for
from fieldkit.watchdog import (
    NOTIFY_SOCKET,
    WATCHDOG_PID,
    WATCHDOG_USEC,
    Heartbeat,
    NotifySocket,
    notify,
)

log = logging.getLogger(__name__)

# In the runtime folder: what each supervised child last told the watchdog (Supervisor._report).
SUPERVISOR_REPORT = "supervisor.json"


@dataclass
class ServiceContext:
    """What a service's ``setup`` gets: its config, its bus, and a place to hook shutdown."""

    spec: ServiceSpec
    config: DeviceConfig
    bus: Bus
    stopping: threading.Event = field(default_factory=threading.Event)
    _on_stop: list[Callable[[], None]] = field(default_factory=list)

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the service stops (in reverse order of registration)."""
        self._on_stop.append(callback)

    def run_stop_callbacks(self) -> None:
        for callback in reversed(self._on_stop):
            try:
                callback()
            except Exception:
                log.exception("%s: stop callback failed", self.spec.name)


def configured_endpoint(config: DeviceConfig) -> Endpoint:
    bus = config.bus
    return Endpoint(host=bus.host, port=bus.port, socket=bus.socket)


def connect_bus(config: DeviceConfig, identity: str, *, announce_health: bool = True) -> Bus:
    """A bus for ``identity`` on the broker this device's runtime dir describes."""
    runtime = config.bus.runtime_dir
    return Bus(
        identity,
        read_endpoint(runtime, configured_endpoint(config)),
        read_password(runtime, identity),
        keepalive=config.bus.keepalive,
        announce_health=announce_health,
        max_message_bytes=config.bus.max_message_bytes,
    )


def install_stop_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``, from a watcher thread.

    The handler only writes a byte to a pipe. A Python signal handler runs between two
    bytecodes of the main thread, which may be inside ``stop.wait()`` or, for a second signal,
    inside the first handler's ``stop.set()``, holding the Event's lock: a handler that set
    the Event itself waited for that lock forever (two Ctrl-Cs hung ``fieldkit up``)."""
    read_end, write_end = os.pipe()

    def handle(signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(OSError):  # a full pipe has a stop pending already
            os.write(write_end, b"\0")

    def watch() -> None:
        os.read(read_end, 1)
        os.close(read_end)  # one stop is enough; later signals find the pipe closed
        stop.set()

    os.set_blocking(write_end, False)
    threading.Thread(target=watch, name="stop-signals", daemon=True).start()
    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def start_service(spec: ServiceSpec, config: DeviceConfig) -> ServiceContext:
    """Set a service up and connect it; it runs on the bus thread until ``stop_service``."""
    ctx = ServiceContext(spec=spec, config=config, bus=connect_bus(config, spec.name))
    spec.start(ctx)
    try:
        ctx.bus.connect()
    except BusError:
        ctx.run_stop_callbacks()
        raise
    notify("READY=1", "STATUS=running")
    heartbeat = Heartbeat.from_environment(ctx.bus)
    if heartbeat is not None:
        heartbeat.start()
        ctx.on_stop(heartbeat.stop)
    return ctx


def stop_service(ctx: ServiceContext) -> None:
    ctx.stopping.set()
    ctx.run_stop_callbacks()
    ctx.bus.close()


def service_command(name: str, config_path: Path) -> list[str]:
    """How a service is started (``fieldkit.serve``: the service and nothing else loaded)."""
    return [sys.executable, "-m", "fieldkit.serve", name, "--config", str(config_path)]


def run_service(spec: ServiceSpec, config: DeviceConfig) -> int:
    """Run one service in this process until SIGTERM/SIGINT. Returns the exit status."""
    stopping = threading.Event()
    install_stop_signals(stopping)
    try:
        ctx = start_service(spec, config)
    except BusError as exc:
        log.error("%s: %s", spec.name, exc)
        return 3
    log.info("%s: running (%s)", spec.name, spec.summary)
    stopping.wait()
    log.info("%s: stopping", spec.name)
    stop_service(ctx)
    return 0


@dataclass
class Child:
    spec: ServiceSpec
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0
    # The watchdog (runner.watchdog_seconds): where this child notifies, when it last said
    # READY=1 or WATCHDOG=1 (None: not watched yet), and its last STATUS= line.
    notify: NotifySocket | None = None
    heard: float | None = None
    status: str = ""


class Supervisor:
    """Starts the broker and the services; keeps them running; stops them in order."""

    def __init__(self, config: DeviceConfig, config_path: Path, specs: list[ServiceSpec]) -> None:
        self.config = config
        self.config_path = config_path.resolve()
        self.children = [Child(spec) for spec in specs]
        self.stop = threading.Event()
        self.broker: LocalBroker | None = None
        self.kit = str(config.bus.runtime_dir.absolute())
        self._reported = ""

    def _start_broker(self) -> None:
        if not self.config.bus.launch_broker:
            return
        self.config.bus.runtime_dir.mkdir(parents=True, exist_ok=True)
        self.broker = LocalBroker(
            self.config.bus.runtime_dir,
            identities_for(child.spec for child in self.children),
            configured_endpoint(self.config),
            max_message_bytes=self.config.bus.max_message_bytes,
            scrub_freed_memory=self.config.runner.scrub_freed_memory,
            environment={KIT_ENV: self.kit},
        )
        self.broker.start()

    def _spawn(self, child: Child) -> None:
        if child.spec.command is not None:
            cmd = child.spec.command(self.config_path)
        else:
            cmd = service_command(child.spec.name, self.config_path)
        env = scrubbing_environment(
            {**os.environ, "FIELDKIT_CONFIG": str(self.config_path), KIT_ENV: self.kit},
            enabled=self.config.runner.scrub_freed_memory,
        )
        self._watchdog_environment(child, env)
        child.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=die_with_parent,
        )  # fmt: skip
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.spec.name, child.process.pid)

    def _watchdog_environment(self, child: Child, env: dict[str, str]) -> None:
        """What systemd gives a Type=notify unit with WatchdogSec=, less WATCHDOG_PID (the
        child's pid is not known before exec; the kiosk's notifying process is its worker)."""
        for key in (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID):
            env.pop(key, None)  # the supervisor's own manager's, if it has one
        seconds = self.config.runner.watchdog_seconds
        if not seconds:
            return
        if child.notify is None:
            child.notify = NotifySocket(child.spec.name)
        child.notify.receive()  # a killed instance's last words are not the new one's
        child.heard, child.status = None, ""
        env[NOTIFY_SOCKET] = child.notify.address
        env[WATCHDOG_USEC] = str(round(seconds * 1_000_000))

    def _watch(self, child: Child, now: float) -> None:
        """Kill a running child whose heartbeat is overdue; _tend then restarts it.

        A child is watched from its first READY=1 or WATCHDOG=1: one that never speaks the
        protocol, such as a plain command, is not watched."""
        if child.notify is None or child.process is None:
            return
        for message in child.notify.receive():
            child.status = message.get("STATUS", child.status)
            if message.get("READY") == "1" or message.get("WATCHDOG") == "1":
                child.heard = now
        limit = self.config.runner.watchdog_seconds
        if child.heard is None or now - child.heard <= limit:
            return
        log.error(
            "%s (pid %d) sent no watchdog heartbeat for %.1fs (limit %gs; its status: %s); "
            "killing it",
            child.spec.name,
            child.process.pid,
            now - child.heard,
            limit,
            child.status or "none",
        )
        child.heard = None
        # Its whole process group, as systemd kills the unit's cgroup: a hung gunicorn
        # worker does not outlive its master.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.process.pid, signal.SIGKILL)

    def _backoff(self, failures: int) -> float:
        runner = self.config.runner
        return float(min(runner.backoff_initial * 2 ** (failures - 1), runner.backoff_max))

    def _tend(self, child: Child, now: float) -> None:
        if child.process is None:
            if now >= child.restart_at:
                self._spawn(child)
            return
        status = child.process.poll()
        if status is None:
            self._watch(child, now)
            if child.failures and now - child.started > self.config.runner.stable_after:
                child.failures = 0
            return
        child.process = None
        child.failures += 1
        delay = self._backoff(child.failures)
        child.restart_at = now + delay
        log.warning(
            "%s exited with status %s; restarting in %.1fs (failure %d)",
            child.spec.name,
            status,
            delay,
            child.failures,
        )

    def _tend_broker(self) -> None:
        if self.broker is None or self.broker.process is None:
            return
        if self.broker.process.poll() is None:
            return
        log.error(
            "broker exited with status %s; restarting it and every service",
            self.broker.process.returncode,
        )
        self.broker.start()
        # New credentials were issued: every service reconnects with a fresh start.
        for child in self.children:
            if child.process is not None:
                child.process.terminate()

    def run(self) -> int:
        install_stop_signals(self.stop)
        self._start_broker()
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                self._tend_broker()
                for child in self.children:
                    self._tend(child, now)
                self._report()
                self.stop.wait(0.2)
        finally:
            self.shutdown()
        return 0

    def _report(self) -> None:
        """Write what each child last told the watchdog to ``<runtime>/supervisor.json``.

        What ``systemctl status`` shows of a unit under systemd: its pid, its last STATUS=
        line, and when it last beat (CLOCK_MONOTONIC, which every process on the host
        shares). Rewritten only when something changed; no personal data in it.
        """
        report = {
            child.spec.name: {
                "pid": child.process.pid if child.process is not None else None,
                "heard_monotonic": child.heard,
                "status": child.status,
                "failures": child.failures,
            }
            for child in self.children
        }
        text = json.dumps(report, sort_keys=True)
        if text == self._reported:
            return
        path = self.config.bus.runtime_dir / SUPERVISOR_REPORT
        with contextlib.suppress(OSError):  # a report, never a reason to stop supervising
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(text)
            temporary.replace(path)
            self._reported = text

    def shutdown(self) -> None:
        running = [c.process for c in self.children if c.process is not None]
        for process in running:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + self.config.runner.stop_timeout
        for process in running:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pid %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        for child in self.children:
            child.process = None
            if child.notify is not None:
                child.notify.close()
                child.notify = None
        if self.broker is not None:
            self.broker.stop()
        log.info("kit stopped")
