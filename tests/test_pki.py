"""Kit PKI and the hub database schema. R16 R15 R21"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography import x509
from sqlalchemy import create_engine, inspect

from fieldkit.hub.db import Base, make_engine, upgrade
from fieldkit.hub.web import models  # noqa: F401  (the web app's tables join Base.metadata)
from fieldkit.pki import KitPki, PkiError, read_roster

FIELDKIT = [sys.executable, "-m", "fieldkit"]


def test_cli_builds_a_pki_with_private_keys_0600_and_logs_no_key(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    for args in (["init"], ["receiver", "131016"], ["enrol", "tab-01"], ["list"]):
        run = subprocess.run(
            [*FIELDKIT, "pki", "--dir", str(root), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "PRIVATE KEY" not in run.stdout + run.stderr
    keys = sorted(root.rglob("*.key"))
    assert {k.name for k in keys} == {
        "ca.key",
        "server.key",
        "ingest.key",
        "private.key",
        "client.key",
        "signing.key",
    }
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        secret = key.read_text().splitlines()[1]
        assert secret not in run.stdout + run.stderr
    bundle = root / "devices" / "tab-01"
    cert = x509.load_pem_x509_certificate((bundle / "client.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=tab-01"
    assert (bundle / "receivers" / "131016.pem").exists()
    assert not (bundle / "receivers" / "private.key").exists()


def test_enrol_revoke_and_crl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pki = KitPki(tmp_path / "pki")
    pki.init()
    bundle = pki.enrol("tab-01")
    with pytest.raises(PkiError, match="enrolled already"):
        pki.enrol("tab-01")
    with pytest.raises(PkiError):
        pki.enrol("hub-ingest")  # reserved: it would get the ingest's rights on the hub
    with pytest.raises(PkiError):
        pki.enrol("Tab 01")
    serial = x509.load_pem_x509_certificate((bundle / "client.crt").read_bytes()).serial_number
    assert pki.revoked_serials() == []
    pki.revoke("tab-01")
    assert pki.revoked_serials() == [serial]
    assert read_roster(pki.roster)["tab-01"].revoked
    # Re-enrolment after revocation issues a new certificate; the old one stays revoked.
    pki.enrol("tab-01")
    assert not read_roster(pki.roster)["tab-01"].revoked
    assert pki.revoked_serials() == [serial]
    for key in tmp_path.rglob("*.key"):
        assert key.read_text().splitlines()[1] not in caplog.text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_match_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    upgrade(url)
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert {
        "record",
        "sealed_packet",
        "statistics",
        "erasure_record",
        "audit_event",
        "device_health",
        "refusal",
    } <= tables


def test_the_hub_sqlite_database_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Issue 17: the hub's SQLite file and its WAL hold every account's password hash: 0600,
    whatever the umask (under 022 SQLite alone makes them 0644: shown first)."""
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.sqlite"
        bare = create_engine(f"sqlite:///{plain}")
        with bare.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE t (x)")
        bare.dispose()
        assert stat.S_IMODE(plain.stat().st_mode) == 0o644
        url = f"sqlite:///{tmp_path / 'hub' / 'hub.sqlite'}"
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.exec_driver_sql("SELECT count(*) FROM record")
            files = sorted((tmp_path / "hub").iterdir())
            assert {f.name for f in files} >= {"hub.sqlite", "hub.sqlite-wal"}
            assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), files
        engine.dispose()
        assert stat.S_IMODE((tmp_path / "hub").stat().st_mode) == 0o700
    finally:
        os.umask(old)
