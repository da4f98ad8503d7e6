"""Kit PKI and the hub database schema. R16 R15 R21"""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from sqlalchemy import create_engine, inspect

from fieldkit.enrolment.device import DeviceKeys
from fieldkit.enrolment.local import enrol_locally
from fieldkit.enrolment.protocol import (
    SIGNING_KEY_OID,
    ProtocolError,
    signing_claim,
    signing_key_of,
)
from fieldkit.hub.db import Base, make_engine, upgrade
from fieldkit.hub.web import models  # noqa: F401  (the web app's tables join Base.metadata)
from fieldkit.pki import KitPki, PkiError, load_ed25519_private, public_pem, read_roster
from fieldkit.sealing_keys import generate

FIELDKIT = [sys.executable, "-m", "fieldkit"]


def test_cli_builds_a_pki_with_private_keys_0600_and_logs_no_key(tmp_path: Path) -> None:
    root = tmp_path / "pki"
    municipality = generate(tmp_path / "municipality", b"municipality passphrase")
    receiver = ["receiver", "import", "131016", str(municipality.public)]
    imported = [*receiver, "--fingerprint", municipality.fingerprint]
    for args in (["init"], imported, ["downlink-key"], ["evidence-signer"], ["list"]):
        run = subprocess.run(
            [*FIELDKIT, "pki", "--dir", str(root), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "PRIVATE KEY" not in run.stdout + run.stderr
    enrol_locally(KitPki(root), "tab-01", tmp_path / "tablet")
    keys = sorted(root.rglob("*.key"))
    # The hub's PKI holds no device key: the tablet made its own (R16, issue 17 item 2).
    assert {k.name for k in keys} == {
        "ca.key",
        "server.key",
        "ingest.key",
        "downlink.key",
        "evidence-signing.key",
    }
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        secret = key.read_text().splitlines()[1]
        assert secret not in run.stdout + run.stderr
    cert = x509.load_pem_x509_certificate((root / "devices" / "tab-01" / "client.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=tab-01"
    tablet = tmp_path / "tablet"
    assert {k.name for k in tablet.glob("*.key")} == {"client.key", "signing.key"}
    for key in tablet.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert (tablet / "receivers" / "131016.pem").exists()
    assert not list(tablet.rglob("private.key"))
    # The hub's downlink public key is pinned on the tablet (issue 17 item 3); its private
    # half stays with the hub.
    pinned = (tablet / "hub-downlink.pem").read_bytes()
    assert pinned == (root / "hub" / "downlink.pem").read_bytes()
    assert b"PRIVATE" not in pinned and not list(tablet.rglob("downlink.key"))


def test_the_pki_generates_no_device_private_key() -> None:
    """``KitPki`` signs requests; nothing in it makes a device key (issue 17 item 2)."""
    assert not hasattr(KitPki, "enrol") and not hasattr(KitPki, "bundle")


def test_enrol_revoke_and_crl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pki = KitPki(tmp_path / "pki")
    pki.init()
    tablet = enrol_locally(pki, "tab-01", tmp_path / "tablet")
    first_key = read_roster(pki.roster)["tab-01"].signing_public
    with pytest.raises(PkiError, match="enrolled already"):
        enrol_locally(pki, "tab-01", tmp_path / "other")
    with pytest.raises(PkiError):
        enrol_locally(pki, "hub-ingest", tmp_path / "other")  # reserved: the ingest's rights
    with pytest.raises(PkiError):
        enrol_locally(pki, "Tab 01", tmp_path / "other")
    assert not (tmp_path / "other").exists()
    serial = x509.load_pem_x509_certificate((tablet / "client.crt").read_bytes()).serial_number
    assert pki.revoked_serials() == []
    pki.revoke("tab-01")
    assert pki.revoked_serials() == [serial]
    assert read_roster(pki.roster)["tab-01"].revoked
    # Re-enrolment after revocation issues a new certificate; the old one stays revoked, and
    # the old signing key stays known for the device's older records.
    enrol_locally(pki, "tab-01", tablet)
    entry = read_roster(pki.roster)["tab-01"]
    assert not entry.revoked
    assert entry.earlier_signing == (first_key,)
    assert pki.revoked_serials() == [serial]
    for key in tmp_path.rglob("*.key"):
        assert key.read_text().splitlines()[1] not in caplog.text


def test_a_request_without_a_valid_signing_key_proof_is_refused(tmp_path: Path) -> None:
    """The signing key in the request must be proven by its own signature over the request's
    TLS key: a tablet cannot register a key it does not hold."""
    pki = KitPki(tmp_path / "pki")
    pki.init()
    keys, other = DeviceKeys.generate(), DeviceKeys.generate()
    spki = other.tls.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_attribute(SIGNING_KEY_OID, signing_claim(keys.signing, spki).encode())
        .sign(keys.tls, hashes.SHA256())
    )
    with pytest.raises(ProtocolError, match="proof does not verify"):
        signing_key_of(forged)
    plain = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    with pytest.raises(ProtocolError, match="does not carry"):
        signing_key_of(plain.sign(keys.tls, hashes.SHA256()))
    assert len(signing_key_of(keys.request())) == 32


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
        "enrolment_code",
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


def test_tablets_enrolling_at_once_all_land_in_the_roster(tmp_path: Path) -> None:
    """The EST server, the web app and `fieldkit pki revoke` change roster.json from separate
    processes: read-modify-write under a lock, replaced in one rename (issue 17 item 8)."""
    pki = KitPki(tmp_path / "pki")
    pki.init()
    devices = [f"tab-{n:02d}" for n in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda d: enrol_locally(pki, d, tmp_path / "tablets" / d), devices))
        list(pool.map(pki.revoke, devices[:6]))
    roster = read_roster(pki.roster)
    assert sorted(roster) == devices
    assert [d for d in devices if roster[d].revoked] == devices[:6]


def test_the_hub_downlink_key_is_made_once_and_rotated(tmp_path: Path) -> None:
    """The key hub-ingest signs acks and rosters with (issue 17 item 3): 0600, its public half
    beside it; hub processes starting at once on an older PKI make one key, not several."""
    pki = KitPki(tmp_path / "pki")
    pki.init()
    assert not pki.downlink_key.exists()  # a PKI from before: a hub process makes it
    for _ in range(10):  # a race shows only now and then: run it a few times
        pki.downlink_key.unlink(missing_ok=True)
        pki.downlink_public.unlink(missing_ok=True)
        with ThreadPoolExecutor(8) as pool:
            # Each at once hands out the public half, as the EST server does right after.
            runs = list(
                pool.map(lambda _: (pki.ensure_downlink_key(), pki.downlink_public_pem()), range(8))
            )
        assert [made for made, _ in runs].count(True) == 1
        assert {pem for _, pem in runs} == {pki.downlink_public.read_bytes()}
    assert stat.S_IMODE(pki.downlink_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pki.downlink_public.stat().st_mode) == 0o644
    private = load_ed25519_private(pki.downlink_key)
    assert pki.downlink_public.read_bytes() == public_pem(private.public_key())
    assert sorted(p.name for p in pki.downlink_key.parent.iterdir()) == [
        "downlink.key",
        "downlink.pem",
    ]
    before = pki.downlink_fingerprint()
    assert not pki.ensure_downlink_key() and pki.downlink_fingerprint() == before
    assert pki.rotate_downlink_key() != before
    rotated = load_ed25519_private(pki.downlink_key)
    assert pki.downlink_public.read_bytes() == public_pem(rotated.public_key())
    assert stat.S_IMODE(pki.downlink_key.stat().st_mode) == 0o600
