"""The hub database (SQLAlchemy 2.x): one ledger of every record id, and a table per kind.

Sealed packets are stored as ciphertext only, per municipality (R23); the hub holds no key
that opens them unless it is itself the configured receiver. Migrations live in
``fieldkit/hub/migrations`` (Alembic); ``upgrade`` brings any database to the head.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    false,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fieldkit.sealing import SealedPacket, b64

MIGRATIONS = Path(__file__).with_name("migrations")


class Base(DeclarativeBase):
    pass


class RecordRow(Base):
    """Every record the hub accepted, once: the idempotency ledger."""

    __tablename__ = "record"
    record_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    digest: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(100))


class SealedPacketRow(Base):
    __tablename__ = "sealed_packet"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    municipality: Mapped[str] = mapped_column(String(6), index=True)
    device_id: Mapped[str] = mapped_column(String(63))
    suite: Mapped[str] = mapped_column(String(64))
    receiver_key: Mapped[str] = mapped_column(String(16))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(String(100))
    # Packet format (2: a receipt token sealed inside) and the token's hash, for the receipt.
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    receipt_commitment: Mapped[str] = mapped_column(String(64), server_default="")

    def packet(self) -> SealedPacket:
        """The sealed packet as the device sent it (ciphertext only), for pick-up or export."""
        return SealedPacket(
            record_id=self.record_id,
            device_id=self.device_id,
            municipality=self.municipality,
            receiver_key=self.receiver_key,
            ciphertext=b64(self.ciphertext),
            receipt_commitment=self.receipt_commitment,
            signature=self.signature,
            v=2 if self.version == 2 else 1,
        )


class StatisticsRow(Base):
    __tablename__ = "statistics"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63))
    site: Mapped[str] = mapped_column(String(200), index=True)
    date: Mapped[str] = mapped_column(String(10), index=True)
    municipality: Mapped[str] = mapped_column(String(6), index=True)
    sex: Mapped[str] = mapped_column(String(8))
    age_band: Mapped[str] = mapped_column(String(16))
    mode: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(16))
    # The visit staff chose on the tablet (migration 0010); None: the plan for device and day.
    visit_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)


class ErasureRow(Base):
    __tablename__ = "erasure_record"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(16))
    # What the device says: its wipe verified every location clean.
    verified: Mapped[bool] = mapped_column(Boolean)
    # What the hub checked: the record's hash, and its signature by the device's enrolled key.
    signed: Mapped[bool] = mapped_column(Boolean, server_default=false())
    record: Mapped[dict[str, Any]] = mapped_column(JSON)


class AuditRow(Base):
    __tablename__ = "audit_event"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(100))
    outcome: Mapped[str] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class HealthRow(Base):
    __tablename__ = "device_health"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    at: Mapped[float] = mapped_column(Float)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class DeviceStatusRow(Base):
    """A tablet's latest status (``wire.DeviceStatus``), from its last roster request."""

    __tablename__ = "device_status"
    device_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    reported_at: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    version: Mapped[str] = mapped_column(String(40))
    outbox_pending: Mapped[int] = mapped_column(Integer)
    outbox_refused: Mapped[int] = mapped_column(Integer)
    outbox_oldest_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class RefusalRow(Base):
    """Refused uplink messages: when, which device, why (never the content)."""

    __tablename__ = "refusal"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    record_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    at: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(500))


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, synchronous=FULL and foreign keys, like the outbox, and a
    file only its owner reads (it holds every account's password hash): 0600, and SQLite gives
    its -wal and -shm files the database file's mode; a folder it makes is 0700."""
    if url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        for owned in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if owned.exists():
                os.chmod(owned, 0o600)
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


# Any fixed number: the PostgreSQL advisory lock that serializes the hub's migrations.
MIGRATION_LOCK = 0x6669656C646B6974  # "fieldkit"


def upgrade(url: str, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision``, one process at a time.

    The hub's processes (``fieldkit up``: ingest, web; the enrolment server) each migrate at
    start, and may start together: two migrating a fresh database at once both try to create
    its tables, and the loser dies ("table record already exists" — the field test's
    enrolment server did). SQLite: an exclusive ``flock`` on ``<database>.migrate.lock``;
    PostgreSQL: a session advisory lock. The second process then finds the database at head."""
    import contextlib
    import fcntl

    from alembic import command
    from alembic.config import Config
    from sqlalchemy.engine import make_url

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    parsed = make_url(url)
    with contextlib.ExitStack() as held:
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            # Beside the database, in the folder make_engine makes (0700), only its owner's.
            path = Path(f"{parsed.database}.migrate.lock")
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
            held.callback(os.close, fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif parsed.get_backend_name() == "postgresql":
            engine = create_engine(url, future=True)
            held.callback(engine.dispose)
            connection = held.enter_context(engine.connect())
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            held.callback(
                connection.execute, text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK}
            )
        command.upgrade(config, revision)
