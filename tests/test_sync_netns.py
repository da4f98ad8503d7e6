"""The tablet cut off from the hub: two network namespaces joined by a veth pair, the link
taken down mid-stream and brought back. Every record arrives exactly once. R15 R16 R21"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import RecordRow, make_engine
from fieldkit.pki import KitPki
from fieldkit.sync.outbox import Outbox
from tests.hubkit import tablet_dir, wait_for

HUB_IP, TABLET_IP = "10.251.7.1", "10.251.7.2"  # only inside the namespaces made here

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Link:
    """Namespaces ``hub`` and ``tablet`` with a veth pair between them."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.hub, self.tablet = f"fk-hub-{tag}", f"fk-tab-{tag}"
        self.hub_if, self.tablet_if = f"fkh{tag}", f"fkt{tag}"

    def up(self) -> None:
        sh("ip", "netns", "add", self.hub)
        sh("ip", "netns", "add", self.tablet)
        sh(
            "ip",
            "link",
            "add",
            self.hub_if,
            "netns",
            self.hub,
            "type",
            "veth",
            "peer",
            "name",
            self.tablet_if,
            "netns",
            self.tablet,
        )
        for ns, iface, ip in (
            (self.hub, self.hub_if, HUB_IP),
            (self.tablet, self.tablet_if, TABLET_IP),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", iface)
            sh("ip", "-n", ns, "link", "set", iface, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def set_tablet_link(self, state: str) -> None:
        sh("ip", "-n", self.tablet, "link", "set", self.tablet_if, state)

    def down(self) -> None:
        for ns in (self.hub, self.tablet):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def run_in(self, ns: str, *cmd: str) -> subprocess.Popen[bytes]:
        # The checkout's tests, and whatever fieldkit the caller runs (a worktree's, too).
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *cmd], env=env, stdin=subprocess.DEVNULL
        )


class NamespacedHubBroker(HubBroker):
    """The hub broker started inside the hub namespace, listening on the veth address."""

    def __init__(self, link: Link, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.link = link

    def start(self, timeout: float = 10.0) -> None:
        self.write_files()
        self.process = self.link.run_in(self.link.hub, "mosquitto", "-c", str(self.config_file))
        probe = f"exec 3<>/dev/tcp/{self.host}/{self.port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = (
                subprocess.run(
                    ["ip", "netns", "exec", self.link.hub, "bash", "-c", probe],
                    capture_output=True,
                    timeout=10,
                ).returncode
                == 0
            )
            if ok:
                return
            time.sleep(0.1)
        raise AssertionError("hub broker did not listen inside its namespace")


@pytest.fixture
def link() -> Iterator[Link]:
    veth = Link()
    try:
        veth.up()
    except subprocess.CalledProcessError as exc:
        veth.down()
        pytest.fail(f"cannot create network namespaces: {exc.stderr.decode().strip()}")
    yield veth
    veth.down()


def test_tablet_cut_off_and_back_delivers_everything_once(
    link: Link, pki: KitPki, tmp_path: Path
) -> None:
    pki.issue_hub(dns=("localhost", "hub"), ips=("127.0.0.1", HUB_IP))
    port = 8883
    broker = NamespacedHubBroker(link, pki, tmp_path / "hub-broker", host=HUB_IP, port=port)
    database = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    ids_file = tmp_path / "ids"
    outbox = tmp_path / "outbox.sqlite"
    hub = {
        "pki": str(pki.root),
        "server_name": HUB_IP,
        "broker_port": port,
        "database_url": database,
    }
    tablet = {
        "device": "tab-a",
        "sync": {
            "outbox": str(outbox),
            "bundle": str(tablet_dir(pki, "tab-a")),
            "hub_host": HUB_IP,
            "hub_port": port,
            "ack_timeout": 1.0,
            "backoff_max": 2.0,
            "reconnect_max": 1.0,
        },
        "count": 400,
        "interval": 0.01,
        "ids_file": str(ids_file),
    }
    engine = make_engine(database)
    processes: list[subprocess.Popen[bytes]] = []

    def at_hub() -> int:
        try:
            with Session(engine) as session:
                return int(session.scalar(select(func.count()).select_from(RecordRow)) or 0)
        except Exception:
            return 0  # not migrated yet

    try:
        broker.start()
        processes.append(broker.process)  # type: ignore[arg-type]
        processes.append(
            link.run_in(
                link.hub, sys.executable, "-m", "tests.netns_roles", "ingest", json.dumps(hub)
            )
        )
        processes.append(
            link.run_in(
                link.tablet, sys.executable, "-m", "tests.netns_roles", "tablet", json.dumps(tablet)
            )
        )
        wait_for(lambda: at_hub() >= 50, 60, "records flowing before the cut")
        link.set_tablet_link("down")
        time.sleep(0.5)  # what was already past the link may still be committed
        cut_at = at_hub()
        time.sleep(2.5)
        assert at_hub() == cut_at  # nothing crosses a cut link; the tablet keeps its records
        link.set_tablet_link("up")
        wait_for(lambda: len(ids_file.read_text().split()) == 400, 60, "all submitted")
        wait_for(lambda: at_hub() == 400, 90, "all records at the hub after the cut")
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    submitted = set(ids_file.read_text().split())
    with Session(engine) as session:
        stored = list(session.scalars(select(RecordRow.record_id)))
    engine.dispose()
    assert len(stored) == len(set(stored)) == 400
    assert set(stored) == submitted
    box = Outbox(outbox, max_records=10**6, max_bytes=10**12)
    state = box.state()
    box.close()
    assert state.pending + state.sent == 0
