"""Erasure records: what was erased where, what the scan found, hash-chained and signed.

A record is evidence (architecture §3): it names services, locations, marker kinds and counts,
never a value. Records are appended to a local SQLite store in the wipe's state dir; each
carries the hash of the one before it and an Ed25519 signature of its own hash by the device
key, so a removed, reordered or edited record breaks ``fieldkit wipe verify-chain``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from fieldkit.messages import Message
from fieldkit.pki import public_half_file, public_pem, replace_public

if TYPE_CHECKING:
    from fieldkit.config import DeviceConfig

GENESIS = "0" * 64
# incomplete: the scan stopped before the end (its time budget ran out, the service stopped).
LocationStatus = Literal["clean", "residue", "absent", "present", "not-readable", "incomplete"]
# Fields added after records were first sealed: left out of a record's JSON while unset, so an
# earlier record still hashes to the hash it was sealed with.
LATER_FIELDS = ("finding_count", "holders", "holder_count")


class Finding(Message):
    """One residue: where (path or pid), what kind of marker, and at which byte offset."""

    type: Literal["finding"] = "finding"
    where: str
    kind: str
    offset: int


class LocationResult(Message):
    """One catalogue location after erasing and scanning it.

    ``findings`` is bounded (the largest holders' first); the counts are not: ``finding_count``
    is every finding at the location, ``holders`` names the places holding most of them (a
    file, or a process as ``pid:<pid> (<name>)``) with how many each, and ``holder_count`` says
    how many places hold any. Records sealed before these fields existed leave them None."""

    type: Literal["location"] = "location"
    name: str
    status: LocationStatus
    erased: int = 0  # files (or folders) overwritten and removed
    action: str = ""
    scanned_files: int = 0  # files, or processes for the memory scan
    scanned_bytes: int = 0
    findings: list[Finding] = Field(default_factory=list)
    note: str = ""
    fails: bool = False
    finding_count: int | None = None
    holders: dict[str, int] | None = None
    holder_count: int | None = None

    @model_serializer(mode="wrap")
    def _later_fields_only_when_set(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name in LATER_FIELDS:
                if data.get(name, 0) is None:
                    del data[name]
        return data

    @property
    def found(self) -> int:
        """How many findings the location has, however many the record lists."""
        return len(self.findings) if self.finding_count is None else self.finding_count


class HolderResult(Message):
    type: Literal["holder"] = "holder"
    service: str
    answered: bool
    ok: bool
    erased: list[str] = Field(default_factory=list)
    problem: str | None = None


class ErasureRecord(Message):
    """Signed evidence of one session wipe or one daily scan. Evidence class: no personal data."""

    type: Literal["erasure-record"] = "erasure-record"
    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    kind: Literal["session", "daily"]
    sid: str | None = None
    device: str
    operator: str | None = None
    started: float
    finished: float
    holders: list[HolderResult] = Field(default_factory=list)
    locations: list[LocationResult] = Field(default_factory=list)
    ok: bool
    failures: list[str] = Field(default_factory=list)
    prev_hash: str = GENESIS
    hash: str = ""
    signer: str = ""  # the device public key, raw Ed25519, hex
    signature: str = ""

    def body(self) -> bytes:
        """The canonical bytes the hash covers: everything but the hash and signature."""
        data = self.model_dump(mode="json", exclude={"hash", "signature"})
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()

    def compute_hash(self) -> str:
        return hashlib.sha256(bytes.fromhex(self.prev_hash) + self.body()).hexdigest()


def failures_of(holders: list[HolderResult], locations: list[LocationResult]) -> list[str]:
    """Plain reasons the record fails, naming the holder or location."""
    reasons = []
    for holder in holders:
        if not holder.answered:
            reasons.append(f"holder {holder.service} did not answer")
        elif not holder.ok:
            reasons.append(f"holder {holder.service} could not forget ({holder.problem})")
    for location in locations:
        if location.fails:
            reasons.append(f"{location.name}: {location.status} ({location.found} found)")
    return reasons


# ---- the device key ----------------------------------------------------------------------------


def load_device_key(path: Path) -> Ed25519PrivateKey:
    """The device's signing key; created (mode 0600) when missing, its public half written
    beside it (0644, ``fieldkit.pki.public_half_file``): the kiosk names that key at enrolment
    so the hub accepts the records signed before it (fieldkit.enrolment.protocol.PRIOR_KEY_OID).

    The one place key handling lives, so the kit PKI can repoint it at a provisioned key.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        _write_public_half(path, key)
        return key
    loaded = serialization.load_pem_private_key(data, password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    if not public_half_file(path).exists():
        # A key made before the public half was written beside it. Best effort: a reader
        # that may not write there (a check run as another user) still gets the key.
        with contextlib.suppress(OSError):
            _write_public_half(path, loaded)
    return loaded


def _write_public_half(path: Path, key: Ed25519PrivateKey) -> None:
    replace_public(public_half_file(path), public_pem(key.public_key()))


def public_hex(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def signature_valid(public: str, signature: str, data: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public)).verify(
            bytes.fromhex(signature), data
        )
    except (InvalidSignature, ValueError):
        return False
    return True


# ---- the evidence store --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
-- Append-only: evidence is never edited or removed on the device.
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'erasure records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'erasure records are append-only'); END;
-- Which records sync has taken into its durable outbox (it answered "accepted"), or will
-- not be offered again (``note`` says why: the fields sync refused it for, or an upgrade).
CREATE TABLE IF NOT EXISTS handed_over (
    seq INTEGER PRIMARY KEY REFERENCES records (seq),
    at REAL NOT NULL,
    note TEXT
);
"""


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    record_id: str
    problem: str


class EvidenceStore:
    """The local, append-only chain of erasure records."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        upgrading = (
            self._db.execute("SELECT 1 FROM sqlite_master WHERE name = 'records'").fetchone()
            is not None
            and self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'handed_over'"
            ).fetchone()
            is None
        )
        self._db.executescript(SCHEMA)
        if upgrading:
            # A store from before the hand-over: its records went out as events then (those
            # sync heard reached the hub under other IDs). Offering them all again would send
            # each a second time; the hub shows the ones that never arrived as a gap.
            self._db.execute(
                "INSERT INTO handed_over (seq, at, note) "
                "SELECT seq, ?, 'sent before the hand-over existed' FROM records",
                (time.time(),),
            )
        # One connection, used by the wipe's request handler and by its hand-over thread: a
        # transaction must not take in another thread's statement.
        self._lock = threading.RLock()
        self._closed = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()

    def last_hash(self) -> str:
        row = self._db.execute("SELECT hash FROM records ORDER BY seq DESC LIMIT 1").fetchone()
        return str(row[0]) if row else GENESIS

    def append(self, record: ErasureRecord, key: Ed25519PrivateKey) -> ErasureRecord:
        """Chain the record to the last one, sign it, store it; returns the sealed record."""
        with self._lock:
            return self._append(record, key)

    def _append(self, record: ErasureRecord, key: Ed25519PrivateKey) -> ErasureRecord:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            chained = record.model_copy(
                update={"prev_hash": self.last_hash(), "signer": public_hex(key)}
            )
            digest = chained.compute_hash()
            sealed = chained.model_copy(
                update={"hash": digest, "signature": key.sign(bytes.fromhex(digest)).hex()}
            )
            self._db.execute(
                "INSERT INTO records (record_id, prev_hash, hash, body) VALUES (?, ?, ?, ?)",
                (sealed.record_id, sealed.prev_hash, sealed.hash, sealed.model_dump_json()),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return sealed

    def records(self) -> list[tuple[int, ErasureRecord]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM records ORDER BY seq").fetchall()
        return [(int(seq), ErasureRecord.model_validate_json(body)) for seq, body in rows]

    def not_handed_over(self) -> list[tuple[int, ErasureRecord]]:
        """Records sync has not yet accepted, oldest first (a chain the hub can follow)."""
        with self._lock:
            if self._closed:
                return []
            rows = self._db.execute(
                "SELECT seq, body FROM records WHERE seq NOT IN (SELECT seq FROM handed_over) "
                "ORDER BY seq"
            ).fetchall()
        return [(int(seq), ErasureRecord.model_validate_json(body)) for seq, body in rows]

    def mark_handed_over(self, seq: int, note: str | None = None) -> None:
        with self._lock:
            if self._closed:
                return  # stopping: the record is offered again at the next start
            self._db.execute(
                "INSERT OR IGNORE INTO handed_over (seq, at, note) VALUES (?, ?, ?)",
                (seq, time.time(), note),
            )


def verify_chain(
    records: list[tuple[int, ErasureRecord]], trusted: str | None = None
) -> list[ChainProblem]:
    """Every link, hash and signature; ``trusted`` pins the device public key (hex)."""
    problems = []
    previous = GENESIS
    signer = trusted
    for seq, record in records:
        if record.prev_hash != previous:
            problems.append(
                ChainProblem(seq, record.record_id, "does not follow the record before")
            )
        if signer is None:
            signer = record.signer
        found = record_problems(record, signer)
        problems += [ChainProblem(seq, record.record_id, problem) for problem in found]
        previous = record.hash
    return problems


@dataclass(frozen=True)
class ChainSummary:
    """A device's chain as followed from the genesis: how long it is, where it ends, and
    what is wrong with it (empty: intact)."""

    records: int
    head: str
    problems: list[str] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems


def follow_chain(
    records: Iterable[ErasureRecord], signers: str | Collection[str] | None = None
) -> ChainSummary:
    """Follow the chain through records received in any order (the hub's view, or a file).

    From the genesis, a record's successor is the record whose ``prev_hash`` is its hash. The
    chain is intact when every record is on it once, each hashes to itself and is signed by
    one of ``signers`` (public keys, hex: a device re-enrolled signs with a new key from then
    on; the first record's signer when not given). A record the hub never received shows as
    a gap: the ones after it are not reached."""
    trusted = {signers} if isinstance(signers, str) else set(signers or ())
    following: dict[str, list[ErasureRecord]] = {}
    distinct: set[str] = set()
    for record in records:
        if record.hash in distinct:
            continue  # the same record twice (sent twice): one record, not a fork
        distinct.add(record.hash)
        following.setdefault(record.prev_hash, []).append(record)
    total = len(distinct)
    problems: list[str] = []
    head, length, seen = GENESIS, 0, set()
    while nexts := sorted(following.get(head, []), key=lambda r: r.record_id):
        if len(nexts) > 1:
            problems.append(f"{len(nexts)} records claim to follow {head[:12]} (a fork)")
        record = nexts[0]
        if record.hash in seen:
            problems.append(f"record {record.record_id} leads back into the chain (a loop)")
            break
        trusted = trusted or {record.signer}
        signer = record.signer if record.signer in trusted else ""
        problems += [f"record {record.record_id}: {p}" for p in record_problems(record, signer)]
        seen.add(record.hash)
        head, length = record.hash, length + 1
    if length < total:
        problems.append(
            f"{total - length} of {total} records are not reached from the first one "
            "(a record before them is missing, or they fork)"
        )
    return ChainSummary(records=length, head=head, problems=problems)


def parse_records(text: str, source: str) -> list[ErasureRecord]:
    """Erasure records as JSON lines (``fieldkit wipe records --all``, or the hub's export);
    a ``seq`` field is ignored. A malformed line raises ValueError naming the line."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            data.pop("seq", None)
            records.append(ErasureRecord.model_validate(data))
        except ValueError as exc:
            raise ValueError(
                f"{source} line {number}: not an erasure record ({str(exc).splitlines()[0]})"
            ) from None
    return records


def record_problems(record: ErasureRecord, signer: str) -> list[str]:
    """What is wrong with one record on its own: its hash, and its signature by ``signer``."""
    problems = []
    if record.compute_hash() != record.hash:
        problems.append("content does not match its hash")
    if record.signer != signer:
        problems.append("signed by another key")
    else:
        try:
            digest = bytes.fromhex(record.hash)
        except ValueError:
            digest = b""
        if not digest or not signature_valid(record.signer, record.signature, digest):
            problems.append("signature does not verify")
    return problems


# The device's erasure records, in the wipe's state directory.
EVIDENCE_FILE = "evidence.sqlite"


def signing_key_path(config: DeviceConfig) -> Path:
    """The key records and certificates are signed with: the tablet's enrolment signing key
    once it is enrolled (the hub checks records against the key it enrolled), else the wipe's
    own device key (made on first use, on a tablet that is not enrolled only).

    An enrolled tablet whose signing key is missing is refused: a key made now would sign
    records the hub does not accept as this tablet's (issue 17, item 10)."""
    from fieldkit.config import ConfigError

    enrolled = config.sync.bundle / "signing.key"
    if (config.sync.bundle / "client.crt").is_file():
        if not enrolled.is_file():
            raise ConfigError(
                f"this tablet is enrolled ({config.sync.bundle}) but its signing key is missing; "
                "enrol it again (revoke first): no record is signed with another key"
            )
        return enrolled
    return config.wipe.device_key
