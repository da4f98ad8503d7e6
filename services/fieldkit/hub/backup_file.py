"""The hub backup's file format: encrypted to the provisioning admin's public key as it is
written, refused whole if a byte of it was changed, cut or encrypted to another key.

Whose key: the hub must be restorable after its disk dies, so the key that opens a backup
cannot live only on the hub, and a hub disk or backup that is stolen must yield nothing
readable (architecture §3). The admin makes an X25519 key pair on their own machine
(``fieldkit hub backup-keygen``, the private half encrypted with a passphrase, as a
municipality's sealing key); the hub holds the public half only and encrypts to it.

Layout::

    MAGIC | header length (4, big-endian) | header (JSON) | chunk* (length (4) | ciphertext)

The header names the recipient key's fingerprint (a wrong key is named before anything is
decrypted) and carries a fresh 32-byte file key sealed with HPKE (RFC 9180 base mode,
DHKEM(X25519, HKDF-SHA256), ChaCha20-Poly1305: the sealing suite of the packets) to that key;
HPKE's ``info`` is the rest of the header. The content is a sequence of chunks, each up to
1 MiB of plaintext sealed with ChaCha20-Poly1305 under the file key (the STREAM construction
of age and Tink): the nonce is the chunk's number and a last-chunk flag, the associated data
the header's SHA-256. So a changed, dropped, reordered or appended chunk, a changed header
and a file cut short are all refused. Each chunk's plaintext starts with the letter of its
section: ``D`` the ``pg_dump`` stream, ``R`` the PKI roster, ``M`` the manifest (last).

What encryption to a public key cannot say is who wrote the file: anyone with the public key
can make a well-formed backup. The backups are written by the hub alone and copied off it by
the admin over SSH; the restore's verification then shows what the file holds.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pydantic import Field, ValidationError

from fieldkit.models import Strict
from fieldkit.sealing import SUITE
from fieldkit.sealing_keys import spki_fingerprint

MAGIC = b"FKHUBBK\x01"
# Where the hub writes its backups and finds the admin's key, and how many it keeps.
DEFAULT_DIR = Path("/var/lib/fieldkit-hub-backup")
DEFAULT_PUBLIC_KEY = Path("/etc/fieldkit/backup-public.pem")
DEFAULT_KEEP = 14
SUITE_NAME: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305/chacha20poly1305-stream"] = (
    "hpke-base-x25519-hkdfsha256-chacha20poly1305/chacha20poly1305-stream"
)
CHUNK_BYTES = 1024 * 1024
TAG_BYTES = 16
MAX_HEADER_BYTES = 64 * 1024
DUMP, ROSTER, MANIFEST = b"D", b"R", b"M"
SECTION_ORDER = (DUMP, ROSTER, MANIFEST)
# The roster and the manifest are read into memory: bounded, unlike the dump.
MAX_SMALL_SECTION = 64 * 1024 * 1024


class BackupError(Exception):
    """A backup could not be made, read or restored; the message says why (never content)."""


class BackupHeader(Strict):
    """What a backup says about itself before anything is decrypted."""

    v: Literal[1] = 1
    type: Literal["fieldkit-hub-backup"] = "fieldkit-hub-backup"
    suite: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305/chacha20poly1305-stream"] = (
        SUITE_NAME
    )
    recipient: str = Field(pattern=r"^[0-9A-F]{4}( [0-9A-F]{4}){15}$")
    created_at: str
    hub: str
    wrapped_key: str = ""

    def hpke_info(self) -> bytes:
        unwrapped = self.model_dump(exclude={"wrapped_key"})
        return b"fieldkit-hub-backup/v1\0" + json.dumps(unwrapped, sort_keys=True).encode()


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class BackupWriter:
    """Encrypts sections into ``out`` chunk by chunk: no plaintext is ever written."""

    def __init__(
        self,
        out: BinaryIO,
        recipient: x25519.X25519PublicKey,
        *,
        created_at: str,
        hub: str,
    ) -> None:
        file_key = ChaCha20Poly1305.generate_key()
        header = BackupHeader(recipient=spki_fingerprint(recipient), created_at=created_at, hub=hub)
        wrapped = SUITE.encrypt(file_key, recipient, info=header.hpke_info())
        header = header.model_copy(update={"wrapped_key": base64.b64encode(wrapped).decode()})
        encoded = header.model_dump_json().encode()
        self._out = out
        self._aead = ChaCha20Poly1305(file_key)
        self._aad = hashlib.sha256(encoded).digest()
        self._counter = 0
        self._kind = b""
        self._pending = bytearray()
        self.header = header
        out.write(MAGIC + len(encoded).to_bytes(4, "big") + encoded)

    def _emit(self, data: bytes, last: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._counter, last), self._kind + data, self._aad)
        self._out.write(len(sealed).to_bytes(4, "big") + sealed)
        self._counter += 1

    def write(self, kind: bytes, data: bytes) -> None:
        """Add ``data`` to section ``kind`` (sections come in order: dump, roster, manifest)."""
        if kind != self._kind:
            if self._kind and SECTION_ORDER.index(kind) <= SECTION_ORDER.index(self._kind):
                raise ValueError(f"section {kind!r} after {self._kind!r}")
            if self._pending:
                self._emit(bytes(self._pending), last=False)
                self._pending.clear()
            self._kind = kind
        self._pending += data
        # Keep at least one byte back: the last chunk is only known at close.
        while len(self._pending) > CHUNK_BYTES:
            self._emit(bytes(self._pending[:CHUNK_BYTES]), last=False)
            del self._pending[:CHUNK_BYTES]

    def close(self) -> None:
        """Seal the last chunk (the end of the manifest) with the last-chunk flag."""
        if self._kind != MANIFEST or not self._pending:
            raise ValueError("a backup ends with its manifest")
        self._emit(bytes(self._pending), last=True)
        self._pending.clear()


@dataclass(frozen=True)
class Opened:
    header: BackupHeader
    aad: bytes
    file_key: bytes


def read_header(source: BinaryIO, name: str) -> tuple[BackupHeader, bytes]:
    if source.read(len(MAGIC)) != MAGIC:
        raise BackupError(f"{name} is not a fieldkit hub backup")
    size = int.from_bytes(source.read(4), "big")
    if not 0 < size <= MAX_HEADER_BYTES:
        raise BackupError(f"{name}: its header is damaged; refusing it")
    encoded = source.read(size)
    try:
        return BackupHeader.model_validate_json(encoded), encoded
    except ValidationError:
        raise BackupError(f"{name}: its header is damaged or altered; refusing it") from None


def open_backup(source: BinaryIO, key: x25519.X25519PrivateKey, name: str) -> Opened:
    """Read the header and unwrap the file key; a key the backup was not made for is named."""
    header, encoded = read_header(source, name)
    ours = spki_fingerprint(key.public_key())
    if header.recipient != ours:
        raise BackupError(
            f"{name} was encrypted to the backup key {header.recipient}, not to this key "
            f"({ours}): use the private key whose fingerprint it names"
        )
    try:
        wrapped = base64.b64decode(header.wrapped_key, validate=True)
        file_key = SUITE.decrypt(wrapped, key, info=header.hpke_info())
    except Exception:  # binascii.Error, or HPKE's: the header was changed after it was written
        raise BackupError(f"{name}: its header has been altered; refusing it") from None
    return Opened(header, hashlib.sha256(encoded).digest(), file_key)


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    return data if data is not None else b""


def sections(source: BinaryIO, opened: Opened, name: str) -> Iterator[tuple[bytes, bytes]]:
    """(section letter, plaintext) chunk by chunk, each authenticated before it is given out.

    The whole file is authentic only once this ends without an error: a caller acts on what
    it read only then (the restore reads the file twice: once to check, once to load)."""
    aead = ChaCha20Poly1305(opened.file_key)
    counter, kind_index, done = 0, 0, False
    offset = source.tell()
    length = _read_exactly(source, 4)
    while length:
        if done:
            raise BackupError(f"{name} has data after its end; refusing it")
        size = int.from_bytes(length.rjust(4, b"\0"), "big")
        if len(length) < 4 or not TAG_BYTES < size <= CHUNK_BYTES + 1 + TAG_BYTES:
            raise BackupError(f"{name} is damaged at byte {offset}; refusing it")
        sealed = _read_exactly(source, size)
        if len(sealed) < size:
            raise BackupError(f"{name} is cut short: its last chunk is incomplete; refusing it")
        offset = source.tell()
        length = _read_exactly(source, 4)
        last = not length
        try:
            plain = aead.decrypt(_nonce(counter, last), sealed, opened.aad)
        except InvalidTag:
            if last and _authentic(aead, counter, sealed, opened.aad):
                raise BackupError(f"{name} is cut short: its end is missing; refusing it") from None
            raise BackupError(
                f"{name} has been altered or damaged (chunk {counter}, before byte {offset}); "
                "refusing it"
            ) from None
        kind, data = plain[:1], plain[1:]
        if kind not in SECTION_ORDER or SECTION_ORDER.index(kind) < kind_index:
            raise BackupError(f"{name}: its sections are out of order; refusing it")
        kind_index = SECTION_ORDER.index(kind)
        done = last
        counter += 1
        yield kind, data
    if not done:
        raise BackupError(f"{name} is cut short: it holds no manifest; refusing it")


def _authentic(aead: ChaCha20Poly1305, counter: int, sealed: bytes, aad: bytes) -> bool:
    """Whether a chunk read as the last one is a genuine middle chunk (the file was cut)."""
    try:
        aead.decrypt(_nonce(counter, False), sealed, aad)
    except InvalidTag:
        return False
    return True
