"""`fieldkit up` on a hub: the TLS broker and the ingest run as supervised services. R15 R16"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fieldkit.pki import KitPki
from fieldkit.sync.wire import up_topic
from tests.hubkit import DeviceClient, free_port, signed_record, wait_for


def test_fieldkit_up_on_a_hub_runs_broker_and_ingest(pki: KitPki, tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "hub.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [device]
            id = "hub-01"
            role = "hub"
            [bus]
            port = 0
            runtime_dir = "{tmp_path / "run"}"
            [hub]
            pki = "{pki.root}"
            broker_port = {port}
            broker_dir = "{tmp_path / "hub-broker"}"
            database_url = "sqlite:///{tmp_path / "hub.sqlite"}"
            [av_mirror]
            directory = "{tmp_path / "av-mirror"}"
            port = {free_port()}
            [hubweb]
            listen_port = {free_port()}
            """
        )
    )
    kit = subprocess.Popen(
        [sys.executable, "-m", "fieldkit", "--config", str(config), "up"],
        stdin=subprocess.DEVNULL,
    )
    device = DeviceClient(pki, "tab-a", port)
    try:

        def delivered() -> bool:
            try:
                if not device.client.is_connected():
                    device.close()
                    device.connect_result.clear()
                    device.connect()
                device.publish(up_topic("tab-a"), signed_record(pki, "tab-a").encode())
            except (OSError, AssertionError, RuntimeError, ValueError):
                # The broker may drop the link while it reloads its CRL (it did in CI, between
                # is_connected() and publish): the next try reconnects.
                return False
            time.sleep(0.3)  # the ack follows the hub's commit
            return any(a.outcome == "stored" for a in device.acks)

        wait_for(delivered, 60, "a record stored through `fieldkit up`")
        status = subprocess.run(
            [sys.executable, "-m", "fieldkit", "--config", str(config), "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        health = json.loads(status.stdout)
        assert health["hub-broker"]["state"] == "online"
        assert health["hub-ingest"]["state"] == "online"

        # Revoking a device on the hub's PKI takes effect at the broker by itself (R16).
        other = DeviceClient(pki, "tab-b", port)
        other.connect()
        other.close()
        subprocess.run(
            [sys.executable, "-m", "fieldkit", "pki", "--dir", str(pki.root), "revoke", "tab-b"],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def tab_b_refused() -> bool:
            probe = DeviceClient(pki, "tab-b", port)
            try:
                probe.connect(timeout=2.0)
            except (OSError, AssertionError):
                return True
            finally:
                probe.close()
            return probe.connect_result != ["Success"]

        wait_for(tab_b_refused, 30, "tab-b refused after revocation")
        device.acks.clear()
        wait_for(delivered, 30, "tab-a still delivers after the broker reloaded its CRL")
        assert tab_b_refused()  # the broker is up (tab-a just delivered) and tab-b is out
    finally:
        device.close()
        kit.send_signal(signal.SIGTERM)
        kit.wait(30)
    assert kit.returncode == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_hub_processes_starting_together_migrate_a_fresh_database_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The hub's processes each migrate at start and may start at once (`fieldkit up` and the
    enrolment server: in the field test the enrolment server died of "table record already
    exists"). Six processes upgrading one fresh database together all succeed."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    script = "import sys; from fieldkit.hub.db import upgrade; upgrade(sys.argv[1])"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    failures = []
    for process in processes:
        _, errors = process.communicate(timeout=300)
        if process.returncode != 0:
            failures.append(errors[-600:])
    assert failures == []
