"""ClamAV definition databases: reading their build time, and building the kit's own.

A CVD/CLD/CUD file starts with a 512-byte text header::

    ClamAV-VDB:<build time text>:<version>:<signatures>:<flevel>:<md5>:<dsig>:<builder>:<stime>

``stime`` is the build time in Unix seconds, written by whoever built the database. It is what
"how old are the definitions" means (R10): file modification times only say when freshclam
last wrote the file, which a failed or repeated download does not change reliably.

The kit's own signatures travel as an unsigned container (``.cud``), the format that
``sigtool --build --unsigned`` writes: the header, then a gzipped tar of ``COPYING``,
``<name>.info`` (header line plus the SHA-256 of each file) and the signature files. ClamAV
loads it and freshclam accepts it from a ``DatabaseCustomURL``; unlike a bare ``.ndb`` it
carries a version and a build time.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

HEADER_SIZE = 512
MAGIC = b"ClamAV-VDB:"
CONTAINER_SUFFIXES = (".cvd", ".cld", ".cud")
# Signature file types a database may carry (a subset of what libclamav loads).
SIGNATURE_SUFFIXES = (".ndb", ".hdb", ".hsb", ".ldb", ".mdb", ".msb", ".fp", ".sfp", ".ign2")
# A database listed in a directory: containers, and plain signature files (undated).
DATABASE_SUFFIXES = (*CONTAINER_SUFFIXES, *SIGNATURE_SUFFIXES)
FUNCTIONALITY_LEVEL = 216  # ClamAV 1.4; the minimum engine level that may load the database


class DatabaseError(Exception):
    """A database file is missing, unreadable or not a ClamAV database."""


@dataclass(frozen=True)
class DatabaseInfo:
    """What a database says about itself."""

    name: str  # file name without the suffix, e.g. "daily" or "fieldkit"
    file: str
    version: int | None
    signatures: int | None
    built_at: float | None  # Unix seconds from the header; None for a plain signature file
    builder: str | None
    size: int

    def age(self, now: float) -> float | None:
        return None if self.built_at is None else max(0.0, now - self.built_at)


def read_header(path: Path) -> DatabaseInfo:
    """The header of one database file; plain signature files come back undated."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(HEADER_SIZE)
    except FileNotFoundError:
        raise DatabaseError(f"database {path.name} does not exist") from None
    except OSError as exc:
        raise DatabaseError(f"database {path.name} is not readable: {exc.strerror}") from None
    stem, suffix = path.stem, path.suffix
    if suffix not in CONTAINER_SUFFIXES:
        return DatabaseInfo(stem, path.name, None, None, None, None, size)
    if len(head) < HEADER_SIZE or not head.startswith(MAGIC):
        raise DatabaseError(f"database {path.name} has no ClamAV-VDB header")
    fields = head.decode("ascii", errors="replace").strip().split(":")
    if len(fields) < 9:
        raise DatabaseError(f"database {path.name} has a truncated header")
    try:
        version, signatures, stime = int(fields[2]), int(fields[3]), int(fields[8])
    except ValueError:
        raise DatabaseError(
            f"database {path.name}: version, count or build time is not a number"
        ) from None
    return DatabaseInfo(stem, path.name, version, signatures, float(stime), fields[7], size)


def list_databases(directory: Path) -> list[DatabaseInfo]:
    """Every database in a directory (as clamscan would load them), sorted by name."""
    found: list[DatabaseInfo] = []
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if path.is_file() and path.suffix in DATABASE_SUFFIXES:
            found.append(read_header(path))
    return found


def count_signatures(files: Mapping[str, bytes]) -> int:
    return sum(
        1
        for name, data in files.items()
        if name.endswith(SIGNATURE_SUFFIXES)
        for line in data.splitlines()
        if line.strip()
    )


def _time_text(built_at: float) -> str:
    # sigtool's format, with '-' for ':' because ':' separates header fields.
    return time.strftime("%d %b %Y %H-%M +0000", time.gmtime(built_at))


def _tar_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def build_unsigned_database(
    name: str,
    files: Mapping[str, bytes],
    *,
    version: int,
    built_at: float | None = None,
    builder: str = "fieldkit-hub",
) -> bytes:
    """An unsigned ClamAV container (.cud) holding ``files`` (e.g. ``{"fieldkit.ndb": ...}``)."""
    if not files:
        raise DatabaseError("a database needs at least one signature file")
    unknown = [f for f in files if not f.endswith(SIGNATURE_SUFFIXES) or "/" in f]
    if unknown:
        raise DatabaseError(f"not a signature file name: {', '.join(sorted(unknown))}")
    if version < 1:
        raise DatabaseError("database version must be 1 or more")
    if not builder.isascii() or ":" in builder or " " in builder:
        raise DatabaseError("builder must be ASCII without ':' or spaces")
    stamp = int(time.time() if built_at is None else built_at)
    signatures = count_signatures(files)
    head = f"{_time_text(stamp)}:{version}:{signatures}:{FUNCTIONALITY_LEVEL}"
    info = f"ClamAV-VDB:{head}:X:X:{builder}:{stamp}\n"
    info += "".join(
        f"{fname}:{len(data)}:{hashlib.sha256(data).hexdigest()}\n"
        for fname, data in sorted(files.items())
    )
    raw = io.BytesIO()
    # USTAR: libclamav's tar reader knows plain 512-byte headers, not PAX extensions.
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        _tar_member(archive, "COPYING", b"fieldkit signature database\n")
        _tar_member(archive, f"{name}.info", info.encode("ascii"))
        for fname, data in sorted(files.items()):
            _tar_member(archive, fname, data)
    body = gzip.compress(raw.getvalue(), mtime=0)
    md5 = hashlib.md5(body, usedforsecurity=False).hexdigest()
    header = f"ClamAV-VDB:{head}:{md5}:X:{builder}:{stamp}".encode("ascii")
    return header.ljust(HEADER_SIZE, b" ") + body


def hex_signature(name: str, marker: bytes, target: int = 0) -> str:
    """One ``.ndb`` line that matches ``marker`` anywhere in a file of type ``target``."""
    if not name or any(c in name for c in ": \n"):
        raise DatabaseError("signature name must be non-empty without ':', spaces or newlines")
    if len(marker) < 4:
        raise DatabaseError("a signature needs at least 4 bytes to be specific")
    return f"{name}:{target}:*:{marker.hex()}"


def newest(databases: Iterable[DatabaseInfo]) -> DatabaseInfo | None:
    dated = [d for d in databases if d.built_at is not None]
    return max(dated, key=lambda d: d.built_at or 0.0) if dated else None
