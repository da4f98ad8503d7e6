"""Fixtures for sync and hub tests: a kit PKI, a real mutual-TLS mosquitto, a hub database
(SQLite, or a real PostgreSQL cluster in a temporary directory), ingest and tablet couriers."""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.bus import Endpoint
from fieldkit.enrolment.local import enrol_locally
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.db import RecordRow
from fieldkit.hub.ingest import Ingest
from fieldkit.hub.settings import HubSection
from fieldkit.pki import KitPki
from fieldkit.registry import identities_for, specs_for_role
from fieldkit.sync.courier import Courier
from fieldkit.sync.settings import SyncSection
from tests.support.municipality import MUNICIPALITY_MACHINES
from tests.support.waiting import wait_for

MUNICIPALITY = "131016"  # Chiyoda-ku, Tokyo (local-government code with check digit)
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def statistics_body(n: int = 0) -> dict[str, Any]:
    return {
        "site": f"site-{n % 7}",
        "date": "2026-08-03",
        "municipality": MUNICIPALITY,
        "sex": "female",
        "age_band": "70-79",
        "mode": "support",
        "outcome": "applied",
    }


def tablet_dir(pki: KitPki, device: str) -> Path:
    """Where a test tablet's enrolment lives: beside the hub's PKI, never inside it (the hub
    holds no device private key)."""
    return pki.root.parent / "tablets" / device


def enrol_tablet(pki: KitPki, device: str) -> Path:
    """Enrol a test tablet the way a tablet does: its own keys, a CSR the kit CA signs."""
    return enrol_locally(pki, device, tablet_dir(pki, device))


@pytest.fixture(scope="session")
def session_pki(tmp_path_factory: pytest.TempPathFactory) -> KitPki:
    pki = KitPki(tmp_path_factory.mktemp("kit") / "pki")
    pki.init()
    pki.issue_hub()
    MUNICIPALITY_MACHINES.register(pki, MUNICIPALITY)
    for device in ("tab-a", "tab-b"):
        enrol_tablet(pki, device)
    return pki


@pytest.fixture
def pki(tmp_path: Path, session_pki: KitPki) -> KitPki:
    """A private copy of the kit, hub PKI and tablets (tests revoke and enrol without
    disturbing each other)."""
    kit = tmp_path / "kit"
    shutil.copytree(session_pki.root.parent, kit)
    return KitPki(kit / "pki")


@pytest.fixture
def hub_broker(pki: KitPki, tmp_path: Path) -> Iterator[HubBroker]:
    with HubBroker(pki, tmp_path / "hub-broker", port=0) as broker:
        yield broker


class PostgresCluster:
    """Debian's PostgreSQL 15, initdb'd in a temp dir, listening on a unix socket only."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="fieldkit-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.port = free_port()
        self.user = "postgres"
        self._databases = 0

    def _run(self, *cmd: str) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self.socket_dir.mkdir(parents=True)
        if os.geteuid() == 0:
            # initdb refuses to run as root; the cluster belongs to the postgres user.
            entry = pwd.getpwnam(self.user)
            for path in (self.root, self.socket_dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        )
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-w",
            "-l",
            str(self.root / "log"),
            "-o",
            f"-k {self.socket_dir} -p {self.port} -c listen_addresses=''",
            "start",
        )

    def create_database(self, name: str = "", owner: str = "postgres") -> str:
        """A new empty database (``name``, or the next ``hubN``) owned by ``owner``; its URL
        (connecting as the owner)."""
        if not name:
            self._databases += 1
            name = f"hub{self._databases}"
        self._client("createdb", "--owner", owner, name)
        return self.url(name, owner)

    def create_role(self, name: str) -> None:
        """A login role without special rights (like the hub's database owner)."""
        self._client("createuser", "--no-superuser", "--no-createdb", "--no-createrole", name)

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--force", name)

    def url(self, name: str, user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@/{name}?host={self.socket_dir}&port={self.port}"

    def _client(self, tool: str, *args: str) -> None:
        self._run(
            str(PG_BIN / tool),
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            *args,
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed (Debian package 'postgresql'); run ./dev.sh")
    cluster = PostgresCluster()
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()


def hub_settings(pki: KitPki, broker: HubBroker, database_url: str, **extra: Any) -> HubSection:
    return HubSection(
        pki=pki.root,
        broker_port=broker.port,
        database_url=database_url,
        **extra,
    )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'hub.sqlite'}"


IngestFactory = Callable[..., Ingest]


@pytest.fixture
def make_ingest(pki: KitPki, hub_broker: HubBroker) -> Iterator[IngestFactory]:
    started: list[Ingest] = []

    def make(database_url: str, **extra: Any) -> Ingest:
        ingest = Ingest(hub_settings(pki, hub_broker, database_url, **extra))
        ingest.start()
        assert ingest.wait_connected(), "ingest could not connect to the hub broker"
        started.append(ingest)
        return ingest

    yield make
    for ingest in started:
        with contextlib.suppress(Exception):
            ingest.stop()


def sync_settings(
    pki: KitPki, broker: HubBroker, device: str, outbox: Path, **extra: Any
) -> SyncSection:
    values: dict[str, Any] = {
        "outbox": outbox,
        "bundle": tablet_dir(pki, device),
        "hub_port": broker.port,
        "ack_timeout": 1.0,
        "backoff_max": 2.0,
        "reconnect_max": 1.0,
    }
    values.update(extra)
    return SyncSection(**values)


CourierFactory = Callable[..., Courier]


@pytest.fixture
def make_courier(pki: KitPki, hub_broker: HubBroker, tmp_path: Path) -> Iterator[CourierFactory]:
    started: list[Courier] = []

    def make(device: str = "tab-a", **extra: Any) -> Courier:
        courier = Courier(
            device, sync_settings(pki, hub_broker, device, tmp_path / f"{device}.outbox", **extra)
        )
        courier.start()
        started.append(courier)
        return courier

    yield make
    for courier in started:
        with contextlib.suppress(Exception):
            courier.stop()


def count_records(ingest: Ingest) -> int:
    with Session(ingest.engine) as session:
        return int(session.scalar(select(func.count()).select_from(RecordRow)) or 0)


def record_ids(ingest: Ingest) -> list[str]:
    with Session(ingest.engine) as session:
        return list(session.scalars(select(RecordRow.record_id)))


def signing_public_b64(pki: KitPki, device: str) -> str:
    from fieldkit.pki import read_roster

    return base64.b64encode(read_roster(pki.roster)[device].signing_public).decode()


def operator_roster(issued_at: float, *operators: Any, receivers: Any = None) -> Any:
    """An operator roster as the hub makes it (version from its operators and, when given,
    its receiver keys: ``RosterReceiver``s), unsigned."""
    from fieldkit.sync.wire import OperatorRoster, roster_version

    return OperatorRoster(
        version=roster_version(list(operators), (), receivers),
        issued_at=issued_at,
        operators=list(operators),
        receivers=receivers,
    )


def hub_signed(pki: KitPki, message: Any, device: str = "tab-a") -> Any:
    """``message`` signed for ``device`` with the hub's downlink key, as hub-ingest sends it."""
    from fieldkit.pki import load_ed25519_private

    return message.signed_for(device, load_ed25519_private(pki.downlink_key))


class DeviceClient:
    """A bare mutual-TLS MQTT client for one device's bundle, for messages sync never sends."""

    def __init__(self, pki: KitPki, device: str, port: int, *, bundle: Path | None = None) -> None:

        from fieldkit.messages import decode
        from fieldkit.sync.link import tls_client, tls_context
        from fieldkit.sync.wire import Acks

        self.device = device
        bundle = bundle or tablet_dir(pki, device)
        self.acks: list[Any] = []
        self.connect_result: list[str] = []
        self.client = tls_client(
            f"raw-{device}",
            tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
        )

        def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            self.connect_result.append(str(reason))
            if not reason.is_failure:
                client.subscribe(f"fieldkit/{device}/down/#", qos=1)

        def on_message(client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
            self.acks.extend(decode(bytes(msg.payload), Acks).items)

        self.puback: dict[int, str] = {}

        def on_publish(client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
            self.puback[mid] = str(reason)

        self.client.on_connect = on_connect
        self.client.on_message = on_message
        self.client.on_publish = on_publish
        self.port = port

    def connect(self, timeout: float = 10.0) -> None:
        self.client.connect("localhost", self.port, keepalive=10)
        self.client.loop_start()
        wait_for(lambda: self.connect_result, timeout, "CONNACK")
        time.sleep(0.2)  # let the downlink subscription settle

    def publish(self, topic: str, payload: bytes) -> Any:
        info = self.client.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        return info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def signed_record(pki: KitPki, device: str, kind: str = "statistics", **overrides: Any) -> Any:
    from fieldkit.pki import load_ed25519_private
    from fieldkit.sync.courier import new_record_id
    from fieldkit.sync.wire import Record

    values: dict[str, Any] = {
        "record_id": new_record_id(),
        "device_id": device,
        "kind": kind,
        "created_at": time.time(),
        "body": statistics_body(),
    }
    values.update(overrides)
    return Record(**values).signed(load_ed25519_private(tablet_dir(pki, device) / "signing.key"))


class HubIngestProcess:
    """``fieldkit service run hub-ingest`` with its own local bus broker."""

    def __init__(
        self, work: Path, pki: KitPki, port: int, database_url: str, **hub: int | float
    ) -> None:
        self.work = work
        runtime = work / "run"
        runtime.mkdir(parents=True)
        self.config = work / "hub.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                [device]
                id = "hub-01"
                role = "hub"
                [bus]
                port = 0
                runtime_dir = "{runtime}"
                [av_mirror]
                directory = "{work / "av-mirror"}"
                port = {free_port()}
                [hub]
                pki = "{pki.root}"
                broker_port = {port}
                database_url = "{database_url}"
                """
            )
            + "".join(f"{key} = {value}\n" for key, value in hub.items())
        )
        self.local = LocalBroker(runtime, identities_for(specs_for_role("hub")), Endpoint(port=0))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.local.process is None:
            self.local.start()
        cmd = [sys.executable, "-m", "fieldkit", "--config", str(self.config)]
        self.process = subprocess.Popen(
            [*cmd, "service", "run", "hub-ingest"], stdin=subprocess.DEVNULL
        )

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, whatever was in its hands is lost."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(20)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)
            self.process = None
        self.local.stop()


def try_connect(client: mqtt.Client, port: int) -> str:
    """'connected', or why the TLS/MQTT connection failed."""
    outcome: list[str] = []
    client.on_connect = lambda c, u, f, reason, p: outcome.append(str(reason))
    try:
        client.connect("localhost", port, keepalive=5)
        client.loop_start()
        with contextlib.suppress(AssertionError):
            wait_for(lambda: outcome, 3, "connection outcome")
        client.loop_stop()
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        client.disconnect()
    if outcome == ["Success"]:
        return "connected"
    return f"refused: {outcome or 'closed'}"


def device_client(bundle: Path, ca: Path | None = None) -> mqtt.Client:
    from fieldkit.sync.link import tls_client, tls_context

    return tls_client(
        "probe",
        tls_context(ca or bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
    )
