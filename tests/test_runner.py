"""`fieldkit up` and `fieldkit status` as a user runs them, against a real broker. R29"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fieldkit.bus import ENDPOINT_FILE
from fieldkit.config import load_config
from fieldkit.messages import Health, decode
from fieldkit.runner import SUPERVISOR_REPORT, connect_bus, install_stop_signals
from tests.conftest import write_config
from tests.support.waiting import wait_for

FIELDKIT = [sys.executable, "-m", "fieldkit"]


class Kit:
    def __init__(
        self, config: Path, process: subprocess.Popen[bytes], log: Path | None = None
    ) -> None:
        self.config = config
        self.process = process
        self.log = log  # where the supervisor's log goes, if not to the terminal

    def status(self) -> dict[str, dict[str, object] | None]:
        out = subprocess.run(
            [*FIELDKIT, "--config", str(self.config), "status", "--json", "--wait", "0.5"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        return json.loads(out.stdout) if out.stdout else {}

    def health(self, service: str) -> Health | None:
        seen: list[Health] = []
        bus = connect_bus(load_config(self.config), "ctl", announce_health=False)
        bus.observe(f"health/{service}", lambda t, p, r: seen.append(decode(p, Health)))
        bus.connect()
        time.sleep(0.3)
        bus.close()
        return seen[-1] if seen else None


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[Kit]:
    config = write_config(tmp_path)
    process = subprocess.Popen([*FIELDKIT, "--config", str(config), "up"])
    kit = Kit(config, process)
    runtime = load_config(config).bus.runtime_dir
    wait_for(lambda: (runtime / ENDPOINT_FILE).exists(), what="broker endpoint")
    yield kit
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(20)


def online(kit: Kit, service: str) -> Health | None:
    health = kit.health(service)
    return health if health is not None and health.state == "online" else None


def test_status_shows_each_service_online(kit: Kit) -> None:
    wait_for(lambda: online(kit, "monitor"), what="monitor online")
    status = kit.status()
    assert status["monitor"] is not None
    assert status["monitor"]["state"] == "online"


def test_sigkilled_service_goes_offline_by_last_will_and_is_restarted(kit: Kit) -> None:
    first = wait_for(lambda: online(kit, "monitor"), what="monitor online")
    assert isinstance(first, Health) and first.pid is not None
    os.kill(first.pid, signal.SIGKILL)

    # The broker publishes the last will: retained health flips to offline for that pid.
    def offline_will() -> bool:
        h = kit.health("monitor")
        if h is None:
            return False
        return (h.state == "offline" and h.pid == first.pid) or h.pid != first.pid

    wait_for(offline_will, what="offline via last will")
    second = wait_for(
        lambda: (h := online(kit, "monitor")) and h.pid != first.pid and h, what="restart"
    )
    assert isinstance(second, Health) and second.pid != first.pid


def test_ctrl_c_stops_everything_and_leaves_no_credentials(kit: Kit) -> None:
    first = wait_for(lambda: online(kit, "monitor"), what="monitor online")
    assert isinstance(first, Health)
    kit.process.send_signal(signal.SIGINT)
    assert kit.process.wait(20) == 0
    runtime = load_config(kit.config).bus.runtime_dir
    assert not (runtime / "credentials").exists()
    assert not (runtime / ENDPOINT_FILE).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(first.pid or 0, 0)


def test_status_exits_nonzero_when_the_kit_is_down(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = subprocess.run(
        [*FIELDKIT, "--config", str(config), "status"], capture_output=True, text=True, check=False
    )
    assert out.returncode != 0
    assert "credentials" in out.stderr or "broker" in out.stderr


def test_the_stop_handler_takes_no_lock_the_interrupted_code_may_hold() -> None:
    """A signal lands between two bytecodes of the main thread, which may be inside
    ``stop.wait()`` or, for a second Ctrl-C or TERM, inside the first handler's ``stop.set()``,
    holding the Event's lock. A handler that set the Event itself then waited for that lock
    forever (seen: ``fieldkit up`` hung after two stop signals). The handler only records the
    signal; a watcher thread sets the Event."""
    stop = threading.Event()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        install_stop_signals(stop)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        returned = threading.Event()

        def interrupted_inside_the_event() -> None:
            with stop._cond:  # type: ignore[attr-defined]  # where the signal can land
                handler(signal.SIGTERM, None)
                returned.set()

        threading.Thread(target=interrupted_inside_the_event, daemon=True).start()
        assert returned.wait(5), "the stop handler waited for a lock its own thread held"
        assert stop.wait(5)
    finally:
        for number, previous in saved.items():
            signal.signal(number, previous)


# The watchdog (issue 15 item 5): a service whose work thread hangs is killed and restarted,
# as systemd's WatchdogSec= does in the image. A 2 s watchdog and a 2 s keepalive keep it quick.
WATCHDOG = 2.0
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def start_kit(tmp_path: Path) -> Iterator[Callable[..., Kit]]:
    """`fieldkit up` (or another supervisor command) with runner settings from the environment,
    as a user would override them; its log goes to a file the test reads."""
    started: list[Kit] = []

    def start(*, watchdog: float, services: str = "monitor", up: list[str] | None = None) -> Kit:
        config = write_config(tmp_path)
        env = {
            **os.environ,
            "FIELDKIT_RUNNER__WATCHDOG_SECONDS": str(watchdog),
            "FIELDKIT_RUNNER__SERVICES": json.dumps([services]),
            "FIELDKIT_BUS__KEEPALIVE": "2",
        }
        command = [*up, str(config)] if up else [*FIELDKIT, "--config", str(config), "up"]
        log = tmp_path / "up.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(command, env=env, stderr=stderr, cwd=REPO)
        kit = Kit(config, process, log)
        started.append(kit)
        runtime = load_config(config).bus.runtime_dir
        wait_for(lambda: (runtime / ENDPOINT_FILE).exists(), what="broker endpoint")
        return kit

    yield start
    for kit in started:
        if kit.process.poll() is None:
            kit.process.send_signal(signal.SIGINT)
            kit.process.wait(30)


def hang_and_watch(kit: Kit, service: str, hang: Callable[[int], None]) -> tuple[int, float]:
    """Hang the service's running instance; the seconds until another instance is online."""
    first = wait_for(lambda: online(kit, service), what=f"{service} online")
    assert isinstance(first, Health) and first.pid is not None
    hung = first.pid
    time.sleep(1)  # a heartbeat or two first: the supervisor watches from READY=1 on
    hang(hung)
    began = time.monotonic()

    def replaced() -> Health | None:
        health = online(kit, service)
        return health if health is not None and health.pid != hung else None

    # Watchdog, then the first backoff (0.2 s), then a start: well under 30 s on a loaded machine.
    wait_for(replaced, timeout=30, what=f"{service} restarted")
    return hung, time.monotonic() - began


def stays_hung(kit: Kit, service: str, hang: Callable[[int], None]) -> int:
    """Hang the service; wait until the broker has dropped it (its last will says offline)
    and two watchdog periods more: the same process is still there and nothing replaced it."""
    first = wait_for(lambda: online(kit, service), what=f"{service} online")
    assert isinstance(first, Health) and first.pid is not None
    hang(first.pid)
    wait_for(lambda: (h := kit.health(service)) and h.state == "offline", what="offline by will")
    time.sleep(2 * WATCHDOG)
    health = kit.health(service)
    assert health is not None and (health.state, health.pid) == ("offline", first.pid)
    os.kill(first.pid, 0)  # still there, hung
    return first.pid


def read_log(kit: Kit) -> str:
    assert kit.log is not None
    return kit.log.read_text()


def sigstop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def test_a_stopped_service_is_killed_and_restarted_by_the_watchdog(
    start_kit: Callable[..., Kit],
) -> None:
    """The whole process hangs (SIGSTOP): no heartbeat, so the supervisor kills and restarts it."""
    kit = start_kit(watchdog=WATCHDOG)
    hung, took = hang_and_watch(kit, "monitor", sigstop)
    print(f"SIGSTOPped monitor replaced after {took:.1f}s (watchdog {WATCHDOG}s)")
    log = read_log(kit)
    assert f"monitor (pid {hung}) sent no watchdog heartbeat" in log, log[-2000:]
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)
    # The supervisor's report names the new instance, and when it last beat.
    report = load_config(kit.config).bus.runtime_dir / SUPERVISOR_REPORT

    def beats_again() -> dict[str, object] | None:
        monitor = json.loads(report.read_text())["monitor"]
        fresh = monitor["heard_monotonic"] and time.monotonic() - monitor["heard_monotonic"] < 2
        return monitor if fresh and monitor["pid"] not in (None, hung) else None

    assert wait_for(beats_again, what="the report shows the new monitor beating")


def test_a_hung_kiosk_worker_is_killed_with_its_gunicorn_master(
    start_kit: Callable[..., Kit],
) -> None:
    """Under gunicorn the worker joins the bus and beats; the master is the supervisor's child.
    Killing the master alone would leave the hung worker behind, holding the kiosk's port."""
    kit = start_kit(watchdog=WATCHDOG, services="kiosk")
    hung_worker, took = hang_and_watch(kit, "kiosk", sigstop)
    print(f"SIGSTOPped kiosk worker replaced after {took:.1f}s (watchdog {WATCHDOG}s)")
    assert "kiosk (pid " in read_log(kit) and "sent no watchdog heartbeat" in read_log(kit)
    wait_for(lambda: gone(hung_worker), what="the hung worker gone")


def gone(pid: int) -> bool:
    """No such process, or only its exit status is left (an orphan's waits for init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_without_the_watchdog_a_stopped_service_stays_hung(
    start_kit: Callable[..., Kit],
) -> None:
    """The protection is needed: with the watchdog off, the same hang is never caught."""
    kit = start_kit(watchdog=0)
    hung = stays_hung(kit, "monitor", sigstop)
    os.kill(hung, signal.SIGCONT)
    assert "watchdog heartbeat" not in read_log(kit)


def trigger_stuck_read(kit: Kit) -> Callable[[int], None]:
    runtime = load_config(kit.config).bus.runtime_dir

    def hang(pid: int) -> None:
        from tests.stuck_service import TRIGGER

        (runtime / TRIGGER).touch()

    return hang


STUCK_UP = [sys.executable, "-m", "tests.stuck_service", "up"]


def test_a_service_whose_bus_thread_is_stuck_in_a_read_is_restarted(
    start_kit: Callable[..., Kit],
) -> None:
    """One thread hangs (a handler blocked opening a FIFO) while the rest of the process runs:
    a timer thread would go on beating; the heartbeat that needs the bus thread's pong stops."""
    kit = start_kit(watchdog=WATCHDOG, services="stuck", up=STUCK_UP)
    hung, took = hang_and_watch(kit, "stuck", trigger_stuck_read(kit))
    print(f"stuck service replaced after {took:.1f}s (watchdog {WATCHDOG}s)")
    log = read_log(kit)
    assert f"stuck (pid {hung}) sent no watchdog heartbeat" in log, log[-2000:]
    assert "its bus did not answer a ping" in log


def test_without_the_watchdog_a_service_stuck_in_a_read_stays_hung(
    start_kit: Callable[..., Kit],
) -> None:
    kit = start_kit(watchdog=0, services="stuck", up=STUCK_UP)
    stays_hung(kit, "stuck", trigger_stuck_read(kit))
