"""docker-compose.yml cannot run here (no Docker engine): validate it, and run its topology
(broker alone, services with launch_broker=false) with real processes instead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from fieldkit.bus import ENDPOINT_FILE
from fieldkit.config import load_config
from tests.conftest import write_config
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_every_service_is_built_or_pulled_and_has_a_healthcheck() -> None:
    services = compose()["services"]
    assert {"broker", "kit"} <= set(services)
    for name, service in services.items():
        assert "build" in service or "image" in service, name
        assert service["healthcheck"]["test"], name
    built = [s for s in services.values() if "build" in s]
    for service in built:
        context = ROOT / (service["build"] if isinstance(service["build"], str) else ".")
        assert (context / "Dockerfile").is_file()


def test_no_privileged_containers_and_ports_on_loopback_only() -> None:
    for name, service in compose()["services"].items():
        assert service.get("privileged", False) is False, name
        assert "ALL" in service.get("cap_drop", []), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        for port in service.get("ports", []):
            spec = port if isinstance(port, str) else f"{port.get('host_ip')}:{port['published']}"
            assert spec.startswith("127.0.0.1:"), f"{name} publishes {spec} beyond loopback"
        assert service.get("network_mode", "") != "host", name


def test_the_kit_shares_the_brokers_network_so_the_bus_stays_on_loopback() -> None:
    services = compose()["services"]
    assert services["kit"]["network_mode"] == "service:broker"
    assert services["kit"]["environment"]["FIELDKIT_BUS__LAUNCH_BROKER"] == "false"
    assert load_config(ROOT / "etc" / "docker-tablet.toml").bus.host == "127.0.0.1"


def test_split_topology_runs_with_real_processes(tmp_path: Path) -> None:
    """What compose starts: `fieldkit broker run`, then `fieldkit up` without a broker."""
    config = write_config(tmp_path)
    fieldkit = [sys.executable, "-m", "fieldkit", "--config", str(config)]
    runtime = load_config(config).bus.runtime_dir
    broker = subprocess.Popen([*fieldkit, "broker", "run"])
    kit = None
    try:
        wait_for(lambda: (runtime / ENDPOINT_FILE).exists(), what="broker up")
        env = {**os.environ, "FIELDKIT_BUS__LAUNCH_BROKER": "false"}
        kit = subprocess.Popen([*fieldkit, "up"], env=env)

        def healthy() -> bool:
            status = subprocess.run([*fieldkit, "status", "--wait", "0.5"], check=False)
            return status.returncode == 0

        wait_for(healthy, what="kit healthy")
    finally:
        for process in (kit, broker):
            if process is not None:
                process.send_signal(signal.SIGINT)
                assert process.wait(20) == 0
