"""A municipality's sealing key pair: made by the municipality, kept by it (R15, R23).

The municipality runs ``fieldkit packet keygen`` on its own machine: the X25519 private key
is written encrypted with its passphrase (PKCS#8, the best encryption ``cryptography``
offers), beside the public key, and the public key's fingerprint (SHA-256 of its
SubjectPublicKeyInfo) is printed in groups of four for reading aloud. The contractor imports
only the public key, with the fingerprint the municipality gave over another channel
(``fieldkit pki receiver import``); a mismatch, or a file holding a private key, is refused.

The hub and its ingest refuse to start while a private sealing key lies under their
directories (``find_private_sealing_keys``): the hub holds ciphertext and public keys only.
"""

from __future__ import annotations

import getpass
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

PRIVATE_NAME = "sealing-private.pem"
PUBLIC_NAME = "sealing-public.pem"
MIN_PASSPHRASE = 12
# PKCS#8 PrivateKeyInfo of an X25519 key, DER, up to the key bytes (RFC 8410): a key found
# with this prefix anywhere in a file (a database page, an archive) is a sealing key.
X25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b656e04220420")
PEM_PRIVATE = re.compile(
    rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S
)
# Files larger than this are not read at start-up (a database of ciphertexts): a key file is
# a few hundred bytes. The disk-search test reads everything.
SCAN_MAX_BYTES = 8 * 1024 * 1024


class SealingKeyError(Exception):
    """A sealing key could not be made, read or imported; the message never holds key bytes."""


def spki_fingerprint(public: x25519.X25519PublicKey) -> str:
    """SHA-256 of the SubjectPublicKeyInfo, upper-case hex in 16 groups of 4 (read aloud)."""
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).hexdigest().upper()
    return " ".join(digest[i : i + 4] for i in range(0, 64, 4))


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as typed (spaces, colons, any case) in the printed form; refuses others."""
    digits = re.sub(r"[\s:]", "", text).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise SealingKeyError("a fingerprint is 64 hexadecimal digits (SHA-256)")
    return " ".join(digits[i : i + 4] for i in range(0, 64, 4))


@dataclass(frozen=True)
class GeneratedKey:
    private: Path
    public: Path
    fingerprint: str


def read_passphrase(file: Path | None, *, twice: bool, what: str = "the sealing key") -> bytes:
    """From ``file`` (its first line) or a prompt; never from the command line."""
    if file is not None:
        lines = file.read_bytes().splitlines()
        return lines[0] if lines else b""
    first = getpass.getpass(f"passphrase for {what}: ")
    if twice and getpass.getpass("the same passphrase again: ") != first:
        raise SealingKeyError("the two passphrases differ")
    return first.encode()


def generate(
    out: Path,
    passphrase: bytes,
    *,
    private_name: str = PRIVATE_NAME,
    public_name: str = PUBLIC_NAME,
) -> GeneratedKey:
    """Make a key pair in ``out``: private PEM encrypted with ``passphrase`` (0600), public PEM.

    The hub's backup key (``fieldkit hub backup-keygen``) is made the same way, under its own
    file names."""
    if len(passphrase) < MIN_PASSPHRASE:
        raise SealingKeyError(f"the passphrase must be at least {MIN_PASSPHRASE} characters")
    private_path, public_path = out / private_name, out / public_name
    if private_path.exists() or public_path.exists():
        raise SealingKeyError(f"{out} holds a sealing key already; choose another folder")
    from fieldkit.pki import write_private, write_public  # pki imports this module

    key = x25519.X25519PrivateKey.generate()
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )
    write_private(private_path, encrypted)
    public = key.public_key()
    write_public(
        public_path,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return GeneratedKey(private_path, public_path, spki_fingerprint(public))


def load_private(path: Path, passphrase: bytes | None) -> x25519.X25519PrivateKey:
    """The municipality's private key, decrypted with its passphrase."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=passphrase)
    except TypeError:
        # Encrypted without a passphrase given, or a passphrase given for a plain key.
        raise SealingKeyError(
            f"{path}: the key is encrypted and needs its passphrase"
            if passphrase is None
            else f"{path} is not encrypted; make a protected key with `fieldkit packet keygen`"
        ) from None
    except ValueError:
        raise SealingKeyError(f"{path}: wrong passphrase, or not a private key") from None
    if not isinstance(key, x25519.X25519PrivateKey):
        raise SealingKeyError(f"{path} is not an X25519 sealing key")
    return key


def read_public(data: bytes) -> x25519.X25519PublicKey:
    """A public sealing key from PEM; a file that holds any private key is refused."""
    if b"PRIVATE KEY" in data or contains_private_key(data):
        raise SealingKeyError(
            "the file holds a private key: import only the public key (sealing-public.pem); "
            "the private key stays with the municipality"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise SealingKeyError("not a PEM public key") from None
    if not isinstance(key, x25519.X25519PublicKey):
        raise SealingKeyError("not an X25519 public key (made by `fieldkit packet keygen`)")
    return key


def contains_private_key(data: bytes) -> bool:
    """Whether ``data`` holds a private key the hub must not have: an X25519 key (PEM or DER,
    anywhere in the bytes), or any encrypted private key (the hub never needs one)."""
    if X25519_PKCS8_PREFIX in data:
        return True
    for block in PEM_PRIVATE.finditer(data):
        if b"ENCRYPTED" in block.group(1):
            return True
        try:
            key = serialization.load_pem_private_key(block.group(0), password=None)
        except TypeError:  # a traditional PEM key with a Proc-Type: ENCRYPTED header
            return True
        except ValueError:
            continue
        if isinstance(key, x25519.X25519PrivateKey):
            return True
    try:
        serialization.load_der_private_key(data, password=None)
    except TypeError:  # DER EncryptedPrivateKeyInfo
        return True
    except (ValueError, UnsupportedAlgorithm):  # not DER at all: the usual case
        return False
    return False


def _files(roots: Iterable[Path]) -> Iterator[Path]:
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            continue
        walk = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in walk:
            real = path.resolve()
            if real not in seen and not path.is_symlink():
                seen.add(real)
                yield path


def find_private_sealing_keys(
    roots: Iterable[Path], max_bytes: int | None = SCAN_MAX_BYTES
) -> list[Path]:
    """Files under ``roots`` that hold a private sealing key (see ``contains_private_key``)."""
    found: list[Path] = []
    for path in _files(roots):
        try:
            if max_bytes is not None and path.stat().st_size > max_bytes:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if contains_private_key(data):
            found.append(path)
    return found
