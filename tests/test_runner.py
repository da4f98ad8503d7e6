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
from fieldkit.runner import connect_bus, install_stop_signals
from tests.conftest import write_config

FIELDKIT = [sys.executable, "-m", "fieldkit"]


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or predicate}")


class Kit:
    def __init__(self, config: Path, process: subprocess.Popen[bytes]) -> None:
        self.config = config
        self.process = process

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
