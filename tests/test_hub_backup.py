"""Hub database backups and the restore drill (issue 18; R21 R23 R24), on a real PostgreSQL.

The hub is filled through its real ingest path (tablets' signed records over mutual-TLS MQTT),
backed up with ``fieldkit hub backup`` (``pg_dump``, encrypted to the admin's key as it is
written), the database is dropped and made anew, and ``fieldkit hub restore`` brings it back:
every table's rows and every device's erasure chain are as before, checked here with the hub's
own readers, and ingest carries on where it stopped. A changed, cut or wrongly keyed backup is
refused before the database is touched."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.orm import Session

from fieldkit.config import ConfigError, DeviceConfig
from fieldkit.hub.backup import check_backup, database_state, differences, make_backup, prune
from fieldkit.hub.backup_file import MAGIC, BackupError
from fieldkit.hub.broker import HubBroker
from fieldkit.hub.custody import hub_directories, refuse_private_sealing_keys
from fieldkit.hub.db import make_engine
from fieldkit.hub.web.auth import create_account
from fieldkit.hub.web.chains import device_chain
from fieldkit.pki import KitPki, load_ed25519_private, load_x25519_public, read_roster
from fieldkit.sealing import seal
from fieldkit.sealing_keys import find_private_sealing_keys, generate, load_private
from fieldkit.sync.courier import new_record_id
from fieldkit.sync.wire import AuditEvent, DeviceHealth
from fieldkit.wipe.record import ErasureRecord, EvidenceStore
from tests.hubkit import (
    MUNICIPALITY,
    PG_BIN,
    DeviceClient,
    IngestFactory,
    PostgresCluster,
    count_records,
    signed_record,
    statistics_body,
    tablet_dir,
)
from tests.support.waiting import wait_for

ADMIN_PASSPHRASE = b"provisioning admin backup key 2026"
REPO = Path(__file__).resolve().parents[1]
HUB_ROLE = REPO / "ansible" / "roles" / "hub"


def admin_key(folder: Path) -> tuple[Path, Path, Path]:
    """The admin's key pair, made as `fieldkit hub backup-keygen` makes it, on "their own
    machine" (a folder no hub service scans); the private key, public key, passphrase file."""
    made = generate(
        folder, ADMIN_PASSPHRASE, private_name="backup-private.pem", public_name="backup-public.pem"
    )
    passphrase = folder / "passphrase"
    passphrase.write_bytes(ADMIN_PASSPHRASE + b"\n")
    return made.private, made.public, passphrase


def fieldkit(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "fieldkit"]
    if config is not None:
        cmd += ["--config", str(config)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, check=False, timeout=300)


def hub_config(tmp_path: Path, pki: KitPki, database_url: str) -> Path:
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[device]\nid = "hub-01"\nrole = "hub"\n'
        f'[hub]\npki = "{pki.root}"\ndatabase_url = "{database_url}"\n'
    )
    return config


def erasure_body(record: ErasureRecord) -> dict[str, Any]:
    return {
        "at": record.finished,
        "level": record.kind,
        "verified": record.ok,
        "record": record.model_dump(mode="json"),
    }


def fill_hub(pki: KitPki, port: int, ingest: Any, work: Path) -> list[bytes]:
    """Two tablets' records through the hub broker into ingest: statistics, sealed packets,
    erasure chains (tab-b's with an altered record: a chain with a problem must come back
    with the same problem), audit events, health, and one refused record. Returns what was
    published, to publish again after the restore."""
    published: list[tuple[str, bytes]] = []
    receiver = load_x25519_public(pki.receiver_dir(MUNICIPALITY) / "public.pem")
    for device, erasures in (("tab-a", 3), ("tab-b", 2)):
        key = load_ed25519_private(tablet_dir(pki, device) / "signing.key")
        for n in range(6):
            record = signed_record(pki, device, body=statistics_body(n))
            published.append((device, record.encode()))
        for n in range(2):
            record_id = new_record_id()
            packet = seal(
                b"sealed application " + bytes([n]) * 2000,
                receiver,
                key,
                record_id=record_id,
                device_id=device,
                municipality=MUNICIPALITY,
            )
            body = packet.model_dump()
            record = signed_record(pki, device, "packet", record_id=record_id, body=body)
            published.append((device, record.encode()))
        store = EvidenceStore(work / f"{device}-evidence.sqlite")
        for n in range(erasures):
            now = time.time()
            made = ErasureRecord(
                kind="daily", device=device, started=now - 1, finished=now, ok=True
            )
            made = store.append(made, key)
            if device == "tab-b" and n == erasures - 1:
                made = made.model_copy(update={"ok": False})  # no longer hashes to itself
            record = signed_record(pki, device, "erasure", body=erasure_body(made))
            published.append((device, record.encode()))
        store.close()
        audit = AuditEvent(at=time.time(), actor="op-01", action="session-start")
        health = DeviceHealth(at=time.time(), services={"sync": "online"})
        for kind, model in (("audit", audit), ("health", health)):
            record = signed_record(pki, device, kind, body=model.model_dump())
            published.append((device, record.encode()))
    refused = signed_record(pki, "tab-a", body={"site": "x"})  # invalid statistics body
    clients = {d: DeviceClient(pki, d, port) for d in ("tab-a", "tab-b")}
    try:
        for client in clients.values():
            client.connect()
        for device, payload in published:
            clients[device].publish(f"fieldkit/{device}/up/record", payload)
        clients["tab-a"].publish("fieldkit/tab-a/up/record", refused.encode())
        wait_for(lambda: count_records(ingest) == len(published), what="every record at the hub")
        wait_for(lambda: table_rows(ingest.engine)["refusal"] == 1, what="the refusal recorded")
    finally:
        for client in clients.values():
            client.close()
    return [payload for _, payload in published]


def table_rows(engine: Any) -> dict[str, int]:
    """Rows per table, counted here (not by the backup's code)."""
    names = inspect(engine).get_table_names()
    with Session(engine) as session:
        return {
            name: int(session.scalar(select(func.count()).select_from(table(name))) or 0)
            for name in names
        }


def chains(engine: Any, pki: KitPki) -> dict[str, Any]:
    """Every device's erasure chain as the hub web app shows it."""
    roster = read_roster(pki.roster)
    with Session(engine) as session:
        return {device: device_chain(session, roster, device) for device in ("tab-a", "tab-b")}


def backup_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("hub-*.fkbackup"))


def test_restore_drill_dump_destroy_restore_counts_and_chains_unchanged(
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    postgres: PostgresCluster,
    fast_argon2: None,
    tmp_path: Path,
) -> None:
    """Issue 18 must-show: the database dumped, destroyed and restored from the encrypted
    backup, the record counts and the erasure chains unchanged. R24 R23"""
    # Like the hub: the database belongs to a role without special rights, which the hub's
    # services, the backup and the restore all connect as.
    postgres.create_role("hubowner")
    url = postgres.create_database("drill", owner="hubowner")
    ingest = make_ingest(url)
    published = fill_hub(pki, hub_broker.port, ingest, tmp_path)
    with Session(ingest.engine) as session:
        create_account(session, "admin", "correct horse battery", "admin", actor="test")
        session.commit()
    rows_before = table_rows(ingest.engine)
    chains_before = chains(ingest.engine, pki)
    assert rows_before["record"] == 25 and rows_before["sealed_packet"] == 4
    assert rows_before["erasure_record"] == 5 and rows_before["web_account"] == 1
    assert chains_before["tab-a"].intact and chains_before["tab-a"].records == 3
    assert not chains_before["tab-b"].intact  # its altered record, kept as evidence
    private, public, passphrase = admin_key(tmp_path / "admin-machine")
    config = hub_config(tmp_path, pki, url)
    folder = tmp_path / "backups"

    made = fieldkit(
        "hub", "backup", "--dir", str(folder), "--public-key", str(public),
        "--keep", "3", "--pg-bin", str(PG_BIN), config=config,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (backup,) = backup_files(folder)
    assert set(os.listdir(folder)) == {backup.name, ".backup.lock"}  # nothing else written
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert "record: 25 rows" in made.stdout and "erasure chain tab-a: 3 records" in made.stdout
    # What lies on disk is ciphertext: none of what a plain (uncompressed) dump shows.
    plain = subprocess.run(
        [str(PG_BIN / "pg_dump"), "--format=custom", "--compress=0",
         f"--dbname={postgres_conninfo(postgres)}"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    encrypted = backup.read_bytes()
    for marker in (b"PGDMP", b"erasure_record", b"tab-a", b"sealed_packet", b"argon2"):
        assert marker in plain
        assert marker not in encrypted
    assert encrypted.startswith(MAGIC)

    # The admin checks the copy on their own machine, without a database.
    checked = fieldkit(
        "hub", "backup-check", str(backup), "--key", str(private),
        "--passphrase-file", str(passphrase),
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "whole and readable" in checked.stdout

    # Destroy: the hub stops, its database is dropped and made anew, empty.
    ingest.stop()
    postgres.drop_database("drill")
    postgres.create_database("drill", owner="hubowner")
    assert table_rows(make_engine(url)) == {}

    restored = fieldkit(
        "hub", "restore", str(backup), "--key", str(private),
        "--passphrase-file", str(passphrase), "--pg-bin", str(PG_BIN), config=config,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "verified:" in restored.stdout
    engine = make_engine(url)
    assert table_rows(engine) == rows_before
    assert chains(engine, pki) == chains_before
    print(made.stdout, restored.stdout, sep="\n")  # the drill's record, with pytest -s

    # The restore's own comparison has teeth: a row changed, or one gone, is found.
    key = load_private(private, ADMIN_PASSPHRASE)
    with backup.open("rb") as source:
        manifest = check_backup(source, key, backup.name).manifest
    roster = read_roster(pki.roster)
    with engine.begin() as connection:
        connection.execute(text("UPDATE statistics SET site = 'elsewhere' WHERE site = 'site-1'"))
        connection.execute(
            text(
                "DELETE FROM erasure_record WHERE device_id = 'tab-a' AND at = "
                "(SELECT max(at) FROM erasure_record WHERE device_id = 'tab-a')"
            )
        )
        found = differences(manifest.state, database_state(connection, roster))
        connection.rollback()
    assert found[:2] == [
        "table erasure_record: 4 rows, not 5",
        "table statistics: its rows differ (same count, other content)",
    ]
    assert found[2].startswith("device tab-a: erasure chain 2 records to ")
    assert found[2].endswith(f"not 3 records to {chains_before['tab-a'].head[:12]} (intact)")
    assert len(found) == 3
    assert differences(manifest.state, restored_state(engine, roster)) == []
    engine.dispose()

    # The hub carries on: a record sent again is a duplicate, a new one is stored.
    again = make_ingest(url)
    client = DeviceClient(pki, "tab-a", hub_broker.port)
    client.connect()
    try:
        client.publish("fieldkit/tab-a/up/record", published[0])
        fresh = signed_record(pki, "tab-a", body=statistics_body(9))
        client.publish("fieldkit/tab-a/up/record", fresh.encode())
        wait_for(lambda: count_records(again) == 26, what="the new record after the restore")
        time.sleep(0.5)
        assert count_records(again) == 26
        assert table_rows(again.engine)["refusal"] == 1
    finally:
        client.close()


def restored_state(engine: Any, roster: Any) -> Any:
    with engine.connect() as connection:
        return database_state(connection, roster)


def postgres_conninfo(postgres: PostgresCluster, name: str = "drill") -> str:
    return f"host={postgres.socket_dir} port={postgres.port} user=postgres dbname={name}"


@pytest.fixture
def small_backup(
    pki: KitPki,
    hub_broker: HubBroker,
    make_ingest: IngestFactory,
    postgres: PostgresCluster,
    tmp_path: Path,
) -> tuple[Path, str, tuple[Path, Path, Path]]:
    """A backup of a hub that took a few records through ingest; the database's name."""
    url = postgres.create_database()
    ingest = make_ingest(url)
    client = DeviceClient(pki, "tab-a", hub_broker.port)
    client.connect()
    try:
        for n in range(3):
            record = signed_record(pki, "tab-a", body=statistics_body(n))
            client.publish("fieldkit/tab-a/up/record", record.encode())
        wait_for(lambda: count_records(ingest) == 3, what="three records")
    finally:
        client.close()
    keys = admin_key(tmp_path / "admin-machine")
    made = make_backup(
        url,
        folder=tmp_path / "backups",
        public_key=keys[1],
        keep=3,
        hub="hub-01",
        roster_path=pki.roster,
        pg_bin=PG_BIN,
    )
    return made.path, url, keys


def restore(
    url: str, backup: Path, private: Path, passphrase: Path, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``fieldkit hub restore`` on a hub whose config names the database at ``url``."""
    config = tmp_path / f"restore-{url.split('?')[0].rsplit('/', 1)[1]}.toml"
    config.write_text(f'[device]\nid = "hub-01"\nrole = "hub"\n[hub]\ndatabase_url = "{url}"\n')
    return fieldkit(
        "hub", "restore", str(backup), "--key", str(private),
        "--passphrase-file", str(passphrase), "--pg-bin", str(PG_BIN), config=config,
    )  # fmt: skip


def restore_into_empty(
    postgres: PostgresCluster, backup: Path, private: Path, passphrase: Path, tmp_path: Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Restore into a new empty database; what it said, and what the database then holds."""
    url = postgres.create_database()
    run = restore(url, backup, private, passphrase, tmp_path)
    engine = make_engine(url)
    rows = table_rows(engine)
    engine.dispose()
    return run, rows


def header_end(data: bytes) -> int:
    return len(MAGIC) + 4 + int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")


def test_a_changed_cut_or_extended_backup_is_refused_and_nothing_is_restored(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    postgres: PostgresCluster,
    tmp_path: Path,
) -> None:
    """Every kind of damage is refused with what is wrong, the database left empty; the same
    file untouched restores (the refusals are the damage's doing). R23"""
    backup, _, (private, _, passphrase) = small_backup
    key = load_private(private, ADMIN_PASSPHRASE)
    data = backup.read_bytes()
    start = header_end(data)
    created = re.search(rb'"created_at":"[^"]*?(\d)"', data)
    assert created is not None

    def flipped(at: int) -> bytes:
        return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]

    last_digit = created.start(1)
    damaged = {
        "a byte of the dump": (flipped(start + 4 + 100), "has been altered or damaged"),
        "the header's date": (
            data[:last_digit] + (b"1" if data[last_digit : last_digit + 1] != b"1" else b"2")
            + data[last_digit + 1 :],
            "header has been altered",
        ),
        "the last chunk dropped": (data[: last_chunk_start(data)], "cut short"),
        "the last bytes cut": (data[:-10], "cut short"),
        "a chunk appended": (data + data[start : start + 200], "altered or damaged"),
        "not a backup": (b"PGDMP" + data[5:], "is not a fieldkit hub backup"),
    }  # fmt: skip
    for what, (content, message) in damaged.items():
        bad = tmp_path / "bad.fkbackup"
        bad.write_bytes(content)
        run, rows = restore_into_empty(postgres, bad, private, passphrase, tmp_path)
        assert run.returncode == 1, what
        assert message in run.stderr, (what, run.stderr)
        assert "not restored" in run.stderr, what
        assert rows == {}, what
        with bad.open("rb") as source, pytest.raises(BackupError, match=message):
            check_backup(source, key, bad.name)
    run, rows = restore_into_empty(postgres, backup, private, passphrase, tmp_path)
    assert run.returncode == 0, run.stderr
    assert rows["record"] == 3 and rows["statistics"] == 3


def last_chunk_start(data: bytes) -> int:
    at, previous = header_end(data), 0
    while at < len(data):
        previous = at
        at += 4 + int.from_bytes(data[at : at + 4], "big")
    return previous


def test_a_backup_is_refused_with_another_key_or_a_wrong_passphrase(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    postgres: PostgresCluster,
    tmp_path: Path,
) -> None:
    """Only the admin's key opens a backup; another key is named, not tried. R23"""
    backup, _, (private, _, passphrase) = small_backup
    other_private, _, _ = admin_key(tmp_path / "another-machine")
    run, rows = restore_into_empty(postgres, backup, other_private, passphrase, tmp_path)
    assert run.returncode == 1 and rows == {}
    assert "was encrypted to the backup key" in run.stderr
    assert "not to this key" in run.stderr
    wrong = tmp_path / "wrong-passphrase"
    wrong.write_text("not the passphrase at all\n")
    run, rows = restore_into_empty(postgres, backup, private, wrong, tmp_path)
    assert run.returncode == 1 and rows == {}
    assert "wrong passphrase" in run.stderr
    # The right key and passphrase open it (the refusals above are the key's doing).
    run, rows = restore_into_empty(postgres, backup, private, passphrase, tmp_path)
    assert run.returncode == 0 and rows["record"] == 3


def test_restore_goes_only_into_an_empty_database(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    tmp_path: Path,
) -> None:
    backup, url, (private, _, passphrase) = small_backup
    engine = make_engine(url)
    before = table_rows(engine)
    run = restore(url, backup, private, passphrase, tmp_path)
    assert run.returncode == 1
    assert "is not empty" in run.stderr and "only into an empty database" in run.stderr
    assert table_rows(engine) == before
    engine.dispose()


def test_a_restore_that_fails_halfway_leaves_the_database_empty(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    postgres: PostgresCluster,
    tmp_path: Path,
) -> None:
    """pg_restore stops on an error after it has made some tables: one transaction, so none of
    them stays, and the admin reads PostgreSQL's reason."""
    backup, _, (private, _, passphrase) = small_backup
    url = postgres.create_database()
    refuse_statistics = """
        CREATE FUNCTION refuse_statistics() RETURNS event_trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands()
                     WHERE object_identity = 'public.statistics') THEN
            RAISE EXCEPTION 'no statistics table in this database';
          END IF;
        END $$;
        CREATE EVENT TRIGGER refuse_statistics ON ddl_command_end
          EXECUTE FUNCTION refuse_statistics();
    """
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text(refuse_statistics))
    run = restore(url, backup, private, passphrase, tmp_path)
    assert run.returncode == 1
    assert "pg_restore failed, nothing was restored" in run.stderr
    assert "no statistics table in this database" in run.stderr
    assert table_rows(engine) == {}  # the tables made before statistics went with it
    engine.dispose()


def test_backups_are_kept_to_the_newest_n_and_a_bad_setup_makes_none(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    pki: KitPki,
    tmp_path: Path,
) -> None:
    first, url, (private, public, _) = small_backup
    folder = first.parent

    def backup(**change: Any) -> Any:
        settings: dict[str, Any] = {
            "folder": folder,
            "public_key": public,
            "keep": 2,
            "hub": "hub-01",
            "roster_path": pki.roster,
            "pg_bin": PG_BIN,
        }
        return make_backup(change.pop("url", url), **(settings | change))

    second = backup()
    third = backup()
    assert third.removed == [first]
    assert backup_files(folder) == [second.path, third.path]
    assert [p.name for p in prune(folder, 1)] == [second.path.name]
    # A private key given as the public one, no key, a SQLite hub, keep 0: no backup made.
    refused = {
        "holds a private key": {"public_key": private},
        "no backup key at": {"public_key": tmp_path / "missing.pem"},
        "not PostgreSQL": {"url": f"sqlite:///{tmp_path / 'hub.sqlite'}"},
        "keep at least one": {"keep": 0},
    }
    for message, change in refused.items():
        with pytest.raises(BackupError, match=message):
            backup(**change)
    assert backup_files(folder) == [third.path]
    assert not list(folder.glob("*.partial"))


def test_a_failed_dump_or_a_full_disk_leaves_no_file_and_says_why(
    small_backup: tuple[Path, str, tuple[Path, Path, Path]],
    postgres: PostgresCluster,
    pki: KitPki,
    tmp_path: Path,
) -> None:
    """pg_dump refused (a sequence its user may not read) or the backup disk full: no new
    file, no partial one, the older backups untouched, and the reason given."""
    first, url, (_, public, _) = small_backup
    name = url.split("?")[0].rsplit("/", 1)[1]
    with make_engine(postgres.url(name)).begin() as connection:
        connection.execute(text("CREATE ROLE backup_reader LOGIN"))
        connection.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO backup_reader"))
        connection.execute(text("CREATE SEQUENCE hand_made"))  # the reader gets no grant
    reader_url = url.replace("postgres@", "backup_reader@")

    def backup(database_url: str, folder: Path) -> Any:
        return make_backup(
            database_url, folder=folder, public_key=public, keep=3, hub="hub-01",
            roster_path=pki.roster, pg_bin=PG_BIN,
        )  # fmt: skip

    with pytest.raises(BackupError, match=r"pg_dump failed: .*permission denied for sequence"):
        backup(reader_url, first.parent)
    assert backup_files(first.parent) == [first]
    assert not list(first.parent.glob("*.partial"))

    small = tmp_path / "small-disk"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(small)],
        capture_output=True, check=False,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip("a small tmpfs cannot be mounted here (not root, or no mount rights)")
    try:
        filler = small / "hub-20260101T000000.000000Z.fkbackup"  # an older backup
        filler.write_bytes(b"x" * 4096)
        with pytest.raises(BackupError, match="No space left on device"):
            backup(url, small)
        assert sorted(p.name for p in small.iterdir()) == [".backup.lock", filler.name]
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_the_backup_private_key_left_on_the_hub_is_found_by_the_start_up_scan(
    pki: KitPki, tmp_path: Path
) -> None:
    """The admin's private key must not stay on the hub after a restore: the scan the hub's
    services run at start finds it in the hub's folders (and finds nothing without it)."""
    config = DeviceConfig(
        device={"id": "hub-01", "role": "hub"},
        hub={"pki": pki.root, "config_dir": tmp_path / "etc"},
        hubweb={"secret_key_file": tmp_path / "web" / "secret.key"},
    )
    (tmp_path / "etc").mkdir()
    assert find_private_sealing_keys(hub_directories(config)) == []
    private, _, _ = admin_key(tmp_path / "etc" / "restore")
    assert find_private_sealing_keys(hub_directories(config)) == [private]
    with pytest.raises(ConfigError, match=r"\(backup-private\.pem\) belongs offline"):
        refuse_private_sealing_keys(config, "hub-ingest")


def render_hub_template(name: str, out: Path) -> str:
    """A hub role template rendered by Ansible itself, with the role's defaults."""
    ansible = Path(sys.executable).parent / "ansible"
    run = subprocess.run(
        [str(ansible), "localhost", "-i", "localhost,", "-c", "local",
         "-m", "ansible.builtin.template",
         "-a", f"src={HUB_ROLE / 'templates' / (name + '.j2')} dest={out / name}",
         "-e", f"@{HUB_ROLE / 'defaults' / 'main.yml'}",
         "-e", f"ansible_python_interpreter={sys.executable}"],
        capture_output=True, text=True, check=False, timeout=120,
        env=os.environ | {"ANSIBLE_HOME": str(out / ".ansible"),
                          "ANSIBLE_LOCAL_TEMP": str(out / ".ansible-tmp")},
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return (out / name).read_text()


def exposure(unit: Path) -> float:
    rated = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", rated.stdout + rated.stderr)
    assert found, rated.stdout[-500:] + rated.stderr[-500:]
    return float(found.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_backup_unit_is_sandboxed_and_runs_the_command_the_cli_takes(tmp_path: Path) -> None:
    """R28 R30: the hub role's backup unit rates at most 2.0 (the services' ceiling); the same
    unit without its sandbox does not (the check can fail); its command line parses."""
    from fieldkit.cli import build_parser
    from fieldkit.policies import load_policies
    from tests.support.paths import REPO_POLICIES

    unit_text = render_hub_template("fieldkit-hub-backup.service", tmp_path)
    timer_text = render_hub_template("fieldkit-hub-backup.timer", tmp_path)
    ceiling = load_policies(REPO_POLICIES).services.max_exposure
    assert ceiling <= 2.0
    assert exposure(tmp_path / "fieldkit-hub-backup.service") <= ceiling
    service = [line for line in unit_text.splitlines() if not line.startswith("#")]
    start = service.index("[Service]")
    bare = "\n".join(
        line for n, line in enumerate(service)
        if n <= start or line.split("=", 1)[0] in {"Type", "User", "Group", "ExecStart"}
    )  # fmt: skip
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "fieldkit-hub-backup.service").write_text(bare + "\n")
    assert exposure(tmp_path / "bare" / "fieldkit-hub-backup.service") > ceiling

    command = next(line for line in service if line.startswith("ExecStart=")).split()
    assert command[1:3] == ["-m", "fieldkit"]
    args = build_parser().parse_args(command[3:])
    assert (args.hub_command, args.keep) == ("backup", 14)
    assert str(args.dir) == "/var/lib/fieldkit-hub-backup"
    assert "StateDirectory=fieldkit-hub-backup" in unit_text
    assert (args.pg_bin / "pg_dump").as_posix() == "/usr/lib/postgresql/15/bin/pg_dump"
    calendar = re.search(r"OnCalendar=(.+)", timer_text)
    assert calendar is not None
    checked = subprocess.run(
        ["systemd-analyze", "calendar", calendar.group(1)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
