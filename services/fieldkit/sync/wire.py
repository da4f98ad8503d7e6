"""What travels between a tablet and the hub: signed records up, acknowledgements and the
operator roster down, each signed by the hub for one tablet (``Downlink``).

Hub topics (the hub broker's ACL makes the second segment the sender's certificate CN)::

    fieldkit/<device>/up/record        one Record per message, QoS 1
    fieldkit/<device>/down/acks        Acks from hub-ingest, after its database commit
    fieldkit/<device>/up/roster        RosterRequest: the roster version the tablet holds
    fieldkit/<device>/down/operators   OperatorRoster: who may log in (argon2id hashes only)

The hub broker keeps no retained messages (R23), so the roster reaches a tablet two ways:
pushed by hub-ingest whenever the registry changes, and asked for by sync on every connect.

Everything on a ``down`` topic is a ``Downlink``: signed with the hub's downlink key (Ed25519,
``hub/downlink.key`` in the kit PKI, held by hub-ingest), whose public half the tablet pinned
at enrolment (``HUB_DOWNLINK_KEY_FILE`` in its enrolment directory). The signature covers a
fixed context, the schema version, the message type, the device it is for, when it was issued,
a random nonce and the content, so a message cannot be forged, altered, redirected to another
tablet or passed off as another type; the tablet refuses stale and repeated ones as well.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, Field, field_validator, model_validator

from fieldkit.messages import Message
from fieldkit.models import OPERATOR_ID_PATTERN, RECORD_ID_PATTERN, Strict
from fieldkit.sealing import (
    DEVICE_PATTERN,
    MUNICIPALITY_PATTERN,
    SealedPacket,
    SealingError,
    b64,
    canonical,
    unb64,
)

# The hub's downlink public key (PEM) in a tablet's enrolment directory, pinned at enrolment.
HUB_DOWNLINK_KEY_FILE = "hub-downlink.pem"
DOWNLINK_CONTEXT = b"fieldkit hub downlink v1\n"

RecordKind = Literal["packet", "statistics", "erasure", "audit", "health"]
KINDS: tuple[RecordKind, ...] = ("packet", "statistics", "erasure", "audit", "health")


def up_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/up/record"


def down_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/down/acks"


def roster_request_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/up/roster"


def roster_topic(device_id: str) -> str:
    return f"fieldkit/{device_id}/down/operators"


class Statistics(Strict):
    """One applicant's counted outcome (R21): no names, no ids, nothing that identifies."""

    site: str = Field(max_length=200)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    sex: Literal["female", "male", "other", "unknown"]
    age_band: str = Field(pattern=r"^(\d{1,3}-\d{1,3}|\d{1,3}\+|unknown)$")
    mode: Literal["support", "reception"]
    # declined: the applicant did not agree to the terms (R2), so no application was made;
    # abandoned: stopped by the staff or by the idle timeout. Counted apart (issue 21).
    outcome: Literal["applied", "forwarded", "declined", "abandoned"]
    # The visit (facility and day) staff chose on the tablet for the day (issue 23 item 2);
    # None from a tablet that had no visit planned, or from before it could choose.
    visit_id: int | None = Field(default=None, ge=1)


class AuditEvent(Strict):
    """Who did what (R14), never whose data."""

    at: float
    actor: str = Field(max_length=100)
    action: str = Field(max_length=100)
    outcome: str = Field(default="ok", max_length=100)
    detail: dict[str, str | int | float | bool] = {}


class ErasureEvidence(Strict):
    """A signed erasure record from the wipe service (R24), carried as the wipe wrote it."""

    at: float
    level: Literal["session", "daily", "contract-end"]
    verified: bool
    record: dict[str, Any] = {}


# The kernel audit trail's keys (ansible/roles/integrity, 50-fieldkit.rules): a summary names
# these and counts any other key as "other". Keys name rules, never what a rule saw.
AUDIT_KEYS: tuple[str, ...] = (
    "identity",
    "scope",
    "time-change",
    "system-locale",
    "kernel_modules",
    "mounts",
    "perm_mod",
    "access",
    "delete",
    "logins",
    "session",
    "privileged",
    "user_emulation",
    "fieldkit-policy",
    "other",
)
# Programs a summary may name (the privileged commands and the system tools the rules watch):
# system paths, the same on every tablet. Any other program is counted as "other", so a path
# in a user's folder or a script's name never leaves the tablet.
AUDIT_PROGRAMS: tuple[str, ...] = (
    "/usr/bin/kmod",
    "/usr/bin/mount",
    "/usr/bin/umount",
    "/usr/bin/su",
    "/usr/bin/sudo",
    "/usr/bin/passwd",
    "/usr/bin/chsh",
    "/usr/bin/chfn",
    "/usr/bin/gpasswd",
    "/usr/bin/newgrp",
    "/usr/bin/chage",
    "/usr/bin/expiry",
    "/usr/bin/crontab",
    "/usr/bin/hostname",
    "/usr/bin/date",
    "/usr/bin/timedatectl",
    "/usr/bin/systemctl",
    "/usr/sbin/unix_chkpwd",
    "/usr/sbin/pam_extrausers_chkpwd",
    "/usr/sbin/useradd",
    "/usr/sbin/usermod",
    "/usr/sbin/userdel",
    "/usr/sbin/groupadd",
    "/usr/sbin/groupmod",
    "/usr/sbin/auditctl",
    "/usr/sbin/auditd",
    "/usr/sbin/augenrules",
    "/usr/bin/aide",
    "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
    "/usr/lib/openssh/ssh-keysign",
    "/usr/lib/polkit-1/polkit-agent-helper-1",
    "/usr/lib/chromium/chrome-sandbox",
    "/usr/lib/systemd/systemd",
    "/usr/lib/systemd/systemd-timesyncd",
    "/usr/sbin/nft",
    "/usr/sbin/usbguard-daemon",
    "/usr/sbin/cupsd",
    "other",
)
_AUDIT_COUNT = Field(ge=0, le=1_000_000_000)


def _known(values: dict[str, int], allowed: tuple[str, ...], what: str) -> dict[str, int]:
    for name, count in values.items():
        if name not in allowed:
            raise ValueError(f"{what} not on the allow-list")
        if not 0 <= count <= 1_000_000_000:
            raise ValueError(f"{what} count out of range")
    return values


class KernelAuditSummary(Strict):
    """What the kernel audit trail recorded since the last summary (issue 19 item 2): counts
    per rule key and per program on a fixed allow-list, and the trail's own state. Never a
    command's arguments, a file name or a user's name."""

    # The previous summary's time (None: the first since the tablet's audit log began).
    since: float | None = None
    events: int = _AUDIT_COUNT
    # Events whose outcome was a failure (a refused access, a failed login).
    failed: int = _AUDIT_COUNT
    # ANOM_* events: the kernel's or a tool's own anomaly reports (AIDE's failed check is one).
    anomalies: int = _AUDIT_COUNT
    keys: dict[str, int] = Field(default_factory=dict, max_length=len(AUDIT_KEYS))
    programs: dict[str, int] = Field(default_factory=dict, max_length=len(AUDIT_PROGRAMS))
    # The kernel's audit state (auditctl -s): 2 = rules locked until reboot.
    enabled: int = Field(ge=0, le=2)
    daemon: Literal["running", "stopped"]
    # Events the kernel dropped since boot (backlog full, rate limit), and since the last
    # summary of the same boot (None: first summary of this boot).
    lost: int = _AUDIT_COUNT
    lost_since: int | None = Field(default=None, ge=0, le=1_000_000_000)
    backlog: int = _AUDIT_COUNT

    @field_validator("keys")
    @classmethod
    def _keys_known(cls, value: dict[str, int]) -> dict[str, int]:
        return _known(value, AUDIT_KEYS, "audit key")

    @field_validator("programs")
    @classmethod
    def _programs_known(cls, value: dict[str, int]) -> dict[str, int]:
        return _known(value, AUDIT_PROGRAMS, "program")


# AIDE's baseline leaves out the encrypted data volume, so a changed path is a system file's
# name, never an applicant's; a path under the volume is refused all the same.
DATA_VOLUME = "/var/lib/fieldkit"
INTEGRITY_PATHS_MAX = 20


class IntegrityChange(Strict):
    path: str = Field(pattern=r"^/[^\x00-\x1f\x7f]{0,510}$")
    change: Literal["added", "removed", "changed"]

    @field_validator("path")
    @classmethod
    def _not_on_the_data_volume(cls, value: str) -> str:
        if value == DATA_VOLUME or value.startswith(DATA_VOLUME + "/"):
            raise ValueError("a path on the data volume is never reported")
        return value


class FileIntegrity(Strict):
    """One file-integrity check against the image's AIDE baseline (issue 19 item 3)."""

    ok: bool
    # AIDE's exit status: 0 no change; 1-7 added (1), removed (2), changed (4); 14-21 errors.
    exit_status: int = Field(ge=0, le=255)
    entries: int = _AUDIT_COUNT
    added: int = _AUDIT_COUNT
    removed: int = _AUDIT_COUNT
    changed: int = _AUDIT_COUNT
    # The first INTEGRITY_PATHS_MAX changed paths (sorted); the counts above say how many.
    paths: list[IntegrityChange] = Field(default_factory=list, max_length=INTEGRITY_PATHS_MAX)
    # The baseline database's SHA-256 as AIDE reports it (base64), to tell baselines apart.
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+/]{43}=$")
    # Why the check could not run (AIDE's own words are not sent: they may hold paths).
    error: Literal["aide-failed", "no-baseline", "unreadable-report"] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ok != (self.added + self.removed + self.changed == 0 and self.error is None):
            raise ValueError("ok must say no change and no error, and only then")
        if len(self.paths) > self.added + self.removed + self.changed:
            raise ValueError("more paths than changes")
        return self


class DeviceHealth(Strict):
    at: float
    services: dict[str, str] = {}
    antivirus: dict[str, str | int | float | bool] = {}
    detail: dict[str, str | int | float | bool] = {}
    # From the tablet's root-run reporters, forwarded by sync (docs/sync.md "Kernel audit
    # and file integrity"); None in every other health report.
    kernel_audit: KernelAuditSummary | None = None
    integrity: FileIntegrity | None = None


BODY_MODELS: dict[str, type[BaseModel]] = {
    "packet": SealedPacket,
    "statistics": Statistics,
    "erasure": ErasureEvidence,
    "audit": AuditEvent,
    "health": DeviceHealth,
}


class Record(Message):
    """The unit the outbox keeps and the hub stores exactly once, signed by the device."""

    type: Literal["record"] = "record"
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_PATTERN)
    kind: RecordKind
    created_at: float
    body: dict[str, Any]
    signature: str = ""

    def signed_part(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))

    def signed(self, key: ed25519.Ed25519PrivateKey) -> Record:
        return self.model_copy(update={"signature": b64(key.sign(self.signed_part()))})

    def verify(self, key: ed25519.Ed25519PublicKey) -> None:
        try:
            key.verify(unb64(self.signature, "signature"), self.signed_part())
        except InvalidSignature:
            raise SealingError("record signature does not verify") from None


class DownlinkRefused(Exception):
    """A message from the hub the tablet will not act on; ``reason`` says why (no content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Downlink(Message):
    """Base of every message the hub sends down to a tablet (issue 17 item 3).

    ``device_id`` and ``nonce`` are set when the hub signs it for one tablet; ``issued_at`` is
    the hub's time for it (for a roster: when the hub first had that version). The signature
    covers them with everything else, the type and the schema version too."""

    device_id: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9-]{0,62})?$")
    issued_at: float = 0.0
    nonce: str = Field(default="", pattern=r"^([0-9a-f]{32})?$")
    signature: str = Field(default="", max_length=200)

    def signed_part(self) -> bytes:
        return DOWNLINK_CONTEXT + canonical(self.model_dump(exclude={"signature"}))

    def signed_for(self, device_id: str, key: ed25519.Ed25519PrivateKey) -> Self:
        """This message for ``device_id``, with a fresh nonce, signed with the downlink key."""
        stamped = self.model_copy(
            update={"device_id": device_id, "nonce": secrets.token_hex(16), "signature": ""}
        )
        return stamped.model_copy(update={"signature": b64(key.sign(stamped.signed_part()))})

    def verify(self, key: ed25519.Ed25519PublicKey, device_id: str) -> None:
        """Raise ``DownlinkRefused`` unless ``key`` signed exactly this for ``device_id``."""
        if not self.signature:
            raise DownlinkRefused(f"unsigned {self.type}")
        try:
            key.verify(unb64(self.signature, "signature"), self.signed_part())
        except (InvalidSignature, SealingError):
            raise DownlinkRefused(
                f"{self.type} not signed by the hub key pinned at enrolment"
            ) from None
        if self.device_id != device_id:
            raise DownlinkRefused(f"{self.type} signed for another device ({self.device_id})")


class Ack(Strict):
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    outcome: Literal["stored", "duplicate", "refused"]
    reason: str = ""


class Acks(Downlink):
    """The hub's answer for a batch of records, sent only after its database commit."""

    type: Literal["acks"] = "acks"
    items: list[Ack]


class RosterOperator(Strict):
    """One tablet operator from the hub's handler registry (R13, R22)."""

    id: str = Field(pattern=OPERATOR_ID_PATTERN)
    name: str = Field(min_length=1, max_length=100)
    duty: Literal["responsible", "handler"]
    password_hash: str = Field(pattern=r"^\$argon2id\$", max_length=200)
    disabled: bool


class RosterVisit(Strict):
    """One planned visit (a facility on a day, issue 23 item 2): what a tablet's staff choose
    from at the start of the day. Nothing about applicants."""

    id: int = Field(ge=1)
    device_id: str = Field(min_length=1, max_length=63)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    facility: str = Field(min_length=1, max_length=200)
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    kind: str = Field(max_length=32)
    start_time: str = Field(default="", pattern=r"^(\d{2}:\d{2})?$")
    end_time: str = Field(default="", pattern=r"^(\d{2}:\d{2})?$")


class RosterReceiver(Strict):
    """One municipality's receiver key (its public X25519 sealing key, PEM), as imported on the
    hub: what a tablet seals application packets to. Public material only: the hub never holds
    a municipality's private key, and a tablet refuses a roster carrying anything else."""

    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    public_key: str = Field(min_length=1, max_length=1_000)


class OperatorRoster(Downlink):
    """Every operator of the programme, as the hub's registry holds them, the planned visits
    of the coming days (``visits``: every device's; a tablet offers its own), and the
    municipalities' receiver keys (``receivers``: every key imported on the hub, issue 21).

    ``receivers`` is None in a roster that says nothing of keys (the tablet keeps the ones it
    has); a list is the whole set: sync writes each into ``<bundle>/receivers/<code>.pem`` and
    removes a key no longer there, so a key imported after enrolment reaches the tablet with
    the next roster (``fieldkit.sync.receivers``).

    ``version`` is a digest of all three (the same registry, plan and keys give the same version);
    ``issued_at`` is when the hub first saw that version, so a tablet keeps the newest.
    An empty ``version`` means "no roster yet" (sync's answer before the hub has sent one).
    Sent down, it is signed for the tablet (``Downlink``); the one handed over at enrolment
    comes over the enrolment's pinned TLS instead and is kept unsigned.
    """

    type: Literal["operator-roster"] = "operator-roster"
    version: str = Field(pattern=r"^([0-9a-f]{64})?$")
    issued_at: float
    operators: list[RosterOperator] = Field(default=[], max_length=10_000)
    visits: list[RosterVisit] = Field(default=[], max_length=10_000)
    receivers: list[RosterReceiver] | None = Field(default=None, max_length=2_000)

    def expected_version(self) -> str:
        """The version its content gives (a roster whose ``version`` differs is refused)."""
        return roster_version(self.operators, self.visits, self.receivers)


def roster_version(
    operators: list[RosterOperator],
    visits: Sequence[RosterVisit] = (),
    receivers: Sequence[RosterReceiver] | None = None,
) -> str:
    ordered = sorted((o.model_dump() for o in operators), key=lambda o: str(o["id"]))
    data: dict[str, Any] = {"operators": ordered}
    if visits:  # a roster without visits keeps the version it had before visits were sent
        data["visits"] = sorted((v.model_dump() for v in visits), key=lambda v: int(v["id"]))
    if receivers is not None:  # a new key, a removed or replaced one: a new version
        data["receivers"] = sorted(
            (r.model_dump() for r in receivers), key=lambda r: str(r["municipality"])
        )
    return hashlib.sha256(canonical(data)).hexdigest()


class DeviceStatus(Strict):
    """What a tablet says of itself for the hub's device page (issue 21): when, its software
    version and what its outbox holds. Counts and times only: nothing about any applicant."""

    at: float
    version: str = Field(pattern=r"^[0-9A-Za-z.+-]{1,40}$")
    # Records not yet acknowledged by the hub (waiting or sent, not refused).
    outbox_pending: int = Field(ge=0, le=100_000_000)
    # Records the hub refused, kept on the tablet for the operator to see.
    outbox_refused: int = Field(default=0, ge=0, le=100_000_000)
    # When the oldest record still in the outbox was made.
    outbox_oldest_at: float | None = None


class RosterRequest(Message):
    """Sent by sync on every connect and every ``status_interval`` while connected: the hub
    answers with the roster unless the tablet is up to date, and keeps the tablet's status
    (its latest only, in ``device_status``) for the device page."""

    type: Literal["roster-request"] = "roster-request"
    have: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    status: DeviceStatus | None = None
