"""Antivirus that stays current, with Debian's real freshclam, clamscan and sigtool. R10, R18, R30

The hub's mirror (``DefinitionsMirror``, HTTPS only, with the hub certificate of a test kit PKI)
serves on loopback; freshclam trusts that kit's CA alone (``CURL_CA_BUNDLE``). The kit's own
signature database carries a harmless marker signature; the "infected" sample is a text file
that contains the marker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldkit.antivirus.database import (
    DatabaseError,
    build_unsigned_database,
    hex_signature,
    list_databases,
    read_header,
)
from fieldkit.antivirus.engine import EngineError, render_freshclam_conf, run_freshclam
from fieldkit.antivirus.gate import assess
from fieldkit.antivirus.messages import (
    Accepted,
    AntivirusHealth,
    DefinitionsUpdate,
    Finding,
    GateReply,
    GateRequest,
    ScanReport,
    ScanRequest,
    StatusRequest,
    UpdateRequest,
)
from fieldkit.antivirus.mirror import DefinitionsMirror, mirror_freshness, publish_database
from fieldkit.antivirus.settings import AntivirusSection
from fieldkit.broker import LocalBroker
from fieldkit.bus import RequestRefused, RequestTimeout
from fieldkit.config import DeviceConfig, load_config
from fieldkit.messages import Message, Ping, Pong, decode
from fieldkit.pki import KitPki
from fieldkit.registry import load_specs
from fieldkit.runner import ServiceContext, start_service, stop_service
from tests.antivirus_fixtures import HOUR, MARKER, SIGNATURE, kit_database
from tests.bus_events import BusEvents, Seen
from tests.conftest import BusFactory, write_config

REPO = Path(__file__).resolve().parent.parent


class Events(BusEvents):
    """Antivirus events as the hub-bound sync service would hear them (read via ``audit``)."""

    def wait_for(self, topic: str, model: type[Any], run_id: str, timeout: float = 60.0) -> Any:
        def pick(items: list[Seen]) -> Any:
            for t, payload, _ in items:
                if t == topic and json.loads(payload).get("run_id") == run_id:
                    return decode(payload, model)
            return None

        return self.wait_until(pick, timeout, f"{topic} for run {run_id}")

    def first(self, topic: str, model: type[Any], timeout: float = 60.0) -> Any:
        def pick(items: list[Seen]) -> Any:
            return next((decode(p, model) for t, p, _ in items if t == topic), None)

        return self.wait_until(pick, timeout, topic)

    def all(self, topic: str, model: type[Any]) -> list[Any]:
        with self.changed:
            return [decode(p, model) for t, p, _ in self.items if t == topic]


@pytest.fixture
def mirror_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "hub-mirror"
    directory.mkdir()
    return directory


def make_kit(root: Path, name: str) -> KitPki:
    """A kit CA and its hub certificates (localhost, 127.0.0.1), as `fieldkit pki init` makes."""
    kit = KitPki(root)
    kit.init(name)
    kit.issue_hub()
    return kit


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> KitPki:
    return make_kit(tmp_path_factory.mktemp("kit") / "pki", "fieldkit test kit CA")


@pytest.fixture(scope="module")
def other_kit(tmp_path_factory: pytest.TempPathFactory) -> KitPki:
    """Another kit's CA: not the one the tablet trusts."""
    return make_kit(tmp_path_factory.mktemp("other-kit") / "pki", "another kit CA")


def serve(directory: Path, kit: KitPki, port: int = 0) -> DefinitionsMirror:
    return DefinitionsMirror(
        directory, kit.hub_file("server.crt"), kit.hub_file("server.key"), port=port
    )


@pytest.fixture
def mirror(mirror_dir: Path, kit: KitPki) -> Iterator[DefinitionsMirror]:
    with serve(mirror_dir, kit) as running:
        yield running


@pytest.fixture
def writable(tmp_path: Path) -> Path:
    """A stand-in for the tablet's writable areas, with one clean file."""
    area = tmp_path / "writable"
    area.mkdir()
    (area / "clean.txt").write_text("nothing to see here\n")
    return area


AvConfig = Callable[..., DeviceConfig]


@pytest.fixture
def av_config(
    tmp_path: Path, kit_config: DeviceConfig, mirror: DefinitionsMirror, writable: Path, kit: KitPki
) -> AvConfig:
    def make(
        *,
        max_age_hours: float = 48.0,
        mirror_url: str | None = None,
        mirror_ca: Path | None = None,
        update_on_start: bool = False,
        scan_interval_hours: float = 24.0,
        official_databases: tuple[str, ...] = (),
    ) -> DeviceConfig:
        body = f"""
            [antivirus]
            mirror_url = "{mirror_url or mirror.url}"
            mirror_ca = "{mirror_ca or kit.ca_cert}"
            official_databases = {json.dumps(list(official_databases))}
            max_attempts = 1
            custom_databases = ["fieldkit.cud"]
            max_definitions_age_hours = {max_age_hours}
            database_dir = "{tmp_path / "clamav"}"
            state_dir = "{tmp_path / "av-state"}"
            scan_paths = ["{writable}", "{tmp_path / "not-there"}"]
            update_on_start = {str(update_on_start).lower()}
            scan_interval_hours = {scan_interval_hours}
            connect_timeout = 2
            """
        return load_config(write_config(tmp_path, body))

    return make


class Tablet:
    """The antivirus service running in-process, driven over the real bus."""

    def __init__(self, config: DeviceConfig, make_bus: BusFactory) -> None:
        self.config = config
        self.events = Events()
        self.audit = make_bus("audit", connect=False)
        self.audit.observe("antivirus/evt/#", self.events)
        self.audit.connect()
        self.tester = make_bus("tester")
        self.ctx: ServiceContext | None = None
        self.start()

    def start(self) -> None:
        (spec,) = load_specs(["antivirus"])
        self.ctx = start_service(spec, self.config)
        # connect() returns before the broker has acknowledged the service's subscriptions, so
        # a request sent at once can be dropped; wait until the service answers a ping.
        for _ in range(50):
            try:
                self.tester.request("antivirus", "ping", Ping(), Pong, timeout=0.2)
                return
            except RequestTimeout:
                continue
        raise AssertionError("the antivirus service never answered ping")

    def stop(self) -> None:
        if self.ctx is not None:
            stop_service(self.ctx)
            self.ctx = None

    def ask(self, op: str, message: Message, reply: type[Any]) -> Any:
        return self.tester.request("antivirus", op, message, reply, timeout=10)

    def gate(self) -> GateReply:
        result: GateReply = self.ask("gate", GateRequest(), GateReply)
        return result

    def update(self) -> DefinitionsUpdate:
        accepted: Accepted = self.ask("update", UpdateRequest(), Accepted)
        assert accepted.job == "update"
        result: DefinitionsUpdate = self.events.wait_for(
            "antivirus/evt/definitions", DefinitionsUpdate, accepted.run_id
        )
        return result

    def scan(self) -> ScanReport:
        accepted: Accepted = self.ask("scan", ScanRequest(), Accepted)
        result: ScanReport = self.events.wait_for("antivirus/evt/scan", ScanReport, accepted.run_id)
        return result


@pytest.fixture
def tablet_factory(broker: LocalBroker, make_bus: BusFactory) -> Iterator[Callable[..., Tablet]]:
    started: list[Tablet] = []

    def make(config: DeviceConfig) -> Tablet:
        tablet = Tablet(config, make_bus)
        started.append(tablet)
        return tablet

    yield make
    for tablet in started:
        tablet.stop()


# -- the database format, checked against ClamAV's own tools ---------------------------------------


def test_kit_database_is_read_the_same_by_sigtool_and_detects_only_the_marker(
    tmp_path: Path,
) -> None:
    """R10: our .cud container is a real ClamAV database: sigtool dates it, clamscan loads it."""
    built = time.time() - 10 * 24 * HOUR
    db = tmp_path / "fieldkit.cud"
    db.write_bytes(kit_database(version=7, age_hours=10 * 24))
    info = read_header(db)
    assert (info.version, info.signatures, info.builder) == (7, 1, "fieldkit-hub")
    assert info.built_at == pytest.approx(built, abs=2)

    out = subprocess.run(["sigtool", f"--info={db}"], capture_output=True, text=True, check=True)
    assert "Version: 7" in out.stdout
    assert "Signatures: 1" in out.stdout
    assert time.strftime("%d %b %Y %H:%M", time.gmtime(info.built_at or 0)) in out.stdout

    sample = tmp_path / "sample.bin"
    sample.write_bytes(b"prefix " + MARKER + b" suffix")
    clean = tmp_path / "clean.bin"
    clean.write_bytes(b"prefix " + MARKER[:-1] + b" suffix")  # one byte short: no match
    scan = subprocess.run(
        ["clamscan", "--no-summary", f"--database={db}", str(sample), str(clean)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert scan.returncode == 1
    assert f"{sample}: {SIGNATURE}.UNOFFICIAL FOUND" in scan.stdout
    assert f"{clean}: OK" in scan.stdout


def test_a_damaged_database_is_refused_by_name(tmp_path: Path) -> None:
    db = tmp_path / "fieldkit.cud"
    db.write_bytes(b"not a database")
    with pytest.raises(DatabaseError, match=r"fieldkit\.cud has no ClamAV-VDB header"):
        read_header(db)
    with pytest.raises(DatabaseError, match=r"publish a \.cud/\.cvd container"):
        publish_database(tmp_path, "fieldkit.ndb", b"x")
    with pytest.raises(DatabaseError, match="no ClamAV-VDB header"):
        publish_database(tmp_path / "mirror", "fieldkit.cud", b"garbage")
    assert list((tmp_path / "mirror").iterdir()) == []  # nothing half-published is served


# -- freshclam's config ------------------------------------------------------------------------


def test_rendered_freshclam_config_uses_only_the_hub_mirror(tmp_path: Path) -> None:
    """R10/R30: PrivateMirror (no DNS, no database.clamav.net), kit database by custom URL."""
    policy = AntivirusSection(
        mirror_url="https://hub.example:8081/",
        official_databases=["main", "daily"],
        checks_per_day=12,
        clamd_conf=Path("/etc/clamav/clamd.conf"),
    )
    conf = render_freshclam_conf(policy, tmp_path, owner="clamav").splitlines()
    assert "PrivateMirror https://hub.example:8081" in conf
    assert "DatabaseCustomURL https://hub.example:8081/fieldkit.cud" in conf
    assert "ExcludeDatabase bytecode" in conf and "Bytecode no" in conf
    assert "ExcludeDatabase main" not in conf
    assert "Checks 12" in conf
    assert "NotifyClamd /etc/clamav/clamd.conf" in conf
    assert not any(line.startswith(("DatabaseMirror", "DNSDatabaseInfo")) for line in conf)

    # Without a mirror freshclam is never run: it would fall back to ClamAV's public servers.
    with pytest.raises(EngineError, match="no definitions mirror"):
        run_freshclam(AntivirusSection(), tmp_path / "db", tmp_path / "freshclam.conf")
    assert not (tmp_path / "freshclam.conf").exists()


def test_daily_decides_the_age_so_a_fresh_kit_database_cannot_hide_a_stale_daily(
    tmp_path: Path,
) -> None:
    """R10: with the official databases in the policy, daily's build time is the age."""
    (tmp_path / "daily.cud").write_bytes(
        build_unsigned_database(
            "daily",
            {"daily.ndb": b"Fieldkit.Stand.In.Daily:0:*:46494b2d4441494c59\n"},
            version=27000,
            built_at=time.time() - 5 * 24 * HOUR,
        )
    )
    (tmp_path / "fieldkit.cud").write_bytes(kit_database(version=3))
    databases = list_databases(tmp_path)
    with_daily = AntivirusSection(official_databases=["daily"], max_definitions_age_hours=48)
    verdict = assess(with_daily, databases, None, time.time())
    assert not verdict.allowed and verdict.reason == "definitions-stale"
    assert verdict.definitions_age_hours == pytest.approx(5 * 24, abs=0.1)
    # Without daily in the policy the newest database counts, and the same files pass.
    kit_only = AntivirusSection(official_databases=[], max_definitions_age_hours=48)
    assert assess(kit_only, databases, None, time.time()).allowed


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ('mirror_url = "ftp://hub"', "antivirus.mirror_url: Value error, mirror_url must be"),
        # The mirror is HTTPS only: plain HTTP is refused by the policy as well.
        ('mirror_url = "http://hub:8081"', "mirror_url must be an https:// URL"),
        ('custom_databases = ["../etc/passwd"]', "antivirus.custom_databases: Value error"),
        ("checks_per_day = 100", "antivirus.checks_per_day: Input should be less than"),
        ('official_databases = ["safebrowsing"]', "antivirus.official_databases.0"),
    ],
)
def test_a_bad_antivirus_policy_is_refused_naming_the_key(
    tmp_path: Path, body: str, problem: str
) -> None:
    from fieldkit.config import ConfigError

    with pytest.raises(ConfigError) as refused:
        load_config(write_config(tmp_path, f"[antivirus]\n{body}\n"))
    assert problem in str(refused.value)


def test_policy_file_is_valid() -> None:
    """policies/antivirus.toml (the image build's source) validates against the same model."""
    import tomllib

    raw = tomllib.loads((REPO / "policies" / "antivirus.toml").read_text(encoding="utf-8"))
    policy = AntivirusSection(**raw["antivirus"])
    assert policy.mirror_url is not None and policy.mirror_url.startswith("https://")
    assert policy.mirror_ca == Path("/etc/fieldkit/kit-ca.crt")
    assert policy.max_definitions_age_hours <= 48


# -- the service, end to end over the bus ------------------------------------------------------


def test_freshclam_downloads_from_the_mirror_and_the_scan_reports_the_finding(
    av_config: AvConfig,
    mirror_dir: Path,
    writable: Path,
    tmp_path: Path,
    tablet_factory: Callable[..., Tablet],
) -> None:
    """R10: the kit database comes from the hub mirror; a matching file is found, a clean one not,
    the finding is reported as events for the hub, and sessions are refused until a clean scan."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    tablet = tablet_factory(av_config())

    before = tablet.gate()
    assert not before.allowed and before.reason == "no-definitions"
    assert before.missing == ["fieldkit"]

    update = tablet.update()
    assert update.ok, update.errors
    assert update.updated == ["fieldkit.cud"]
    assert [(d.name, d.version) for d in update.databases] == [("fieldkit", 1)]
    assert (tmp_path / "clamav" / "fieldkit.cud").read_bytes() == (
        mirror_dir / "fieldkit.cud"
    ).read_bytes()
    assert tablet.gate().allowed

    clean_scan = tablet.scan()
    assert clean_scan.completed and clean_scan.findings == []
    assert clean_scan.skipped == [str(tmp_path / "not-there")]

    sample = writable / "sub" / "download.txt"
    sample.parent.mkdir()
    sample.write_bytes(b"some text " + MARKER + b" more text")
    report = tablet.scan()
    assert report.completed
    assert [(f.path, f.signature) for f in report.findings] == [
        (str(sample), f"{SIGNATURE}.UNOFFICIAL")
    ]
    (finding,) = tablet.events.all("antivirus/evt/finding", Finding)
    assert finding.run_id == report.run_id and finding.device_id == "test-tablet-01"
    refused = tablet.gate()
    assert not refused.allowed and refused.reason == "threat-found"
    assert "ウイルスが見つかった" in refused.message_ja
    assert "virus was found" in refused.message_en

    # The finding survives a restart of the service (it is kept in the state file).
    tablet.stop()
    tablet.start()
    assert tablet.gate().reason == "threat-found"
    health = tablet.ask("status", StatusRequest(), AntivirusHealth)
    assert health.last_scan is not None and len(health.last_scan.findings) == 1

    sample.unlink()
    assert tablet.scan().findings == []
    assert tablet.gate().allowed


def test_the_gate_refuses_stale_definitions_and_allows_fresh_ones(
    av_config: AvConfig, mirror_dir: Path, tablet_factory: Callable[..., Tablet]
) -> None:
    """R10: definitions older than the policy (by their build time) → refused, with the reason
    in plain Japanese and English; after the hub publishes fresh ones → allowed."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1, age_hours=72))
    tablet = tablet_factory(av_config(max_age_hours=48))
    assert tablet.update().ok

    stale = tablet.gate()
    assert not stale.allowed
    assert stale.reason == "definitions-stale"
    assert stale.definitions_age_hours == pytest.approx(72, abs=0.1)
    assert stale.message_ja.startswith("ウイルス対策のデータが3日前のもので古いため")
    assert "ハブにつないで" in stale.message_ja
    assert "too old (3 days old)" in stale.message_en

    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=2))
    update = tablet.update()
    assert update.ok and update.updated == ["fieldkit.cud"]
    fresh = tablet.gate()
    assert fresh.allowed and fresh.reason == "ok"
    assert fresh.definitions_age_hours is not None and fresh.definitions_age_hours < 0.1


def test_without_the_age_limit_stale_definitions_get_through(
    av_config: AvConfig, mirror_dir: Path, tablet_factory: Callable[..., Tablet]
) -> None:
    """The check is what refuses: the same 72-hour-old database passes a lax policy."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1, age_hours=72))
    tablet = tablet_factory(av_config(max_age_hours=10_000))
    assert tablet.update().ok
    assert tablet.gate().allowed


def test_mirror_down_is_reported_and_the_old_definitions_stay_with_their_real_age(
    av_config: AvConfig,
    mirror: DefinitionsMirror,
    mirror_dir: Path,
    tmp_path: Path,
    tablet_factory: Callable[..., Tablet],
) -> None:
    """R10: freshclam failing is reported; the old databases stay in use; the gate goes by
    their build time, not by when the file was written."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=4, age_hours=30))
    tablet = tablet_factory(av_config(max_age_hours=48))
    assert tablet.update().ok
    installed = tmp_path / "clamav" / "fieldkit.cud"
    kept = installed.read_bytes()

    mirror.stop()
    failed = tablet.update()
    assert not failed.ok
    assert any("fieldkit.cud" in e or "connect" in e.lower() for e in failed.errors), failed.errors
    assert [(d.name, d.version) for d in failed.databases] == [("fieldkit", 4)]
    assert installed.read_bytes() == kept

    gate = tablet.gate()
    assert gate.allowed and gate.last_update_ok is False
    # The file was written seconds ago, yet the age is the database's own: 30 hours.
    assert time.time() - installed.stat().st_mtime < 120
    assert gate.definitions_age_hours == pytest.approx(30, abs=0.1)
    # The same old definitions, 20 hours on with the mirror still down, are refused.
    later = assess(
        av_config().antivirus, list_databases(installed.parent), None, time.time() + 20 * HOUR
    )
    assert not later.allowed and later.reason == "definitions-stale"

    # The health event that reports the failed update follows it on the bus: wait for it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        health = tablet.events.all("antivirus/evt/health", AntivirusHealth)[-1]
        if health.last_update is not None and health.last_update.run_id == failed.run_id:
            break
        time.sleep(0.1)
    assert health.last_update is not None and health.last_update.run_id == failed.run_id
    assert not health.last_update.ok
    assert health.gate.definitions_age_hours == pytest.approx(30, abs=0.1)


def test_updates_and_scans_run_on_their_own_schedule(
    av_config: AvConfig, mirror_dir: Path, writable: Path, tablet_factory: Callable[..., Tablet]
) -> None:
    """R10/R30: freshclam runs at start and every 24h/checks_per_day; the scan every interval,
    without anyone asking."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    (writable / "found.txt").write_bytes(MARKER)
    tablet = tablet_factory(av_config(update_on_start=True, scan_interval_hours=1 / 3600))
    update = tablet.events.first("antivirus/evt/definitions", DefinitionsUpdate)
    assert update.ok and update.updated == ["fieldkit.cud"]
    finding = tablet.events.first("antivirus/evt/finding", Finding)
    assert finding.path == str(writable / "found.txt")
    assert tablet.gate().reason == "threat-found"


def test_official_databases_are_asked_of_the_hub_mirror_only(
    av_config: AvConfig,
    mirror: DefinitionsMirror,
    mirror_dir: Path,
    tablet_factory: Callable[..., Tablet],
) -> None:
    """R10/R16: with PrivateMirror, freshclam asks the hub for daily (no DNS, no ClamAV servers);
    a hub that has no daily yet makes the update fail visibly, and sessions are refused."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    tablet = tablet_factory(av_config(official_databases=("daily",)))
    failed = tablet.update()
    assert not failed.ok
    assert any("daily" in e for e in failed.errors), failed.errors
    assert ("/daily.cld", 404) in mirror.fetches and ("/daily.cvd", 404) in mirror.fetches
    gate = tablet.gate()
    assert not gate.allowed and gate.reason in {"no-definitions", "definitions-missing"}
    assert "daily" in gate.missing


def test_bad_requests_are_refused_and_the_service_keeps_answering(
    av_config: AvConfig, tablet_factory: Callable[..., Tablet]
) -> None:
    class GateWithExtra(Message):
        type: str = "av-gate"
        force: bool = True

    tablet = tablet_factory(av_config())
    with pytest.raises(RequestRefused, match="force"):
        tablet.ask("gate", GateWithExtra(), GateReply)
    assert tablet.gate().reason == "no-definitions"


# -- the hub's side, as the provisioning admin runs it ------------------------------------------


def test_cli_publishes_and_serves_the_kit_database(
    tmp_path: Path, mirror_dir: Path, kit: KitPki
) -> None:
    """R10: `fieldkit av publish` builds the next version; `av mirror status` shows its age."""
    config = write_config(tmp_path)
    ndb = tmp_path / "fieldkit.ndb"
    ndb.write_text(hex_signature(SIGNATURE, MARKER) + "\n")
    fk = [sys.executable, "-m", "fieldkit", "--config", str(config), "av"]
    for expected in (1, 2):
        out = subprocess.run(
            [*fk, "publish", str(mirror_dir), str(ndb)], capture_output=True, text=True, check=True
        )
        assert f"version {expected}" in out.stdout
    (row,) = mirror_freshness(mirror_dir)
    assert row[0].version == 2 and row[1] < 0.1
    status = subprocess.run(
        [*fk, "mirror", "status", str(mirror_dir)], capture_output=True, text=True, check=True
    )
    assert "fieldkit.cud" in status.stdout

    # The mirror serves databases only: no listing, no other files.
    (mirror_dir / "notes.txt").write_text("private")
    import ssl
    import urllib.error
    import urllib.request

    trusting_kit = ssl.create_default_context(cafile=str(kit.ca_cert))
    with serve(mirror_dir, kit) as running:
        body = urllib.request.urlopen(f"{running.url}/fieldkit.cud", context=trusting_kit).read()  # noqa: S310
        assert body == (mirror_dir / "fieldkit.cud").read_bytes()
        for path in ("/", "/notes.txt", "/../device.toml"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{running.url}{path}", context=trusting_kit)  # noqa: S310
            assert refused.value.code == 404


# -- the mirror over TLS, with the real freshclam ------------------------------------------------


def _section(mirror_url: str, ca: Path, tmp_path: Path) -> AntivirusSection:
    return AntivirusSection(
        mirror_url=mirror_url,
        mirror_ca=ca,
        official_databases=[],
        custom_databases=["fieldkit.cud"],
        max_attempts=1,
        connect_timeout=2,
        database_dir=tmp_path / "clamav",
        state_dir=tmp_path / "av-state",
    )


def _freshclam(section: AntivirusSection, tmp_path: Path) -> tuple[bool, list[str], list[str]]:
    run = run_freshclam(section, tmp_path / "clamav", tmp_path / "av-state" / "freshclam.conf")
    return run.ok, run.updated, run.errors


def test_freshclam_takes_the_mirror_only_with_the_kit_ca(
    mirror: DefinitionsMirror, mirror_dir: Path, kit: KitPki, other_kit: KitPki, tmp_path: Path
) -> None:
    """R10/R16: the mirror is HTTPS; freshclam verifies it with the kit CA it is handed
    (CURL_CA_BUNDLE). Trusting another CA, or the system's public ones, it takes nothing."""
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    installed = tmp_path / "clamav" / "fieldkit.cud"

    # Another kit's CA: the hub's certificate does not verify, nothing is installed.
    ok, updated, errors = _freshclam(_section(mirror.url, other_kit.ca_cert, tmp_path), tmp_path)
    assert not ok and updated == [] and errors, errors
    assert not installed.exists()
    assert mirror.fetches == []  # no request got past the handshake

    # The system's CAs (no CURL_CA_BUNDLE at all): refused the same way.
    conf = tmp_path / "av-state" / "freshclam.conf"
    environment = {k: v for k, v in os.environ.items() if k != "CURL_CA_BUNDLE"}
    done = subprocess.run(
        ["freshclam", f"--config-file={conf}", "--stdout", "--no-warnings"],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    assert not installed.exists() and mirror.fetches == []

    # The kit CA: the database comes down.
    ok, updated, errors = _freshclam(_section(mirror.url, kit.ca_cert, tmp_path), tmp_path)
    assert ok and updated == ["fieldkit.cud"], errors
    assert installed.read_bytes() == (mirror_dir / "fieldkit.cud").read_bytes()
    assert ("/fieldkit.cud", 200) in mirror.fetches

    # No kit CA on the device: freshclam is not run at all (it would trust the system's CAs).
    with pytest.raises(EngineError, match="kit CA for the definitions mirror"):
        _freshclam(_section(mirror.url, tmp_path / "no-such-ca.crt", tmp_path), tmp_path)


def test_the_mirror_refuses_plain_http_and_old_tls(
    mirror: DefinitionsMirror, mirror_dir: Path, kit: KitPki, tmp_path: Path
) -> None:
    """R16: a plain-HTTP request to the mirror's port gets no answer, freshclam pointed at it
    over http:// takes nothing; TLS older than 1.2 is refused. The mirror keeps serving."""
    import socket
    import ssl

    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    host, port = mirror.server.server_address[:2]
    with socket.create_connection((str(host), int(port)), timeout=10) as plain:
        plain.sendall(b"GET /fieldkit.cud HTTP/1.1\r\nHost: hub\r\nConnection: close\r\n\r\n")
        answer = b""
        try:
            while chunk := plain.recv(4096):
                answer += chunk
        except ConnectionResetError:
            pass
    assert b"HTTP/" not in answer and b"ClamAV-VDB" not in answer

    # The real freshclam, told to use plain HTTP (the policy refuses such a URL; written by hand).
    conf = tmp_path / "freshclam-http.conf"
    section = _section(mirror.url, kit.ca_cert, tmp_path)
    http_url = mirror.url.replace("https://", "http://")
    conf.write_text(
        render_freshclam_conf(section, tmp_path / "clamav").replace(mirror.url, http_url)
    )
    (tmp_path / "clamav").mkdir()
    done = subprocess.run(
        ["freshclam", f"--config-file={conf}", "--stdout", "--no-warnings"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0, done.stdout
    assert not (tmp_path / "clamav" / "fieldkit.cud").exists()

    old = ssl.create_default_context(cafile=str(kit.ca_cert))
    old.minimum_version = ssl.TLSVersion.TLSv1_1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with (
        socket.create_connection((str(host), int(port)), timeout=10) as raw,
        pytest.raises(ssl.SSLError),
    ):
        old.wrap_socket(raw, server_hostname="localhost")
    assert mirror.fetches == []

    # Still serving over TLS 1.2+ with the kit CA.
    import urllib.request

    trusting_kit = ssl.create_default_context(cafile=str(kit.ca_cert))
    with urllib.request.urlopen(f"{mirror.url}/fieldkit.cud", context=trusting_kit) as got:  # noqa: S310
        assert got.read() == (mirror_dir / "fieldkit.cud").read_bytes()


@pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace (unshare -m) needs root")
def test_the_units_empty_system_ca_folder_keeps_other_cas_out(
    mirror_dir: Path, kit: KitPki, other_kit: KitPki, tmp_path: Path
) -> None:
    """R10/R16, both ways: libcurl trusts its compiled-in CA folder (/etc/ssl/certs) besides
    CURL_CA_BUNDLE, so a mirror whose certificate a CA there signed is taken even though freshclam
    was handed the kit CA alone. The units' TemporaryFileSystem (freshclam_sandbox), emulated
    here by a tmpfs in a mount namespace of freshclam's own, keeps it out."""
    from fieldkit.antivirus.engine import SYSTEM_CA_FOLDER, freshclam_sandbox

    section = _section("https://127.0.0.1:1", kit.ca_cert, tmp_path)
    directives = freshclam_sandbox(section)
    assert directives["Environment"] == f"CURL_CA_BUNDLE={kit.ca_cert}"
    assert directives["TemporaryFileSystem"] == f"{SYSTEM_CA_FOLDER}:ro"

    # A stand-in for a public CA: another kit's CA, in a copy of the system folder, by hash.
    folder = tmp_path / "system-cas"
    folder.mkdir()
    subject_hash = subprocess.run(
        ["openssl", "x509", "-hash", "-noout", "-in", str(other_kit.ca_cert)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (folder / f"{subject_hash}.0").write_bytes(other_kit.ca_cert.read_bytes())
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    impostor = serve(mirror_dir, other_kit)
    with impostor:
        section = _section(impostor.url, kit.ca_cert, tmp_path)
        database_dir = tmp_path / "clamav"
        database_dir.mkdir()
        conf = tmp_path / "freshclam.conf"
        conf.write_text(render_freshclam_conf(section, database_dir))
        freshclam = f"freshclam --config-file={conf} --stdout --no-warnings"
        environment = {**os.environ, "CURL_CA_BUNDLE": str(kit.ca_cert)}

        def run(mount: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    "sh",
                    "-ec",
                    f"{mount}; {freshclam}",
                ],
                capture_output=True,
                text=True,
                env=environment,
                timeout=120,
                check=False,
            )

        # Off: the other CA in the system folder, only the kit CA handed over: taken all the same.
        taken = run(f"mount --bind {folder} {SYSTEM_CA_FOLDER}")
        assert taken.returncode == 0, taken.stdout
        assert (database_dir / "fieldkit.cud").exists()
        (database_dir / "fieldkit.cud").unlink()
        assert ("/fieldkit.cud", 200) in impostor.fetches
        impostor.fetches.clear()

        # On: the unit's empty folder over it (TemporaryFileSystem=/etc/ssl/certs:ro).
        refused = run(f"mount -t tmpfs -o ro,mode=0755 tmpfs {SYSTEM_CA_FOLDER}")
        assert refused.returncode != 0, refused.stdout
        assert "certificate" in refused.stdout.lower() or "ssl" in refused.stdout.lower()
        assert not (database_dir / "fieldkit.cud").exists()
        assert impostor.fetches == []


# -- the official databases: cvdupdate on the hub --------------------------------------------------


def _cvd() -> str | None:
    """cvdupdate's `cvd` (requirements: the hub extra), beside this Python or on PATH."""
    import shutil

    beside = Path(sys.executable).parent / "cvd"
    return str(beside) if beside.exists() else shutil.which("cvd")


def test_cvd_update_without_clamavs_servers_fails_cleanly_and_the_mirror_keeps_serving(
    mirror: DefinitionsMirror, mirror_dir: Path, kit: KitPki, tmp_path: Path
) -> None:
    """R10/R30: `fieldkit av mirror update` runs cvdupdate's `cvd update` into the mirror's
    folder. Here (as on a hub cut off from ClamAV's servers) it fails with cvd's own reason,
    which `av mirror status` shows; the mirror goes on serving the databases it has."""
    import ssl
    import urllib.request

    cvd = _cvd()
    if cvd is None:
        pytest.skip("cvdupdate is not installed (pip install -r requirements/dev.lock)")
    publish_database(mirror_dir, "fieldkit.cud", kit_database(version=1))
    state = tmp_path / "cvdupdate"
    config = write_config(
        tmp_path,
        f'[av_mirror]\ndirectory = "{mirror_dir}"\ncvd = "{cvd}"\ncvd_state_dir = "{state}"\n',
    )
    fk = [sys.executable, "-m", "fieldkit", "--config", str(config), "av", "mirror"]
    # No network at all where we can make sure of it (root: a network namespace of its own).
    isolate = ["unshare", "--net"] if os.geteuid() == 0 else []
    failed = subprocess.run(
        [*isolate, *fk, "update", "--timeout", "300"],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "official databases not updated" in failed.stderr
    assert "Traceback" not in failed.stderr
    outcome = json.loads((state / "last-update.json").read_text())
    assert outcome["ok"] is False and outcome["errors"], outcome
    # cvd's config, rendered by fieldkit: the mirror's folder is the one it fills.
    shown = subprocess.run(
        [cvd, "config", "show", "--config", str(state / "config.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert f'"db directory": "{mirror_dir}"' in shown.stdout
    status = subprocess.run([*fk, "status"], capture_output=True, text=True, check=False)
    assert "fieldkit.cud" in status.stdout
    assert f"FAILED: {outcome['errors'][-1]}" in status.stdout
    # Nothing half-fetched in the mirror; it still serves the kit's database over TLS.
    assert sorted(p.name for p in mirror_dir.iterdir()) == ["fieldkit.cud"]
    trusting_kit = ssl.create_default_context(cafile=str(kit.ca_cert))
    with urllib.request.urlopen(f"{mirror.url}/fieldkit.cud", context=trusting_kit) as got:  # noqa: S310
        assert got.read() == (mirror_dir / "fieldkit.cud").read_bytes()
