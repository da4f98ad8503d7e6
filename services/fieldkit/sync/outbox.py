"""The tablet outbox: an SQLite file that survives SIGKILL and power loss.

A record is ``pending`` until sent, ``sent`` until the hub acknowledges it (after the hub's
commit), and then deleted (acked). ``refused`` records stay, visibly, for the operator.
WAL with ``synchronous=FULL`` makes every accepted submit durable before we answer it;
``secure_delete`` overwrites a deleted record's bytes; only sealed packets ever get here.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS record (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id    TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    payload      BLOB NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'sent', 'refused')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS record_due ON record (state, next_attempt);
CREATE TABLE IF NOT EXISTS counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO counter VALUES ('acked', 0);
"""


class OutboxFull(Exception):
    """The outbox reached its bound; the caller must hold on and show it, not drop."""


class DuplicateRecord(Exception):
    """A record with this id is in the outbox already."""


@dataclass(frozen=True)
class OutboxState:
    pending: int
    sent: int
    refused: int
    acked_total: int
    bytes: int
    full: bool
    oldest_created_at: float | None


class Outbox:
    """Durable queue of signed records awaiting the hub's acknowledgement."""

    def __init__(self, path: Path, *, max_records: int, max_bytes: int) -> None:
        self.path = path
        self.max_records = max_records
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create the file 0600 before SQLite opens it: its -wal and -shm inherit the mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")
        # Keep the WAL from growing without end; old frames are overwritten, not kept.
        self._db.execute("PRAGMA journal_size_limit=1048576")
        self._db.executescript(SCHEMA)
        path.chmod(0o600)
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM record"
        ).fetchone()
        self._count = int(count)
        self._bytes = int(size)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: tuple[object, ...] | list[tuple[object, ...]] = ()) -> int:
        """One statement in its own durable transaction; returns rows changed."""
        cursor = self._db.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(params, list):
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
            changed = cursor.rowcount
            cursor.execute("COMMIT")
        except BaseException:
            self._roll_back(cursor)
            raise
        return int(changed)

    def _roll_back(self, cursor: sqlite3.Cursor) -> None:
        # A COMMIT that failed for a full disk has rolled back already: a second ROLLBACK
        # would raise and hide why.
        if self._db.in_transaction:
            cursor.execute("ROLLBACK")

    @property
    def full(self) -> bool:
        return self._count >= self.max_records or self._bytes >= self.max_bytes

    def submit(self, record_id: str, kind: str, payload: bytes) -> int:
        """Store a record durably; returns the number of records now waiting."""
        with self._lock:
            if self._count + 1 > self.max_records or self._bytes + len(payload) > self.max_bytes:
                raise OutboxFull(
                    f"outbox full ({self._count} records, {self._bytes} bytes); "
                    "waiting for the hub to acknowledge"
                )
            try:
                self._write(
                    "INSERT INTO record (record_id, kind, payload, created_at) VALUES (?,?,?,?)",
                    (record_id, kind, payload, time.time()),
                )
            except sqlite3.IntegrityError:
                raise DuplicateRecord(f"record {record_id} is in the outbox already") from None
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_FULL:
                    raise
                # The disk, not the bound: the sender holds on and offers it again, as when full.
                raise OutboxFull("the outbox's disk is full; waiting for space") from None
            self._count += 1
            self._bytes += len(payload)
            return self._count

    def take_due(
        self,
        limit: int,
        ack_timeout: float,
        backoff_max: float,
        send: Callable[[str, bytes], bool] | None = None,
    ) -> list[tuple[str, bytes]]:
        """Records to (re)send now, marked sent with their next retry time.

        With ``send``, each record is handed over *before* the marking commits, so the
        marking's fsync is not on the way to the hub; a crash in between leaves the record
        pending, and it is simply sent again. ``send`` returning False stops the round.
        """
        if limit <= 0:
            return []
        now = time.time()
        with self._lock:
            rows = self._db.execute(
                "SELECT record_id, payload, attempts FROM record"
                " WHERE state IN ('pending', 'sent') AND next_attempt <= ?"
                " ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            if not rows:
                return []
            if send is not None:
                handed = 0
                for rid, payload, _attempts in rows:
                    if not send(rid, bytes(payload)):
                        break
                    handed += 1
                rows = rows[:handed]
                if not rows:
                    return []
            # Exponential backoff per record: a hub that never acks is not hammered.
            updates: list[tuple[object, ...]] = [
                (now + min(ack_timeout * 2 ** min(attempts, 16), backoff_max), rid)
                for rid, _payload, attempts in rows
            ]
            self._write(
                "UPDATE record SET state='sent', attempts=attempts+1, next_attempt=? "
                "WHERE record_id=?",
                updates,
            )
        return [(rid, bytes(payload)) for rid, payload, _ in rows]

    def retry_sent_now(self) -> None:
        """After a reconnect, whatever was in flight may be lost: send it again."""
        with self._lock:
            self._write("UPDATE record SET next_attempt=0 WHERE state='sent'")

    def acked(self, record_ids: list[str]) -> int:
        """Delete acknowledged records (their bytes are overwritten: secure_delete)."""
        if not record_ids:
            return 0
        with self._lock:
            cursor = self._db.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                removed = 0
                size = 0
                for start in range(0, len(record_ids), 500):
                    chunk = record_ids[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    where = f"record_id IN ({marks}) AND state != 'refused'"
                    row = cursor.execute(
                        f"SELECT count(*), coalesce(sum(length(payload)), 0) FROM record "  # noqa: S608
                        f"WHERE {where}",
                        chunk,
                    ).fetchone()
                    cursor.execute(f"DELETE FROM record WHERE {where}", chunk)  # noqa: S608
                    removed += int(row[0])
                    size += int(row[1])
                cursor.execute("UPDATE counter SET value=value+? WHERE name='acked'", (removed,))
                cursor.execute("COMMIT")
            except BaseException:
                self._roll_back(cursor)
                raise
            self._count -= removed
            self._bytes -= size
            return removed

    def refused(self, record_id: str, reason: str) -> None:
        with self._lock:
            self._write(
                "UPDATE record SET state='refused', reason=? WHERE record_id=?",
                (reason[:500], record_id),
            )

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it (when idle: nothing lingers there)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def state(self) -> OutboxState:
        with self._lock:
            counts = dict(
                self._db.execute("SELECT state, count(*) FROM record GROUP BY state").fetchall()
            )
            acked = self._db.execute("SELECT value FROM counter WHERE name='acked'").fetchone()[0]
            oldest = self._db.execute("SELECT min(created_at) FROM record").fetchone()[0]
            return OutboxState(
                pending=int(counts.get("pending", 0)),
                sent=int(counts.get("sent", 0)),
                refused=int(counts.get("refused", 0)),
                acked_total=int(acked),
                bytes=self._bytes,
                full=self.full,
                oldest_created_at=oldest,
            )
