"""The hub web app's tables, on the hub database's ``Base`` (migrations 0002, 0006, 0007).

Web accounts and the handler registry hold argon2id hashes only. The web audit log is a hash
chain: each entry's hash covers the previous entry's hash, so an edited or deleted row shows.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
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
    # Card issuance support (R20): cards handed over at this visit, recorded after it.
    cards_issued: Mapped[int] = mapped_column(Integer, default=0)
    # The site lead's remarks for the day's work log (業務日誌), added after the visit.
    remarks: Mapped[str] = mapped_column(Text, default="")


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
    # The municipality's receipt returned the token sealed in this packet: it decrypted it
    # (False only for v1 packets, sealed before the token existed: bundle hash only).
    decrypted: Mapped[bool] = mapped_column(Boolean, server_default=false())


class IncidentRow(Base):
    """An incident report (R25): what happened, how much, where and how, and what was done."""

    __tablename__ = "incident"
    __table_args__ = (UniqueConstraint("source", name="uq_incident_source"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reported_at: Mapped[float] = mapped_column(Float)
    reported_by: Mapped[str] = mapped_column(String(64))
    occurred_on: Mapped[str] = mapped_column(String(10))
    what: Mapped[str] = mapped_column(Text)
    how_much: Mapped[str] = mapped_column(Text)
    location: Mapped[str] = mapped_column(Text)
    how: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)
    # "draft": raised by the hub from a device alarm, for the admin to complete; "reported".
    status: Mapped[str] = mapped_column(String(16), default="reported")
    # The alarm a draft was raised from (kind and record, device or day): unique, so it is
    # raised once even when two workers look at once. None for an incident a person reported.
    source: Mapped[str | None] = mapped_column(String(200), default=None)


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


class ContractRow(Base):
    """The contract's details (R27), entered once by the admin: the forms 様式1-4 are made
    from them. One row (``id`` 1); changes are audited."""

    __tablename__ = "contract"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    work_name: Mapped[str] = mapped_column(String(200))
    # The addressee of every form, e.g. 長野県知事 阿部 守一.
    client: Mapped[str] = mapped_column(String(200))
    signed_on: Mapped[str] = mapped_column(String(10))
    started_on: Mapped[str] = mapped_column(String(10))
    period_start: Mapped[str] = mapped_column(String(10))
    period_end: Mapped[str] = mapped_column(String(10))
    completed_on: Mapped[str] = mapped_column(String(10))
    amount_yen: Mapped[int] = mapped_column(Integer)
    contractor_address: Mapped[str] = mapped_column(String(300))
    contractor_name: Mapped[str] = mapped_column(String(200))
    representative: Mapped[str] = mapped_column(String(100))
    # 業務実施代理人 (様式3): the responsible agent, an employee of the contractor.
    agent_name: Mapped[str] = mapped_column(String(100))
    agent_title: Mapped[str] = mapped_column(String(100))
    work_summary: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(64))


class DocumentRow(Base):
    """A document the hub generated for the prefecture, kept as generated: each generation is
    a new version; the SHA-256 of the bytes is listed so a printed or mailed copy can be
    matched to the one kept."""

    __tablename__ = "paper_document"
    __table_args__ = (UniqueConstraint("kind", "version", name="uq_paper_document_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    version: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(100))
    mimetype: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class ReceiptRow(Base):
    """An uploaded receipt (PDF, JPEG or PNG), stored once however many expense lines cite
    it: its SHA-256 is the key that finds it again."""

    __tablename__ = "receipt"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    mimetype: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    uploaded_at: Mapped[float] = mapped_column(Float)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)


class ExpenseRow(Base):
    """A line of 業務経費支出一覧 (specification §7, §8): when, which category, to whom, what,
    how much, and its receipt."""

    __tablename__ = "expense"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spent_on: Mapped[str] = mapped_column(String(10), index=True)
    category: Mapped[str] = mapped_column(String(32))
    payee: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500))
    amount_yen: Mapped[int] = mapped_column(Integer)
    receipt_id: Mapped[int] = mapped_column(ForeignKey("receipt.id"))
    created_at: Mapped[float] = mapped_column(Float)
    created_by: Mapped[str] = mapped_column(String(64))


class PaperDestructionRow(Base):
    """Paper holding personal data destroyed (特記事項 第11; R24): when, what and how much, how,
    by which registered staff member, before which witness."""

    __tablename__ = "paper_destruction"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destroyed_on: Mapped[str] = mapped_column(String(10), index=True)
    what: Mapped[str] = mapped_column(String(300))
    quantity: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(32))
    staff: Mapped[str] = mapped_column(String(32))
    witness: Mapped[str] = mapped_column(String(100))
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[float] = mapped_column(Float)
