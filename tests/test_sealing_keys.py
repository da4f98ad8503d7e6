"""The municipality makes its sealing key; the contractor imports only the public half,
pinned by the fingerprint the municipality reads out (issue 17 item 1; R15 R23)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from fieldkit.pki import KitPki, PkiError, key_fingerprint, raw_public
from fieldkit.sealing import SUITE, SealedPacket, b64, open_with_token, receipt_matches, seal
from fieldkit.sealing_keys import (
    SealingKeyError,
    generate,
    load_private,
    normalise_fingerprint,
    spki_fingerprint,
)

FIELDKIT = [sys.executable, "-m", "fieldkit"]
PASSPHRASE = "a long municipal passphrase"


def fieldkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*FIELDKIT, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def kit(tmp_path: Path) -> KitPki:
    pki = KitPki(tmp_path / "contractor" / "pki")
    pki.init()
    return pki


def test_keygen_writes_an_encrypted_private_key_and_prints_the_fingerprint(tmp_path: Path) -> None:
    passphrase = tmp_path / "passphrase"
    passphrase.write_text(PASSPHRASE + "\n")
    out = tmp_path / "municipality"
    run = fieldkit("packet", "keygen", "--out", str(out), "--passphrase-file", str(passphrase))
    assert run.returncode == 0, run.stderr
    private, public = out / "sealing-private.pem", out / "sealing-public.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    # The passphrase and the key never reach the terminal.
    assert PASSPHRASE not in run.stdout + run.stderr and "PRIVATE KEY" not in run.stdout
    # The printed fingerprint is the public key's SPKI SHA-256, in 16 groups of 4.
    key = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(key, x25519.X25519PublicKey)
    printed = run.stdout.rsplit(": ", 1)[1].strip()
    assert printed == spki_fingerprint(key) and len(printed.split()) == 16
    # Without its passphrase, or with a wrong one, the key is useless.
    with pytest.raises(SealingKeyError, match="needs its passphrase"):
        load_private(private, None)
    with pytest.raises(SealingKeyError, match="wrong passphrase"):
        load_private(private, b"not the passphrase at all")
    assert load_private(private, PASSPHRASE.encode()).public_key() == key
    # A second keygen into the same folder does not overwrite the first.
    again = fieldkit("packet", "keygen", "--out", str(out), "--passphrase-file", str(passphrase))
    assert again.returncode == 1 and "holds a sealing key already" in again.stderr


def test_keygen_refuses_a_short_passphrase(tmp_path: Path) -> None:
    with pytest.raises(SealingKeyError, match="at least 12"):
        generate(tmp_path / "m", b"short")
    assert not (tmp_path / "m").exists()


def test_import_pins_the_fingerprint_and_refuses_a_private_key(kit: KitPki, tmp_path: Path) -> None:
    made = generate(tmp_path / "municipality", PASSPHRASE.encode())
    other = generate(tmp_path / "someone-else", PASSPHRASE.encode())
    base = ("pki", "--dir", str(kit.root), "receiver", "import", "131016")

    # A fingerprint that is not this key's: refused, nothing registered.
    wrong = fieldkit(*base, str(made.public), "--fingerprint", other.fingerprint)
    assert wrong.returncode == 1 and "not imported" in wrong.stderr
    assert kit.receivers() == {}
    # The private key file, or a PEM holding both halves: refused.
    for leaked in (made.private, tmp_path / "both.pem"):
        if leaked.name == "both.pem":
            leaked.write_bytes(made.public.read_bytes() + made.private.read_bytes())
        run = fieldkit(*base, str(leaked), "--fingerprint", made.fingerprint)
        assert run.returncode == 1 and "holds a private key" in run.stderr
    assert kit.receivers() == {}

    # The fingerprint as read out over the telephone: any case, spaces or colons.
    spoken = made.fingerprint.lower().replace(" ", ":")
    right = fieldkit(*base, str(made.public), "--fingerprint", spoken)
    assert right.returncode == 0, right.stderr
    assert made.fingerprint in right.stdout
    assert kit.receivers() == {"131016": made.public.read_bytes()}
    # Replacing a registered key is deliberate: refused while one is there.
    with pytest.raises(PkiError, match="registered already"):
        kit.import_receiver("131016", other.public.read_bytes(), other.fingerprint)


def test_the_old_generating_command_refuses_and_points_at_the_new_flow(kit: KitPki) -> None:
    run = fieldkit("pki", "--dir", str(kit.root), "receiver", "131016")
    assert run.returncode == 2
    assert "fieldkit packet keygen" in run.stderr and "receiver import" in run.stderr
    assert not kit.receiver_dir("131016").exists()
    assert not list(kit.root.rglob("private.key"))


def test_keygen_takes_no_passphrase_on_the_command_line(tmp_path: Path) -> None:
    """``--passphrase`` on the command line would sit in the shell history and ``ps``."""
    run = fieldkit("packet", "keygen", "--out", str(tmp_path / "m"), "--passphrase", PASSPHRASE)
    assert run.returncode == 2 and "unrecognized arguments" in run.stderr
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("typed", ["ab", "XYZ " * 16, "0" * 63])
def test_a_malformed_fingerprint_is_refused(typed: str) -> None:
    with pytest.raises(SealingKeyError, match="64 hexadecimal"):
        normalise_fingerprint(typed)


def test_a_v1_packet_sealed_before_the_receipt_token_still_verifies_and_opens() -> None:
    """Packets waiting in a tablet's outbox at the upgrade keep their signature and open; they
    carry no token, so their receipt is the bundle hash alone (recorded as not decrypted)."""
    receiver = x25519.X25519PrivateKey.generate()
    device = ed25519.Ed25519PrivateKey.generate()
    record_id = "0" * 32
    info = f"fieldkit-packet/v1/{record_id}/tab-a/131016".encode()
    v1 = SealedPacket(
        v=1,
        record_id=record_id,
        device_id="tab-a",
        municipality="131016",
        receiver_key=key_fingerprint(raw_public(receiver.public_key())),
        ciphertext=b64(SUITE.encrypt(b"old packet", receiver.public_key(), info=info)),
    )
    # The bytes a v1 tablet signed: no receipt_commitment among them.
    assert b"receipt_commitment" not in v1.signed_part()
    signed = v1.model_copy(update={"signature": b64(device.sign(v1.signed_part()))})
    assert open_with_token(signed, receiver, device.public_key()) == (b"old packet", None)
    v2 = seal(
        b"new packet",
        receiver.public_key(),
        device,
        record_id="1" * 32,
        device_id="tab-a",
        municipality="131016",
    )
    plaintext, token = open_with_token(v2, receiver, device.public_key())
    assert plaintext == b"new packet" and token is not None
    assert receipt_matches(v2.receipt_commitment, token.hex())
    with pytest.raises(ValueError, match="receipt commitment"):
        SealedPacket.model_validate(v2.model_dump() | {"receipt_commitment": ""})
