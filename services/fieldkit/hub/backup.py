"""Backups of the hub's PostgreSQL database, and their restore (issue 18; R21, R23, R24).

``fieldkit hub backup`` (a daily timer on the hub) runs ``pg_dump`` in its custom format and
encrypts the stream as it comes, chunk by chunk, to the provisioning admin's backup key
(``backup_file``): no plaintext dump touches the disk. Beside the dump the file carries the
PKI's roster (which keys each device signed with) and a manifest: for every table its row
count and a hash of its rows, for every device its erasure chain as the hub follows it, and
the dump's size and SHA-256. All of them are taken in the one snapshot the dump is made from
(``pg_export_snapshot``), so the manifest describes exactly what the dump holds while ingest
keeps writing. The newest ``keep`` backups are kept; older ones are deleted.

``fieldkit hub restore`` reads the file twice: first it decrypts and checks all of it (a
changed byte, a cut file or another key is refused before the database is touched), then it
streams the dump into ``pg_restore`` in one transaction, into an empty database only, and
recomputes the manifest from the restored database: every table's count and hash and every
device's erasure chain must be as they were.

A backup holds what the hub database holds: sealed packets (ciphertext the hub cannot open),
statistics, erasure evidence, audit events, accounts' password hashes. A packet erased after
its pick-up stays in the backups made before, sealed twice, until they are rotated out
(``keep`` days): the contract-end erasure deletes the backup folder and every copy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Literal

from cryptography.hazmat.primitives.asymmetric import x25519
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from fieldkit.hub.backup_file import (
    DUMP,
    MANIFEST,
    MAX_SMALL_SECTION,
    ROSTER,
    BackupError,
    BackupHeader,
    BackupWriter,
    open_backup,
    sections,
)
from fieldkit.hub.db import make_engine
from fieldkit.hub.web.chains import device_chain
from fieldkit.models import Strict
from fieldkit.pki import RosterEntry, parse_roster
from fieldkit.sealing_keys import SealingKeyError, contains_private_key, read_public

PRIVATE_NAME = "backup-private.pem"
PUBLIC_NAME = "backup-public.pem"
SUFFIX = ".fkbackup"
BACKUP_NAME = re.compile(r"^hub-[0-9]{8}T[0-9]{6}\.[0-9]{6}Z\.fkbackup$")
READ_BYTES = 1024 * 1024
EMPTY_ROSTER = b'{"devices": {}}'
# Rendering settings that make a row's text (and so its hash) the same in any session.
STABLE_TEXT = (
    "SET LOCAL TimeZone = 'UTC'",
    "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'",
    "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)


class TableState(Strict):
    rows: int
    # SHA-256 over the sorted SHA-256s of the rows' text: the same iff the same rows.
    sha256: str


class ChainState(Strict):
    records: int
    head: str
    problems: list[str]


class DatabaseState(Strict):
    """What a restore must reproduce: each table's rows, each device's erasure chain."""

    schema_revision: str
    tables: dict[str, TableState]
    chains: dict[str, ChainState]

    def rows(self) -> int:
        return sum(table.rows for table in self.tables.values())


class DumpState(Strict):
    format: Literal["pg_dump-custom"] = "pg_dump-custom"
    bytes: int
    sha256: str
    pg_dump: str


class BackupManifest(Strict):
    v: Literal[1] = 1
    type: Literal["hub-backup-manifest"] = "hub-backup-manifest"
    created_at: str
    hub: str
    database: str
    server_version: str
    roster_sha256: str
    dump: DumpState
    state: DatabaseState


def differences(expected: DatabaseState, found: DatabaseState) -> list[str]:
    """How ``found`` differs from ``expected`` (empty: the same), in words for the admin."""
    problems: list[str] = []
    if found.schema_revision != expected.schema_revision:
        problems.append(f"schema revision {found.schema_revision}, not {expected.schema_revision}")
    for name in sorted(expected.tables.keys() | found.tables.keys()):
        before, after = expected.tables.get(name), found.tables.get(name)
        if before is None or after is None:
            problems.append(f"table {name} is {'extra' if before is None else 'missing'}")
        elif before.rows != after.rows:
            problems.append(f"table {name}: {after.rows} rows, not {before.rows}")
        elif before.sha256 != after.sha256:
            problems.append(f"table {name}: its rows differ (same count, other content)")
    for device in sorted(expected.chains.keys() | found.chains.keys()):
        was, now = expected.chains.get(device), found.chains.get(device)
        if was != now:
            problems.append(
                f"device {device}: erasure chain {_chain_words(now)}, not {_chain_words(was)}"
            )
    return problems


def _chain_words(chain: ChainState | None) -> str:
    if chain is None:
        return "absent"
    count = len(chain.problems)
    state = "intact" if not count else f"{count} problem{'s' if count > 1 else ''}"
    return f"{chain.records} records to {chain.head[:12]} ({state})"


@dataclass(frozen=True)
class PgTarget:
    """A database as libpq's tools take it: a connection string without the password (which
    goes in their environment, out of the process list)."""

    conninfo: str
    env: dict[str, str]
    database: str


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_target(database_url: str) -> PgTarget:
    """The libpq form of the hub's SQLAlchemy URL; a database that is not PostgreSQL is refused."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise BackupError(
            f"the hub database is {url.get_backend_name()}, not PostgreSQL: backups are for "
            "the production database (a development SQLite hub is one file: copy it while "
            "the hub is stopped)"
        )
    if not url.database:
        raise BackupError("the hub's database URL names no database")
    params: dict[str, str] = {"dbname": url.database}
    for key, value in url.query.items():
        params[key] = value if isinstance(value, str) else value[-1]
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = str(url.port)
    if url.username:
        params["user"] = url.username
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conninfo = " ".join(f"{key}={_quote(value)}" for key, value in params.items())
    return PgTarget(conninfo, env, url.database)


def pg_tool(name: str, pg_bin: Path | None) -> str:
    """``pg_dump`` or ``pg_restore``: from ``pg_bin`` if given, else from the PATH."""
    found = str(pg_bin / name) if pg_bin else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        where = f"in {pg_bin}" if pg_bin else "on the PATH"
        raise BackupError(f"{name} is not {where} (Debian package postgresql-client)")
    return found


def _pipe(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise BackupError("the PostgreSQL tool's pipe was not opened")
    return stream


def _tail(stream: IO[bytes]) -> str:
    """What a PostgreSQL tool said went wrong: its error lines (not the SQL it was running)."""
    stream.seek(0)
    lines = [line.strip() for line in stream.read().decode("utf-8", "replace").splitlines()]
    errors = [line for line in lines if ": error:" in line or line.startswith("ERROR:")]
    return " / ".join(errors[:3] or lines[-3:]) or "no message"


def database_state(connection: Connection, roster: dict[str, RosterEntry]) -> DatabaseState:
    """Every table's row count and row hash, every device's erasure chain, the schema."""
    for statement in STABLE_TEXT:
        connection.execute(text(statement))
    tables: dict[str, TableState] = {}
    listed = connection.execute(
        text(
            "SELECT schemaname, tablename, format('%I.%I', schemaname, tablename) "
            "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "ORDER BY 1, 2"
        )
    ).all()
    for schema, table, qualified in listed:
        name = str(table) if schema == "public" else f"{schema}.{table}"
        digest, rows = hashlib.sha256(), 0
        # ``qualified`` comes from the catalogue, quoted by format('%I.%I'). The row hashes
        # are bytea: they sort bytewise, whatever the database's collation.
        rows_sql = (
            f"SELECT sha256(convert_to(t::text, 'UTF8')) AS d FROM {qualified} AS t ORDER BY d"  # noqa: S608
        )
        streamed = connection.execution_options(stream_results=True, yield_per=10_000)
        row_digest: bytes
        for row_digest in streamed.execute(text(rows_sql)).scalars():
            digest.update(row_digest)
            rows += 1
        tables[name] = TableState(rows=rows, sha256=digest.hexdigest())
    chains: dict[str, ChainState] = {}
    revision = ""
    if "alembic_version" in tables:
        revision = str(connection.scalar(text("SELECT version_num FROM alembic_version")) or "")
    if "erasure_record" in tables:
        with Session(bind=connection) as session:
            devices = session.scalars(text("SELECT DISTINCT device_id FROM erasure_record"))
            for device in sorted(devices):
                summary = device_chain(session, roster, device)
                chains[device] = ChainState(
                    records=summary.records, head=summary.head, problems=summary.problems
                )
    return DatabaseState(schema_revision=revision, tables=tables, chains=chains)


def load_recipient(path: Path) -> x25519.X25519PublicKey:
    """The admin's backup public key; a file with a private key in it is refused."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupError(
            f"no backup key at {path}: make a key pair on your own machine with "
            "`fieldkit hub backup-keygen --out DIR` and install only its backup-public.pem here"
        ) from None
    if b"PRIVATE KEY" in data or contains_private_key(data):
        raise BackupError(
            f"{path} holds a private key: the hub gets only {PUBLIC_NAME}; the private key "
            "stays offline with the provisioning admin"
        )
    try:
        return read_public(data)
    except SealingKeyError as exc:
        raise BackupError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class BackupMade:
    path: Path
    size: int
    manifest: BackupManifest
    header: BackupHeader
    removed: list[Path]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / ".backup.lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"another backup is being written in {folder}") from None
        yield
    finally:
        os.close(fd)


def backups_in(folder: Path) -> list[Path]:
    """The hub's backups in ``folder``, oldest first (their names sort by time)."""
    return (
        sorted(p for p in folder.iterdir() if BACKUP_NAME.match(p.name)) if folder.exists() else []
    )


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` backups; return what was deleted."""
    if keep < 1:
        raise BackupError("keep at least one backup")
    removed = backups_in(folder)[:-keep]
    for path in removed:
        path.unlink()
    return removed


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_backup(
    database_url: str,
    *,
    folder: Path,
    public_key: Path,
    keep: int,
    hub: str,
    roster_path: Path,
    pg_bin: Path | None = None,
) -> BackupMade:
    """Dump the hub database, encrypted to ``public_key``, into ``folder``; keep ``keep``."""
    if keep < 1:
        raise BackupError("keep at least one backup")
    target = pg_target(database_url)
    recipient = load_recipient(public_key)
    pg_dump = pg_tool("pg_dump", pg_bin)
    roster_raw = _roster_bytes(roster_path)
    roster = parse_roster(roster_raw)
    now = dt.datetime.now(dt.UTC)
    final = folder / f"hub-{now:%Y%m%dT%H%M%S.%f}Z{SUFFIX}"
    partial = final.with_name(final.name + ".partial")
    engine = make_engine(database_url)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _locked(folder), contextlib.ExitStack() as cleanup:
            for stale in folder.glob(f"hub-*{SUFFIX}.partial"):
                stale.unlink()  # a run that died: never a usable backup
            try:
                connection = cleanup.enter_context(
                    engine.connect().execution_options(isolation_level="REPEATABLE READ")
                )
                # The dump and the manifest both read this snapshot: they describe one state.
                snapshot = str(connection.scalar(text("SELECT pg_export_snapshot()")))
                server_version = str(connection.scalar(text("SHOW server_version")))
                state = database_state(connection, roster)
            except SQLAlchemyError as exc:
                raise BackupError(
                    f"the hub database could not be read: {_first_line(exc)}"
                ) from None
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            cleanup.callback(partial.unlink, missing_ok=True)
            with os.fdopen(fd, "wb") as out:
                writer = BackupWriter(out, recipient, created_at=now.isoformat(), hub=hub)
                dump = _dump(writer, pg_dump, snapshot, target)
                manifest = BackupManifest(
                    created_at=now.isoformat(),
                    hub=hub,
                    database=target.database,
                    server_version=server_version,
                    roster_sha256=hashlib.sha256(roster_raw).hexdigest(),
                    dump=dump,
                    state=state,
                )
                writer.write(ROSTER, roster_raw)
                writer.write(MANIFEST, manifest.model_dump_json().encode())
                writer.close()
                out.flush()
                os.fsync(out.fileno())
            os.rename(partial, final)
            _fsync_folder(folder)
            removed = prune(folder, keep)
    except OSError as exc:
        raise BackupError(f"{folder}: {exc.strerror or exc}") from None
    finally:
        engine.dispose()
    return BackupMade(final, final.stat().st_size, manifest, writer.header, removed)


def _roster_bytes(path: Path) -> bytes:
    """The PKI's roster.json (an empty one if the hub has enrolled nobody yet), checked."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return EMPTY_ROSTER
    try:
        parse_roster(raw)
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"the roster {path} is unreadable") from None
    return raw


def _dump(writer: BackupWriter, pg_dump: str, snapshot: str, target: PgTarget) -> DumpState:
    """Run ``pg_dump`` on ``snapshot`` and encrypt its output into ``writer`` as it comes."""
    version = subprocess.run(
        [pg_dump, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dump_hash, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-password",
             f"--dbname={target.conninfo}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=target.env,
        )  # fmt: skip
        dumped = _pipe(process.stdout)
        with process:  # on an error here it closes the pipe: pg_dump stops, and is waited for
            while block := dumped.read(READ_BYTES):
                writer.write(DUMP, block)
                dump_hash.update(block)
                size += len(block)
        if process.returncode != 0 or size == 0:
            raise BackupError(f"pg_dump failed: {_tail(errors)}")
    return DumpState(bytes=size, sha256=dump_hash.hexdigest(), pg_dump=version)


def _first_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else exc.__class__.__name__


@dataclass(frozen=True)
class CheckedBackup:
    header: BackupHeader
    manifest: BackupManifest
    roster: bytes


def check_backup(source: BinaryIO, key: x25519.X25519PrivateKey, name: str) -> CheckedBackup:
    """Decrypt and check the whole file: every chunk, the dump's hash, the manifest."""
    opened = open_backup(source, key, name)
    dump_hash, size = hashlib.sha256(), 0
    small: dict[bytes, bytearray] = {ROSTER: bytearray(), MANIFEST: bytearray()}
    for kind, data in sections(source, opened, name):
        if kind == DUMP:
            dump_hash.update(data)
            size += len(data)
            continue
        small[kind] += data
        if len(small[kind]) > MAX_SMALL_SECTION:
            raise BackupError(f"{name}: its {kind.decode()} section is too large; refusing it")
    try:
        manifest = BackupManifest.model_validate_json(bytes(small[MANIFEST]))
    except ValidationError:
        raise BackupError(f"{name}: its manifest is unreadable; refusing it") from None
    roster = bytes(small[ROSTER])
    if (
        manifest.dump.bytes != size
        or manifest.dump.sha256 != dump_hash.hexdigest()
        or manifest.roster_sha256 != hashlib.sha256(roster).hexdigest()
        or (manifest.created_at, manifest.hub) != (opened.header.created_at, opened.header.hub)
    ):
        raise BackupError(f"{name}: its content does not match its manifest; refusing it")
    return CheckedBackup(opened.header, manifest, roster)


@dataclass(frozen=True)
class Restored:
    checked: CheckedBackup
    state: DatabaseState
    problems: list[str]


def _user_relations(connection: Connection) -> int:
    return int(
        connection.scalar(
            text(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') "
                "AND n.nspname NOT LIKE 'pg\\_%' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
            )
        )
        or 0
    )


def restore_backup(
    path: Path,
    key: x25519.X25519PrivateKey,
    database_url: str,
    pg_bin: Path | None = None,
) -> Restored:
    """Check the whole backup, load it into the empty database, and compare the result."""
    target = pg_target(database_url)
    pg_restore = pg_tool("pg_restore", pg_bin)
    name = str(path)
    engine = make_engine(database_url)
    try:
        with path.open("rb") as source:
            checked = check_backup(source, key, name)
            try:
                with engine.connect() as connection:
                    found = _user_relations(connection)
            except SQLAlchemyError as exc:
                raise BackupError(
                    f"database {target.database} could not be reached: {_first_line(exc)}"
                ) from None
            if found:
                raise BackupError(
                    f"database {target.database} is not empty ({found} tables, sequences or "
                    "views): a backup is restored only into an empty database. Stop the hub's "
                    "services and make the database anew (docs/operations.md, restore), or "
                    "give --database-url of an empty one"
                )
            source.seek(0)
            _load(source, key, name, checked, target, pg_restore)
        roster = parse_roster(checked.roster)
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as connection:
            state = database_state(connection, roster)
    finally:
        engine.dispose()
    return Restored(checked, state, differences(checked.manifest.state, state))


def _load(
    source: BinaryIO,
    key: x25519.X25519PrivateKey,
    name: str,
    checked: CheckedBackup,
    target: PgTarget,
    pg_restore: str,
) -> None:
    """Stream the dump into ``pg_restore`` (one transaction); its end is only sent once the
    bytes read this time hash as the checked ones did, else the transaction is abandoned."""
    opened = open_backup(source, key, name)
    if opened.header != checked.header:
        raise BackupError(f"{name} changed while it was being restored; nothing was restored")
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                "--no-password",
                f"--dbname={target.conninfo}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=target.env,
        )
        into = _pipe(process.stdin)
        dump_hash, stopped = hashlib.sha256(), False
        changed = f"{name} changed while it was being restored: make the database anew, then retry"
        try:
            for kind, data in sections(source, opened, name):
                if kind != DUMP:
                    break
                dump_hash.update(data)
                into.write(data)
        except BrokenPipeError:
            stopped = True  # pg_restore gave up: its message says why
        except BackupError:
            process.kill()
            process.wait()
            raise BackupError(changed) from None
        if not stopped and dump_hash.hexdigest() != checked.manifest.dump.sha256:
            process.kill()
            process.wait()
            raise BackupError(changed)
        with contextlib.suppress(BrokenPipeError):
            into.close()
        if process.wait() != 0:
            raise BackupError(
                f"pg_restore failed, nothing was restored (one transaction): {_tail(errors)}"
            )


def describe(state: DatabaseState) -> list[str]:
    """The lines a backup or restore prints: counts by table, chains by device."""
    lines = [
        f"  {name}: {table.rows} row{'s' if table.rows > 1 else ''}"
        for name, table in state.tables.items()
        if table.rows
    ]
    for device, chain in state.chains.items():
        lines.append(f"  erasure chain {device}: {_chain_words(chain)}")
    return lines
