"""The hub holds ciphertext and public keys only (issue 17 item 1; R15 R23).

A packet cannot be opened with anything found on the hub: its folders and a backup of them
are searched for private keys (PEM blocks and DER X25519 keys anywhere in any file, in the
database and inside the backup archive), and every key found is tried on every packet. With
the municipality's key made by the municipality, nothing opens; made the old way (by the
contractor, in the hub's PKI folder) the same search opens every packet, and the hub's start-up
scan finds it: the protection shown both ways. The ingest refuses a packet sealed to another
key than the municipality's registered one, and the hub's services refuse to start on a
private sealing key.
"""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from sqlalchemy import select
from sqlalchemy.orm import Session

from fieldkit.broker import LocalBroker
from fieldkit.bus import Endpoint
from fieldkit.config import load_config
from fieldkit.hub.custody import hub_directories
from fieldkit.hub.db import RecordRow, RefusalRow, SealedPacketRow
from fieldkit.hub.ingest import Ingest
from fieldkit.pki import KitPki
from fieldkit.registry import identities_for, specs_for_role
from fieldkit.sealing import SealedPacket, SealingError, open_packet
from fieldkit.sealing_keys import X25519_PKCS8_PREFIX, find_private_sealing_keys
from fieldkit.sync.courier import Courier
from fieldkit.sync.messages import ApplicationPacket, SubmitPacket
from tests.devkit import to_toml
from tests.hubkit import MUNICIPALITY, CourierFactory, IngestFactory, free_port, tablet_dir
from tests.support.municipality import MUNICIPALITY_MACHINES
from tests.support.waiting import wait_for

PEM_PRIVATE = re.compile(
    rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.+?-----END [A-Z0-9 ]*PRIVATE KEY-----", re.S
)
# Planted personal data: a 23-digit application id that must never be readable on the hub.
APPLICATION_ID = "98765432109876543210987"


def packet_request() -> SubmitPacket:
    return SubmitPacket(
        municipality=MUNICIPALITY,
        packet=ApplicationPacket(
            application_id=APPLICATION_ID,
            photo_jpeg=base64.b64encode(b"\xff\xd8planted photo\xff\xd9").decode(),
            electronic_certificate=True,
            braille=False,
            mode="support",
            created_at=time.time(),
        ),
    )


def contents(paths: list[Path]) -> Iterator[tuple[str, bytes]]:
    """Every file's bytes under ``paths``, and every member of every tar archive among them."""
    for root in paths:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            data = path.read_bytes()
            yield str(path), data
            if tarfile.is_tarfile(path):
                with tarfile.open(path) as archive:
                    for member in archive.getmembers():
                        handle = archive.extractfile(member)
                        if handle is not None:
                            yield f"{path}!{member.name}", handle.read()


def private_keys_on(paths: list[Path]) -> tuple[list[str], list[x25519.X25519PrivateKey]]:
    """What a thief with the hub's disk finds: where private keys are, and the X25519 ones."""
    where: list[str] = []
    sealing: list[x25519.X25519PrivateKey] = []
    for name, data in contents(paths):
        for block in PEM_PRIVATE.finditer(data):
            where.append(name)
            try:
                key = serialization.load_pem_private_key(block.group(0), password=None)
            except (TypeError, ValueError):
                continue  # encrypted: useless without the passphrase the hub never has
            if isinstance(key, x25519.X25519PrivateKey):
                sealing.append(key)
        start = data.find(X25519_PKCS8_PREFIX)
        while start != -1:
            raw = data[start + len(X25519_PKCS8_PREFIX) : start + len(X25519_PKCS8_PREFIX) + 32]
            if len(raw) == 32:
                where.append(name)
                sealing.append(x25519.X25519PrivateKey.from_private_bytes(raw))
            start = data.find(X25519_PKCS8_PREFIX, start + 1)
    return where, sealing


def opened_with(keys: list[x25519.X25519PrivateKey], packets: list[SealedPacket]) -> int:
    opened = 0
    for packet in packets:
        for key in keys:
            try:
                open_packet(packet, key, None)
            except SealingError:
                continue
            opened += 1
            break
    return opened


def contractor_made_key(pki: KitPki, code: str) -> None:
    """The flow issue 17 removed: the contractor generated the municipality's key pair in the
    hub's PKI folder, the private key unencrypted beside the public one."""
    key = x25519.X25519PrivateKey.generate()
    folder = pki.receiver_dir(code)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "private.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "public.pem").write_bytes(public)
    # Its tablets were enrolled with that public key.
    for tablet in ("tab-a", "tab-b"):
        (tablet_dir(pki, tablet) / "receivers" / f"{code}.pem").write_bytes(public)


def hub_config(tmp_path: Path, pki: KitPki, broker_port: int) -> Path:
    """A hub's config: its folders as on the hub image, each under ``tmp_path``."""
    etc, var, run = tmp_path / "etc", tmp_path / "var", tmp_path / "run"
    etc.mkdir(exist_ok=True)
    config = etc / "hub.toml"
    folders = {
        "device": {"id": "hub-01", "role": "hub"},
        "bus": {"port": 0, "runtime_dir": str(run)},
        "av_mirror": {"directory": str(var / "av-mirror")},
        "hubweb": {"secret_key_file": str(var / "hub-web.key")},
        "hub": {
            "pki": str(pki.root),
            "config_dir": str(etc),
            "broker_port": broker_port,
            "broker_dir": str(run / "hub-broker"),
            "database_url": f"sqlite:///{var / 'hub.sqlite'}",
        },
    }
    config.write_text(to_toml(folders))
    return config


@pytest.mark.parametrize("custody", ["made-by-the-municipality", "made-by-the-contractor"])
def test_a_packet_cannot_be_opened_with_anything_found_on_the_hub(
    custody: str,
    pki: KitPki,
    make_ingest: IngestFactory,
    make_courier: CourierFactory,
    tmp_path: Path,
) -> None:
    """R15 R23: the hub's disk and its backup hold no key that opens a packet."""
    if custody == "made-by-the-contractor":
        contractor_made_key(pki, MUNICIPALITY)
    config = load_config(hub_config(tmp_path, pki, 0))
    (tmp_path / "var").mkdir(exist_ok=True)
    ingest = make_ingest(config.hub.database_url)
    courier = make_courier("tab-a")
    sent = [courier.submit_packet(packet_request()) for _ in range(3)]
    wait_for(lambda: stored_packets(ingest) == sorted(sent), what="three packets at the hub")
    with Session(ingest.engine) as session:
        packets = [row.packet() for row in session.scalars(select(SealedPacketRow))]

    # The hub's folders, and a backup of them as an operator would take it.
    folders = [p for p in hub_directories(config) if p.exists()]
    backup = tmp_path / "backup"
    backup.mkdir()
    with tarfile.open(backup / "hub.tar.gz", "w:gz") as archive:
        for folder in folders:
            archive.add(folder, arcname=folder.name)
    where, sealing = private_keys_on([*folders, backup])

    # The search is not blind: it finds the hub's own TLS and CA keys, on disk and in the backup.
    assert sum(name.endswith(("ca.key", "server.key", "ingest.key")) for name in where) == 6
    scan = find_private_sealing_keys(hub_directories(config))
    if custody == "made-by-the-municipality":
        assert sealing == []
        assert opened_with(sealing, packets) == 0
        assert scan == []  # and the hub starts
        # The municipality, on its own machine, opens every one.
        assert opened_with([MUNICIPALITY_MACHINES.private(MUNICIPALITY)], packets) == 3
    else:
        # Protection removed: the key lies on the hub and in its backup, and opens every packet;
        # the hub's start-up scan would have refused it.
        assert len(sealing) >= 2
        assert opened_with(sealing, packets) == 3
        assert scan == [pki.receiver_dir(MUNICIPALITY) / "private.key"]


def stored_packets(ingest: Ingest) -> list[str]:
    with Session(ingest.engine) as session:
        return sorted(session.scalars(select(SealedPacketRow.record_id)))


def test_ingest_refuses_a_packet_sealed_to_a_key_other_than_the_registered_one(
    pki: KitPki,
    make_ingest: IngestFactory,
    make_courier: CourierFactory,
    sqlite_url: str,
) -> None:
    """A tablet holding another key for the municipality (stale, or planted) gets its packet
    refused; it keeps it, visibly; the registered key's packet is stored exactly once."""
    foreign = x25519.X25519PrivateKey.generate().public_key()
    (tablet_dir(pki, "tab-b") / "receivers" / f"{MUNICIPALITY}.pem").write_bytes(
        foreign.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ingest = make_ingest(sqlite_url)
    good: Courier = make_courier("tab-a")
    bad: Courier = make_courier("tab-b")
    kept = bad.submit_packet(packet_request())
    stored = good.submit_packet(packet_request())
    wait_for(lambda: bad.outbox.state().refused == 1, what="the foreign-key packet refused")
    wait_for(lambda: good.outbox.state().acked_total == 1, what="the registered one stored")
    with Session(ingest.engine) as session:
        assert list(session.scalars(select(RecordRow.record_id))) == [stored]
        assert list(session.scalars(select(SealedPacketRow.record_id))) == [stored]
        refusal = session.scalars(select(RefusalRow)).one()
    assert refusal.record_id == kept and "registered key" in refusal.reason
    # Nothing lost: the refused packet stays in tab-b's outbox; nothing duplicated on a resend.
    state = bad.outbox.state()
    assert (state.refused, state.acked_total) == (1, 0)
    time.sleep(1.0)  # any resend by tab-a arrives as a duplicate, never a second row
    assert stored_packets(ingest) == [stored]


def private_key_pem(encrypted: bool) -> bytes:
    key = x25519.X25519PrivateKey.generate()
    protection: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(b"a passphrase of some length")
        if encrypted
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, protection
    )


def private_key_der() -> bytes:
    return x25519.X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("service", "where", "data"),
    [
        ("hub-ingest", "pki/receivers/131016/private.key", lambda: private_key_pem(False)),
        ("hub-ingest", "etc/municipality-copy.pem", lambda: private_key_pem(True)),
        ("hub-broker", "var/backup-of-key.der", private_key_der),
    ],
)
def test_the_hub_refuses_to_start_on_a_private_sealing_key(
    service: str, where: str, data: object, pki: KitPki, tmp_path: Path
) -> None:
    """Before the protection: the service starts on these folders; with a key in them, no."""
    config = hub_config(tmp_path, pki, free_port())
    (tmp_path / "var").mkdir(exist_ok=True)
    command = [sys.executable, "-m", "fieldkit.serve", service, "--config", str(config)]
    target = pki.root / where.removeprefix("pki/") if where.startswith("pki/") else tmp_path / where
    target.parent.mkdir(parents=True, exist_ok=True)
    assert callable(data)
    target.write_bytes(data())
    bus = LocalBroker(tmp_path / "run", identities_for(specs_for_role("hub")), Endpoint(port=0))
    with bus:
        run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode == 2, run.stderr[-2000:]
        assert "refuses to start: a private sealing key is on the hub" in run.stderr
        assert str(target) in run.stderr
        assert "PRIVATE KEY" not in run.stdout + run.stderr

        # Without the key, the same service on the same folders starts, and runs until stopped.
        target.unlink()
        started = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            time.sleep(5.0)
            running = started.poll() is None
        finally:
            started.terminate()
            _, stderr = started.communicate(timeout=30)
    assert running, stderr.decode(errors="replace")[-2000:]
    assert b"refuses to start" not in stderr


def test_the_start_up_scan_reads_contents_not_names(tmp_path: Path) -> None:
    """The scan reads contents, not names: a sealing key renamed, or inside a bigger file
    (a database page, an archive member), is still found; the hub's own TLS keys are not."""
    pki = KitPki(tmp_path / "pki")
    pki.init()
    pki.issue_hub()
    assert find_private_sealing_keys([tmp_path]) == []
    (tmp_path / "notes.txt").write_bytes(b"x" * 1000 + private_key_der() + b"y" * 1000)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        payload = private_key_pem(False)
        info = tarfile.TarInfo("keys/municipality.pem")
        info.size = len(payload)
        archive.addfile(info, io.BytesIO(payload))
    (tmp_path / "backup.tar").write_bytes(buffer.getvalue())
    assert find_private_sealing_keys([tmp_path]) == [
        tmp_path / "backup.tar",
        tmp_path / "notes.txt",
    ]
