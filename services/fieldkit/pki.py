"""The kit's own PKI: a kit CA, the hub broker's server certificate, per-device client
certificates signed from the devices' own requests, the municipalities' *public* sealing
keys (each municipality makes its key pair itself: ``fieldkit.sealing_keys``), revocation.

Layout of a PKI directory (kept by the provisioning admin)::

    ca/ca.key ca/ca.crt ca/crl.pem ca/state.json
    hub/server.key hub/server.crt hub/ingest.key hub/ingest.crt
    hub/downlink.key hub/downlink.pem   the key hub-ingest signs acks and rosters with
    hub/evidence-signing.key hub/evidence-signing.crt   the deletion-evidence documents' key,
                    certified by the kit CA for document signing (an auditor checks a copy
                    with the CA certificate alone: ``fieldkit evidence verify --ca``)
    receivers/<municipality>/public.pem   (imported; the private half never comes here)
    devices/<id>/client.crt   the device's certificate (public: its keys never leave it)
    roster.json     device id -> signing public key, certificate serial, revoked (read by ingest)

A device makes its TLS key and its Ed25519 signing key itself at enrolment
(``fieldkit.enrolment``); the hub signs its certificate request and records the signing
public key. Nothing here generates a device's private key.

The hub's downlink key (Ed25519) signs everything the hub sends a tablet; its public half goes
to every tablet at enrolment, which pins it (issue 17 item 3). Rotating it shuts every tablet
enrolled before out of the downlink until it enrols again.

Private keys are written 0600 from the first byte (``os.open`` with the mode) and their
contents never reach a log line or an exception message.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fieldkit.sealing_keys import (
    SealingKeyError,
    normalise_fingerprint,
    read_public,
    spki_fingerprint,
)

log = logging.getLogger(__name__)

INGEST_IDENTITY = "hub-ingest"
RESERVED_NAMES = frozenset({INGEST_IDENTITY, "hub", "ca"})
DEVICE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
CERT_DAYS = 825
CA_DAYS = 3650
CRL_DAYS = 30
# id-kp-documentSigning (RFC 9336): the only use the evidence signer's certificate allows.
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
EVIDENCE_KEY = "evidence-signing.key"
EVIDENCE_CERT = "evidence-signing.crt"
# The hub signs the CRL again when it has less than this left (checked every minute and at start).
CRL_RENEW_BEFORE = dt.timedelta(days=CRL_DAYS / 2)


class PkiError(Exception):
    """The PKI operation could not be done; the message says why (never key material)."""


def write_private(path: Path, data: bytes) -> None:
    """Write a secret with mode 0600 from creation on (no window with wider permissions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o644)


def replace_public(path: Path, data: bytes) -> None:
    """Write a public file that other processes read (roster, state, CRL) in one rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(name, path)


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def check_device_id(device_id: str) -> str:
    if not device_id or len(device_id) > 63 or not set(device_id) <= DEVICE_ID_CHARS:
        raise PkiError("device id must be 1-63 characters of a-z, 0-9 and '-'")
    if device_id[0] == "-" or device_id in RESERVED_NAMES:
        raise PkiError(f"device id {device_id!r} is reserved or malformed")
    return device_id


def check_municipality(code: str) -> str:
    if len(code) != 6 or not code.isdigit():
        raise PkiError("municipality code must be the 6-digit local-government code")
    return code


def key_fingerprint(public_raw: bytes) -> str:
    """Short id of a public key, to name which receiver key a packet was sealed to."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def load_x25519_public(path: Path) -> x25519.X25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, x25519.X25519PublicKey):
        raise PkiError(f"{path} is not an X25519 public key")
    return key


def load_ed25519_private(path: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PkiError(f"{path} is not an Ed25519 private key")
    return key


def load_ed25519_public(path: Path) -> ed25519.Ed25519PublicKey:
    return ed25519_public_from_pem(path.read_bytes(), str(path))


def ed25519_public_from_pem(pem: bytes, what: str = "the key") -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise PkiError(f"{what} is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PkiError(f"{what} is not an Ed25519 public key")
    return key


def public_pem(key: ed25519.Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def raw_public(key: ed25519.Ed25519PublicKey | x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_half_file(private_key: Path) -> Path:
    """Where a signing key's public half lives beside it (``device-ed25519.pub``), readable by
    the services that name it but may not read the key itself (the kiosk at enrolment)."""
    return private_key.with_suffix(".pub")


def read_public_half(private_key: Path) -> bytes | None:
    """The raw Ed25519 public half written beside ``private_key``; None when there is none."""
    try:
        pem = public_half_file(private_key).read_bytes()
    except FileNotFoundError:
        return None
    return raw_public(ed25519_public_from_pem(pem, f"{public_half_file(private_key)}"))


@dataclass(frozen=True)
class RosterEntry:
    device_id: str
    signing_public: bytes
    serial: int
    revoked: bool
    # Signing keys of the device's earlier enrolments, and the one its wipe signed with before
    # it was first enrolled (named in the enrolment request): its older records carry them.
    earlier_signing: tuple[bytes, ...] = ()

    def signing_keys_hex(self) -> set[str]:
        """Every key this device has signed with while enrolled here (hex, raw Ed25519)."""
        return {key.hex() for key in (self.signing_public, *self.earlier_signing)}


def read_roster(path: Path) -> dict[str, RosterEntry]:
    """The enrolled devices, as the hub's ingest checks them."""
    try:
        return parse_roster(path.read_bytes())
    except FileNotFoundError:
        return {}


def parse_roster(raw: bytes) -> dict[str, RosterEntry]:
    """A roster.json's devices (the hub's file, or the copy a hub backup carries)."""
    data = json.loads(raw)
    return {
        name: RosterEntry(
            device_id=name,
            signing_public=base64.b64decode(item["signing_public"]),
            serial=int(item["serial"]),
            revoked=bool(item["revoked"]),
            earlier_signing=tuple(base64.b64decode(k) for k in item.get("earlier_signing", [])),
        )
        for name, item in data.get("devices", {}).items()
    }


class KitPki:
    """One kit CA and everything it signs, in a directory.

    With ``signer`` (a socket path) the CA key is not read here: issuing a device certificate,
    revoking and signing the CRL are asked of the CA signer process (``fieldkit.casigner``,
    the only user that can read ``ca/ca.key``; issue 17 item 2). Everything else works on the
    directory's public parts as before."""

    def __init__(self, root: Path, signer: Path | None = None) -> None:
        self.root = root
        self.signer = signer

    def _ask_signer(self, op: str, **fields: object) -> dict[str, object]:
        from fieldkit.casigner import SignerError, call

        if self.signer is None:
            raise PkiError("no CA signer is configured")
        try:
            return call(self.signer, op, **fields)
        except SignerError as exc:
            raise PkiError(str(exc)) from None

    # paths ------------------------------------------------------------------------------------
    @property
    def ca_cert(self) -> Path:
        return self.root / "ca" / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def crl(self) -> Path:
        return self.root / "ca" / "crl.pem"

    @property
    def roster(self) -> Path:
        return self.root / "roster.json"

    @property
    def state_file(self) -> Path:
        return self.root / "ca" / "state.json"

    def hub_file(self, name: str) -> Path:
        return self.root / "hub" / name

    @property
    def downlink_key(self) -> Path:
        return self.hub_file("downlink.key")

    @property
    def downlink_public(self) -> Path:
        return self.hub_file("downlink.pem")

    def receiver_dir(self, municipality: str) -> Path:
        return self.root / "receivers" / municipality

    # CA ---------------------------------------------------------------------------------------
    def init(self, name: str = "fieldkit kit CA") -> None:
        """Create the CA key and certificate and an empty CRL (refuses to overwrite)."""
        if self.ca_key.exists():
            raise PkiError(f"{self.root} already holds a kit CA")
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        write_private(self.ca_key, _pem_private(key))
        write_public(self.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
        self._write_state({"revoked": []})
        self.write_crl()
        self._write_roster({})
        log.info("kit CA created in %s", self.root)

    def _load_ca(self) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        try:
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
        except FileNotFoundError:
            raise PkiError(f"no kit CA in {self.root}; run `fieldkit pki init` first") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError("the CA key is not an EC key")
        return key, cert

    def _read_state(self) -> dict[str, list[dict[str, object]]]:
        data: dict[str, list[dict[str, object]]] = json.loads(self.state_file.read_text())
        return data

    def _write_state(self, state: dict[str, list[dict[str, object]]]) -> None:
        replace_public(self.state_file, json.dumps(state, indent=1).encode())

    def _write_roster(self, devices: dict[str, dict[str, object]]) -> None:
        """Replace roster.json in one rename: ingest never reads half of it."""
        replace_public(self.roster, json.dumps({"devices": devices}, indent=1).encode())

    @contextlib.contextmanager
    def _roster_locked(self) -> Iterator[dict[str, dict[str, object]]]:
        """The roster's devices, read and (when the block ends) written under a lock: the EST
        server, the web app and `fieldkit pki revoke` change it from separate processes."""
        fd = os.open(self.root / ".roster.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            devices: dict[str, dict[str, object]] = json.loads(self.roster.read_text())["devices"]
            yield devices
            self._write_roster(devices)
        finally:
            os.close(fd)

    def crl_next_update(self) -> dt.datetime | None:
        """When the CRL lapses (mosquitto then refuses every client), or None without one."""
        try:
            crl = x509.load_pem_x509_crl(self.crl.read_bytes())
        except (FileNotFoundError, ValueError):
            return None
        return crl.next_update_utc

    def renew_crl_if_due(self, margin: dt.timedelta = CRL_RENEW_BEFORE) -> bool:
        """Sign the CRL again when it lapses within ``margin`` (or is missing or unreadable):
        a programme outlives a CRL's 30 days. True when it was renewed."""
        if self.signer is not None:
            answer = self._ask_signer("renew-crl-if-due", margin_seconds=margin.total_seconds())
            return bool(answer["renewed"])
        due = self.crl_next_update()
        if due is not None and due - _now() > margin:
            return False
        self.write_crl()
        log.info("CRL renewed: valid until %s", self.crl_next_update())
        return True

    def write_crl(self, valid_for: dt.timedelta = dt.timedelta(days=CRL_DAYS)) -> None:
        if self.signer is not None:
            self._ask_signer("write-crl", valid_days=valid_for.total_seconds() / 86400)
            return
        key, cert = self._load_ca()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + valid_for)
        )
        for item in self._read_state()["revoked"]:
            serial = int(str(item["serial"]))
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(serial)
                .revocation_date(now - dt.timedelta(minutes=5))
                .build()
            )
        crl = builder.sign(key, hashes.SHA256())
        replace_public(self.crl, crl.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        common_name: str,
        public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
        *,
        server: bool,
        dns: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
        usage: x509.ObjectIdentifier | None = None,
    ) -> x509.Certificate:
        ca_key, ca_cert = self._load_ca()
        now = _now()
        if usage is None:
            usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(ca_key, hashes.SHA256())

    # hub --------------------------------------------------------------------------------------
    def issue_hub(
        self, dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",)
    ) -> None:
        """The hub broker's server certificate, and the ingest service's client certificate."""
        for stem, cn, server in (("server", dns[0], True), ("ingest", INGEST_IDENTITY, False)):
            key = ec.generate_private_key(ec.SECP256R1())
            cert = self._issue(
                cn,
                key.public_key(),
                server=server,
                dns=dns if server else (),
                ips=ips if server else (),
            )
            write_private(self.hub_file(f"{stem}.key"), _pem_private(key))
            write_public(
                self.hub_file(f"{stem}.crt"), cert.public_bytes(serialization.Encoding.PEM)
            )
        log.info("hub certificates issued")
        self.ensure_downlink_key()
        self.issue_evidence_signer()

    # the deletion-evidence signer -------------------------------------------------------------
    @property
    def evidence_key(self) -> Path:
        return self.hub_file(EVIDENCE_KEY)

    @property
    def evidence_cert(self) -> Path:
        return self.hub_file(EVIDENCE_CERT)

    def issue_evidence_signer(self, hub_name: str = "fieldkit hub") -> x509.Certificate:
        """A new Ed25519 key for the deletion-evidence documents and its certificate from the
        kit CA, for document signing only; replaces the pair there was. Documents signed
        before stay valid: their own certificate travels inside them."""
        key = ed25519.Ed25519PrivateKey.generate()
        cert = self._issue(
            f"{hub_name} deletion evidence", key.public_key(), server=False, usage=DOCUMENT_SIGNING
        )
        # The key first, then its certificate, each renamed into place: a reader sees the old
        # pair, or the new key with the old certificate (refused as a mismatch), never half.
        aside = self.evidence_key.with_name(f".{EVIDENCE_KEY}.new")
        write_private(aside, _pem_private(key))
        os.replace(aside, self.evidence_key)
        replace_public(self.evidence_cert, cert.public_bytes(serialization.Encoding.PEM))
        log.info("deletion-evidence signer certified (serial %x)", cert.serial_number)
        return cert

    def evidence_signer(self) -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
        """The evidence key and its certificate; PkiError says what to run when they are
        missing or do not belong together."""
        try:
            key = load_ed25519_private(self.evidence_key)
            cert = x509.load_pem_x509_certificate(self.evidence_cert.read_bytes())
        except FileNotFoundError:
            raise PkiError(
                "no certified deletion-evidence key; run `fieldkit pki evidence-signer`"
            ) from None
        if raw_public(key.public_key()) != cert.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ):
            raise PkiError(
                "the deletion-evidence key and its certificate do not match; "
                "run `fieldkit pki evidence-signer` again"
            )
        return key, cert

    # the hub's downlink key ------------------------------------------------------------------
    def ensure_downlink_key(self) -> bool:
        """Make the downlink key pair unless there is one (a PKI from before issue 17 item 3
        gets one when a hub process starts). True when it was made now."""
        made = False
        if not self.downlink_key.exists():
            written = self._written_aside(ed25519.Ed25519PrivateKey.generate())
            try:
                # A hard link appears whole or not at all, and never over another: hub
                # processes starting at once end with one key, the first one's.
                os.link(written, self.downlink_key)
                made = True
            except FileExistsError:
                pass
            finally:
                written.unlink()
        if made or not self.downlink_public.exists():
            # Its public half, from the key on disk: whoever made it may not have written it
            # yet (or stopped before it did); every writer writes the same bytes.
            key = load_ed25519_private(self.downlink_key)
            replace_public(self.downlink_public, public_pem(key.public_key()))
        if made:
            log.info("hub downlink key made (fingerprint %s)", self.downlink_fingerprint())
        return made

    def rotate_downlink_key(self) -> str:
        """A new downlink key pair in place of the old; its fingerprint. Tablets enrolled
        before refuse what the hub sends them until they enrol again."""
        key = ed25519.Ed25519PrivateKey.generate()
        written = self._written_aside(key)
        # The public half first: an enrolment in between hands out the new key, which the
        # hub signs with a moment later, rather than the old one it no longer uses.
        replace_public(self.downlink_public, public_pem(key.public_key()))
        os.replace(written, self.downlink_key)
        fingerprint = self.downlink_fingerprint()
        log.warning(
            "hub downlink key rotated (fingerprint %s): enrol every tablet again", fingerprint
        )
        return fingerprint

    def _written_aside(self, key: ed25519.Ed25519PrivateKey) -> Path:
        """The key in a new 0600 file beside the downlink key, on disk, to be renamed in."""
        self.downlink_key.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".downlink.key.", dir=self.downlink_key.parent)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, _pem_private(key))
            os.fsync(fd)
        finally:
            os.close(fd)
        return Path(name)

    def downlink_public_pem(self) -> bytes:
        """The downlink public key every tablet pins at enrolment (PEM)."""
        try:
            pem = self.downlink_public.read_bytes()
        except FileNotFoundError:
            raise PkiError(f"no hub downlink key in {self.root}; run `fieldkit pki init`") from None
        ed25519_public_from_pem(pem, "the hub downlink key")
        return pem

    def downlink_fingerprint(self) -> str:
        return key_fingerprint(raw_public(ed25519_public_from_pem(self.downlink_public_pem())))

    # receivers --------------------------------------------------------------------------------
    def import_receiver(self, municipality: str, public_pem: bytes, fingerprint: str) -> str:
        """Register the public sealing key a municipality made (``fieldkit packet keygen``).

        ``fingerprint`` is the one the municipality read out over another channel; a key whose
        fingerprint differs, or a file holding a private key, is refused. The hub never holds a
        municipality's private key. Returns the fingerprint."""
        check_municipality(municipality)
        try:
            key = read_public(public_pem)
            expected = normalise_fingerprint(fingerprint)
        except SealingKeyError as exc:
            raise PkiError(str(exc)) from None
        actual = spki_fingerprint(key)
        if actual != expected:
            raise PkiError(
                f"the key's fingerprint is {actual}, not the {expected} the municipality gave: "
                "not imported (ask the municipality again, by telephone or in person)"
            )
        target = self.receiver_dir(municipality) / "public.pem"
        if target.exists():
            raise PkiError(
                f"a sealing key for {municipality} is registered already ({target}); "
                "remove that folder first to replace it"
            )
        write_public(
            target,
            key.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )
        log.info("sealing key for %s imported (fingerprint %s)", municipality, actual)
        return actual

    def receiver_key_ids(self) -> dict[str, str]:
        """The key id (``SealedPacket.receiver_key``) of each municipality's registered key."""
        ids: dict[str, str] = {}
        for code, pem in self.receivers().items():
            key = serialization.load_pem_public_key(pem)
            if isinstance(key, x25519.X25519PublicKey):
                ids[code] = key_fingerprint(raw_public(key))
        return ids

    # devices ----------------------------------------------------------------------------------
    def device_cert(self, device_id: str) -> Path:
        """The device's current client certificate (public; the hub keeps no device key)."""
        return self.root / "devices" / device_id / "client.crt"

    def device_active(self, device_id: str) -> bool:
        entry = read_roster(self.roster).get(device_id)
        return entry is not None and not entry.revoked

    def issue_device(
        self,
        device_id: str,
        csr: x509.CertificateSigningRequest,
        signing_public: bytes,
        *,
        prior_signing: bytes | None = None,
    ) -> x509.Certificate:
        """Sign a device's certificate request and register its Ed25519 signing key.

        The device made both key pairs itself; only their public halves reach the hub. The
        certificate's CN is the device id the enrolment code is bound to, whatever the
        request's subject says. A device still active must be revoked first.
        ``prior_signing``: the key the device's wipe signed with before this enrolment; it is
        kept among the device's earlier signing keys, so those erasure records verify here.
        """
        check_device_id(device_id)
        if not csr.is_signature_valid:
            raise PkiError("the certificate request's signature does not verify")
        if self.signer is not None:
            answer = self._ask_signer(
                "issue-device",
                device=device_id,
                csr=csr.public_bytes(serialization.Encoding.PEM).decode(),
                signing_public=base64.b64encode(signing_public).decode(),
                prior_signing=base64.b64encode(prior_signing).decode() if prior_signing else "",
            )
            return x509.load_pem_x509_certificate(str(answer["certificate"]).encode())
        public = csr.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise PkiError("the certificate request must carry an EC P-256 key")
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(signing_public)
            if prior_signing is not None:
                ed25519.Ed25519PublicKey.from_public_bytes(prior_signing)
        except ValueError:
            raise PkiError("the signing key is not an Ed25519 public key") from None
        with self._roster_locked() as roster:
            if device_id in roster and not roster[device_id]["revoked"]:
                raise PkiError(f"device {device_id} is enrolled already; revoke it first")
            cert = self._issue(device_id, public, server=False)
            write_public(self.device_cert(device_id), cert.public_bytes(serialization.Encoding.PEM))
            earlier: list[str] = []
            if device_id in roster:  # re-enrolled after a revoke: older records keep the old key
                before = roster[device_id]
                earlier = [
                    *cast(list[str], before.get("earlier_signing", [])),
                    str(before["signing_public"]),
                ]
            if prior_signing is not None and prior_signing != signing_public:
                prior = base64.b64encode(prior_signing).decode()
                earlier += [] if prior in earlier else [prior]
            roster[device_id] = {
                "signing_public": base64.b64encode(signing_public).decode(),
                "serial": cert.serial_number,
                "revoked": False,
                "earlier_signing": earlier,
            }
        log.info("device %s enrolled (certificate serial %x)", device_id, cert.serial_number)
        return cert

    def receivers(self) -> dict[str, bytes]:
        """Every municipality's public sealing key (PEM), by municipality code."""
        return {
            path.parent.name: path.read_bytes()
            for path in sorted((self.root / "receivers").glob("*/public.pem"))
        }

    def revoke(self, device_id: str) -> int:
        """Put the device's certificate on the CRL and mark it revoked in the roster."""
        if self.signer is not None:
            return int(str(self._ask_signer("revoke", device=device_id)["serial"]))
        with self._roster_locked() as roster:
            if device_id not in roster:
                raise PkiError(f"device {device_id} is not enrolled")
            serial = int(str(roster[device_id]["serial"]))
            state = self._read_state()
            if all(item["serial"] != serial for item in state["revoked"]):
                state["revoked"].append({"serial": serial, "device": device_id})
                self._write_state(state)
            roster[device_id]["revoked"] = True
        self.write_crl()
        log.info("device %s revoked (certificate serial %x)", device_id, serial)
        return serial

    def revoked_serials(self) -> list[int]:
        crl = x509.load_pem_x509_crl(self.crl.read_bytes())
        return [entry.serial_number for entry in crl]
