"""The hub web app's tables, on the hub database's ``Base`` (migrations 0002, 0006).

Web accounts and the handler registry hold argon2id hashes only. The web audit log is a hash
chain: each entry's hash covers the previous entry's hash, so an edited or deleted row shows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fieldkit.hub.db import Base

ROLES = ("admin", "municipality", "auditor")
FACILITY_KINDS = ("welfare", "medical", "public", "post-office", "other")
VISIT_KINDS = ("application-support", "card-issuance-support")
DUTIES = ("responsible", "handler")


class AccountRow(Base):
    """A person who logs in to the hub web app."""

    __tablename__ = "web_account"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    # Municipality codes a municipality user may see (empty for admin and auditor).
    municipalities: Mapped[list[str]] = mapped_column(JSON)
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[float] = mapped_column(Float)
    # In every session's user id: bumped at logout, disable and second-factor reset, so a
    # cookie copied before then no longer loads the account.
    session_generation: Mapped[int] = mapped_column(Integer, default=0)
    # RFC 6238 secret (base32); set at the first login, confirmed by a first code.
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True, default=None)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # The last 30-second counter a code was accepted for: no code works twice.
    totp_last_counter: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)


class LoginAttemptRow(Base):
    """A failed login step, or a completed login, from one address (throttling's counts).

    ``username`` is set only for a name that exists: a name nobody has may be a password
    typed into the wrong field, so it is not kept."""

    __tablename__ = "login_attempt"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    address: Mapped[str] = mapped_column(String(64), index=True)
    username: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool] = mapped_column(Boolean)


class LoginBlockRow(Base):
    """A throttle in force: one account from one address, one address, or everyone
    (``global``: only addresses with a recent login may try)."""

    __tablename__ = "login_block"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64))
    since: Mapped[float] = mapped_column(Float)
    until: Mapped[float] = mapped_column(Float, index=True)


class WebAuditRow(Base):
    __tablename__ = "web_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class OperatorRow(Base):
    """A tablet operator in the handler registry (R13, R22): 責任者 or 従事者."""

    __tablename__ = "operator"
    operator_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    duty: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean)
    updated_at: Mapped[float] = mapped_column(Float)


class FacilityRow(Base):
    __tablename__ = "facility"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    municipality: Mapped[str] = mapped_column(String(6))
    address: Mapped[str] = mapped_column(String(300))


class VisitRequestRow(Base):
    __tablename__ = "visit_request"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"))
    received_on: Mapped[str] = mapped_column(String(10))
    wanted_date: Mapped[str] = mapped_column(String(10))
    expected_people: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))


class VisitRow(Base):
    __tablename__ = "visit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facility.id"))
    date: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(32))
    device_id: Mapped[str] = mapped_column(String(63))
    lead: Mapped[str] = mapped_column(String(32))
    staff: Mapped[list[str]] = mapped_column(JSON)
    start_time: Mapped[str] = mapped_column(String(5))
    end_time: Mapped[str] = mapped_column(String(5))
    incidents: Mapped[str] = mapped_column(Text)


class PickupRow(Base):
    """One bundle of sealed packets a municipality user downloaded."""

    __tablename__ = "packet_pickup"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    municipalities: Mapped[list[str]] = mapped_column(JSON)
    record_ids: Mapped[list[str]] = mapped_column(JSON)
    sha256: Mapped[str] = mapped_column(String(64))
    downloaded_at: Mapped[float] = mapped_column(Float)
    confirmed_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class PacketErasureRow(Base):
    """The hub deleted a packet's ciphertext after the municipality confirmed receipt (R24)."""

    __tablename__ = "packet_erasure"
    record_id: Mapped[str] = mapped_column(ForeignKey("record.record_id"), primary_key=True)
    municipality: Mapped[str] = mapped_column(String(6))
    device_id: Mapped[str] = mapped_column(String(63))
    pickup_id: Mapped[int] = mapped_column(ForeignKey("packet_pickup.id"))
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    erased_at: Mapped[float] = mapped_column(Float)
    erased_by: Mapped[str] = mapped_column(String(64))


class IncidentRow(Base):
    """An incident report (R25): what happened, how much, where and how, and what was done."""

    __tablename__ = "incident"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reported_at: Mapped[float] = mapped_column(Float)
    reported_by: Mapped[str] = mapped_column(String(64))
    occurred_on: Mapped[str] = mapped_column(String(10))
    what: Mapped[str] = mapped_column(Text)
    how_much: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(Text)
    how: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)


class CertificateRow(Base):
    """A contract-end sanitization certificate (R24) an admin brought to the hub, as uploaded,
    with what the hub checked: the signature by the device's enrolled key, and that the
    device's erasure records the hub holds form an intact chain ending where it says."""

    __tablename__ = "sanitization_certificate"
    certificate_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    sanitized_at: Mapped[float] = mapped_column(Float, index=True)
    result: Mapped[str] = mapped_column(String(8))
    signed: Mapped[bool] = mapped_column(Boolean)
    # The chain as checked at upload; the evidence page checks it again against what the
    # hub holds when it is shown.
    chain_ok: Mapped[bool] = mapped_column(Boolean)
    chain_note: Mapped[str] = mapped_column(Text)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    uploaded_at: Mapped[float] = mapped_column(Float)
    body: Mapped[str] = mapped_column(Text)


class EnrolmentCodeRow(Base):
    """A one-time enrolment code for one device id (R16, R31): its first group names it, the
    rest is kept as an argon2id hash only. Used once, or never after ``expires_at``."""

    __tablename__ = "enrolment_code"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lookup: Mapped[str] = mapped_column(String(4), index=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    device_id: Mapped[str] = mapped_column(String(63), index=True)
    site: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    # Wrong secrets typed against this code; at the limit the code is spent.
    failures: Mapped[int] = mapped_column(Integer)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The certificate it was used for (hex), so the config request can be tied to it.
    serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
