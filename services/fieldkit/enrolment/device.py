"""The tablet's side of enrolment: it makes its own keys, asks the hub to certify them, and
installs the result in one rename (R16, R31).

The TLS key (EC P-256) and the Ed25519 signing key are made here and never leave the tablet:
the hub gets a PKCS#10 request and the signing key's public half inside it. The TLS link to
the hub is pinned to the kit CA certificate baked into the image by provisioning
(``[enrol] ca_cert``); hostname checking stays on. Everything is written to a fresh directory
beside the target and renamed into place at the end, so a failure at any point leaves the
tablet as it was.

The enrolment directory (``[sync] bundle``) then holds::

    client.key client.crt signing.key ca.crt hub-downlink.pem receivers/<municipality>.pem
    enrolment.toml

``hub-downlink.pem`` is the hub's downlink public key, pinned here: sync acts only on acks and
rosters signed with it (issue 17 item 3). Enrolling again installs the hub's current one.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import http.client
import json
import logging
import os
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from fieldkit.enrolment.protocol import (
    CACERTS,
    DEVICE_CONFIG,
    PKCS10,
    PRIOR_KEY_OID,
    REFUSAL_HEADER,
    REFUSALS,
    SIGNING_KEY_OID,
    SIMPLEENROLL,
    DeviceSettings,
    config_message,
    prior_claim,
    refusal_text,
    signing_claim,
)
from fieldkit.models import SITE_NETWORK_FILE, site_network_toml
from fieldkit.municipalities import RECEIVERS_DIR, receiver_key_file
from fieldkit.pki import PkiError, ed25519_public_from_pem, read_public_half
from fieldkit.sharing import folder_mode, private_mode, public_folder_mode
from fieldkit.sync.wire import HUB_DOWNLINK_KEY_FILE

log = logging.getLogger(__name__)

# Further apart than this, the tablet's clock and the hub's disagree too much for
# certificates, CRLs and signed records to mean anything.
MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
TIMEOUT = 30.0
ENROLMENT_FILE = "enrolment.toml"


class EnrolmentRefused(Exception):
    """Enrolment did not happen; ``code`` names why, ``str()`` says it for staff (ja / en)."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{refusal_text(code, 'ja')} / {refusal_text(code, 'en')}")

    def words(self, lang: str) -> str:
        return refusal_text(self.code, "en" if lang == "en" else "ja")


@dataclass
class DeviceKeys:
    """The tablet's own key pairs, made at enrolment."""

    tls: ec.EllipticCurvePrivateKey
    signing: ed25519.Ed25519PrivateKey
    # The wipe's pre-enrolment signing key (raw public), when it signed records already.
    prior: bytes | None = None

    @classmethod
    def generate(cls, prior: bytes | None = None) -> DeviceKeys:
        return cls(
            ec.generate_private_key(ec.SECP256R1()), ed25519.Ed25519PrivateKey.generate(), prior
        )

    def request(self) -> x509.CertificateSigningRequest:
        """The PKCS#10 request: the TLS key, with the signing key and its proof as an attribute.

        The subject is a placeholder: the hub names the certificate after the device id the
        code is bound to (the tablet does not know it before enrolment).
        """
        spki = self.tls.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        builder = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fieldkit-tablet")]))
            .add_attribute(SIGNING_KEY_OID, signing_claim(self.signing, spki).encode())
        )
        if self.prior is not None:
            builder = builder.add_attribute(PRIOR_KEY_OID, prior_claim(self.prior).encode())
        return builder.sign(self.tls, hashes.SHA256())


def pinned_context(ca_cert: Path) -> ssl.SSLContext:
    """TLS to the hub, trusting the kit CA only (no system roots), hostname checked."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def parse_hub(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or ``host`` for 8443) as staff typed it."""
    text = address.strip()
    for prefix in ("https://", "http://"):
        text = text.removeprefix(prefix)
    text = text.rstrip("/")
    host, port = text, 8443
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:])
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = _port(number)
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise EnrolmentRefused("hub-unreachable", "the hub address is not host:port")
    return host, port


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise EnrolmentRefused("hub-unreachable", "the hub port is not a number from 1 to 65535")
    return int(text)


class HubClient:
    """One HTTPS connection's worth of EST requests to the hub, pinned to the kit CA."""

    def __init__(self, hub: str, ca_cert: Path, timeout: float = TIMEOUT) -> None:
        self.host, self.port = parse_hub(hub)
        try:
            self.context = pinned_context(ca_cert)
        except (OSError, ssl.SSLError):
            raise EnrolmentRefused(
                "foreign-ca", f"the kit CA certificate {ca_cert} is unreadable"
            ) from None
        self.timeout = timeout

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPSConnection(
            self.host, self.port, context=self.context, timeout=self.timeout
        )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            data = response.read(1024 * 1024)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        except ssl.SSLCertVerificationError as exc:
            raise tls_refusal(exc) from None
        except (OSError, http.client.HTTPException) as exc:
            raise EnrolmentRefused("hub-unreachable", exc.__class__.__name__) from None
        finally:
            connection.close()


def tls_refusal(exc: ssl.SSLCertVerificationError) -> EnrolmentRefused:
    """Why the hub's certificate was not accepted, in staff's terms."""
    # OpenSSL's X509_V_ERR_CERT_NOT_YET_VALID (9) and X509_V_ERR_CERT_HAS_EXPIRED (10): seen
    # from this tablet's clock, which is the likelier culprit on a kit a month old.
    if exc.verify_code in (9, 10):
        return EnrolmentRefused("clock-off", str(exc.verify_message))
    return EnrolmentRefused("foreign-ca", str(exc.verify_message))


def refusal_of(status: int, headers: dict[str, str]) -> EnrolmentRefused:
    code = headers.get(REFUSAL_HEADER.lower(), "")
    if code in REFUSALS:
        return EnrolmentRefused(code, f"HTTP {status}")
    return EnrolmentRefused("hub-error" if status >= 500 else "bad-request", f"HTTP {status}")


def check_clock(headers: dict[str, str], now: float | None = None) -> None:
    """Refuse when this tablet's clock is far from the hub's (the ``Date`` header)."""
    try:
        hub_time = email.utils.parsedate_to_datetime(headers["date"])
    except (KeyError, TypeError, ValueError):
        return
    mine = dt.datetime.fromtimestamp(time.time() if now is None else now, dt.UTC)
    if abs(mine - hub_time) > MAX_CLOCK_SKEW:
        raise EnrolmentRefused(
            "clock-off", f"tablet {mine:%Y-%m-%d %H:%M}, hub {hub_time:%Y-%m-%d %H:%M}"
        )


@dataclass
class Issued:
    """What the hub returned: the certificate and the device config."""

    certificate: x509.Certificate
    settings: DeviceSettings


def request_enrolment(hub: str, code: str, ca_cert: Path, keys: DeviceKeys) -> Issued:
    """EST simple enrolment with the one-time code, then the device config (signed request)."""
    client = HubClient(hub, ca_cert)
    status, headers, _ = client.call("GET", CACERTS)
    if status != 200:
        raise refusal_of(status, headers)
    check_clock(headers)
    der = keys.request().public_bytes(serialization.Encoding.DER)
    credentials = base64.b64encode(f"tablet:{code}".encode()).decode()
    status, headers, body = client.call(
        "POST",
        SIMPLEENROLL,
        base64.encodebytes(der),
        {
            "Content-Type": PKCS10,
            "Content-Transfer-Encoding": "base64",
            "Authorization": f"Basic {credentials}",
        },
    )
    if status != 200:
        raise refusal_of(status, headers)
    try:
        certificates = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    except ValueError:
        raise EnrolmentRefused("hub-error", "the hub's certificate answer is unreadable") from None
    mine = keys.tls.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    certificate = next(
        (
            c
            for c in certificates
            if c.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            == mine
        ),
        None,
    )
    if certificate is None:
        raise EnrolmentRefused("hub-error", "the hub returned a certificate for another key")
    device_id = str(certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
    message = config_message(device_id, certificate.serial_number)
    payload = json.dumps(
        {
            "device_id": device_id,
            "serial": f"{certificate.serial_number:x}",
            "signature": base64.b64encode(keys.signing.sign(message)).decode(),
        }
    ).encode()
    status, headers, body = client.call(
        "POST", DEVICE_CONFIG, payload, {"Content-Type": "application/json"}
    )
    if status != 200:
        raise refusal_of(status, headers)
    try:
        settings = DeviceSettings.model_validate_json(body)
    except ValidationError:
        raise EnrolmentRefused("hub-error", "the hub's device config is unreadable") from None
    if settings.device_id != device_id:
        raise EnrolmentRefused("hub-error", "the device config names another device")
    return Issued(certificate, settings)


def _pem_private(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def enrolment_toml(settings: DeviceSettings) -> str:
    """The device config sections enrolment sets; ``load_config`` lays them over the file."""
    lines = [
        "# Written by `fieldkit enrol` from the hub's answer; replaced at the next enrolment.",
        "[device]",
        f"id = {_toml_string(settings.device_id)}",
        f"site = {_toml_string(settings.site)}",
        "[sync]",
        f"hub_host = {_toml_string(settings.hub_host)}",
        f"hub_port = {settings.hub_port}",
    ]
    if settings.antivirus_mirror:
        lines += ["[antivirus]", f"mirror_url = {_toml_string(settings.antivirus_mirror)}"]
    if settings.application_hosts:
        hosts = ", ".join(_toml_string(h) for h in settings.application_hosts)
        lines += ["[kiosk]", f"online_application_hosts = [{hosts}]"]
    return "\n".join(lines) + "\n"


def install(
    target: Path,
    keys: DeviceKeys,
    certificate: x509.Certificate,
    ca_cert: Path,
    settings: DeviceSettings,
    roster_path: Path | None = None,
    *,
    device_config: bool = True,
) -> Path:
    """Write the enrolment directory atomically: all of it, or (on any failure) nothing.

    A previous enrolment directory (the tablet was revoked and is enrolled again) is replaced
    in the same step; its keys are removed afterwards. ``device_config=False`` leaves out
    ``enrolment.toml`` (a test kit whose config file sets the hub address itself).
    """
    # On a tablet ``/etc/fieldkit/bundle`` is a link into the data volume: the bundle is
    # replaced where the link points, and the link stays.
    target = target.resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    old: Path | None = None
    try:
        # Every service reads the public parts (enrolment.toml, certificates, the receivers'
        # keys): each needs the device's id and hub. On a tablet the folder is the kiosk's and
        # sync's (fieldkit.sharing): the private keys and the roster are readable by those two
        # only; elsewhere they are 0600. The site network is 0600 (root applies it).
        # In the shared folder the staging folder took the group and the set-group-ID bit from
        # it: what is written below takes the group too. Its final mode is set last.
        private = private_mode(target.parent)
        owner = target.parent.stat()
        _write(staging / "client.key", _pem_private(keys.tls), private)
        _write(staging / "signing.key", _pem_private(keys.signing), private)
        _write(staging / "client.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(staging / "ca.crt", ca_cert.read_bytes(), 0o644)
        try:
            ed25519_public_from_pem(settings.downlink_key.encode(), "the hub's downlink key")
        except PkiError as exc:
            raise EnrolmentRefused("hub-error", str(exc)) from None
        _write(staging / HUB_DOWNLINK_KEY_FILE, settings.downlink_key.encode(), 0o644)
        (staging / RECEIVERS_DIR).mkdir()
        os.chmod(staging / RECEIVERS_DIR, public_folder_mode(staging))
        for municipality, pem in sorted(settings.receivers.items()):
            if not (len(municipality) == 6 and municipality.isdigit()):
                raise EnrolmentRefused("hub-error", "a receiver has no municipality code")
            _write(receiver_key_file(staging, municipality), pem.encode(), 0o644)
        if device_config:
            _write(staging / ENROLMENT_FILE, enrolment_toml(settings).encode(), 0o644)
        if settings.network is not None:
            # 0600: it may hold the site's Wi-Fi passphrase. `fieldkit network apply` reads it.
            _write(staging / SITE_NETWORK_FILE, site_network_toml(settings.network).encode(), 0o600)
        if settings.operators is not None and roster_path is not None:
            roster_path.parent.mkdir(parents=True, exist_ok=True)
            _write(staging / "operators.json", settings.operators.encode(), private)
        if os.geteuid() == 0 and owner.st_uid != 0:
            # `fieldkit enrol` as root: the bundle belongs to the folder's owner, the services'
            # user, who must read its keys (the kiosk's screen writes it as that user).
            for path in (staging, *staging.rglob("*")):
                os.chown(path, owner.st_uid, owner.st_gid)
        os.chmod(staging, folder_mode(target.parent))
        directory = os.open(staging, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / target.name)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not target.exists():
            os.rename(old / target.name, target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    if roster_path is not None and (target / "operators.json").exists():
        # The roster lives where sync keeps it; copied in one rename too.
        temporary = roster_path.with_name(f".{roster_path.name}.tmp")
        shutil.copyfile(target / "operators.json", temporary)
        os.chmod(temporary, private_mode(roster_path.parent))
        folder = roster_path.parent.stat()
        if os.geteuid() == 0 and folder.st_uid != 0:
            os.chown(temporary, folder.st_uid, folder.st_gid)
        os.replace(temporary, roster_path)
    return target


def is_enrolled(directory: Path) -> bool:
    """Whether this tablet holds an enrolment (certificate and both keys)."""
    return all((directory / name).is_file() for name in ("client.crt", "client.key", "signing.key"))


def enrol(
    hub: str,
    code: str,
    ca_cert: Path,
    target: Path,
    roster_path: Path | None = None,
    *,
    replace: bool = False,
    prior_key: Path | None = None,
) -> DeviceSettings:
    """Enrol this tablet: keys made here, certified by the hub, installed atomically.

    ``prior_key``: the wipe's pre-enrolment signing key (``[wipe] device_key``); when the wipe
    made it already, its public half is named in the request, so the hub accepts the erasure
    records signed before this enrolment (fieldkit.pki.read_public_half)."""
    if is_enrolled(target) and not replace:
        raise EnrolmentRefused("already-enrolled", str(target))
    if not ca_cert.is_file():
        raise EnrolmentRefused("foreign-ca", f"no kit CA certificate at {ca_cert}")
    try:
        prior = read_public_half(prior_key) if prior_key is not None else None
    except (OSError, PkiError) as exc:
        log.error("enrolment not started: the pre-enrolment key's public half: %s", exc)
        raise EnrolmentRefused("not-written", f"pre-enrolment key: {exc}") from None
    keys = DeviceKeys.generate(prior)
    issued = request_enrolment(hub, code, ca_cert, keys)
    try:
        install(target, keys, issued.certificate, ca_cert, issued.settings, roster_path)
    except OSError as exc:
        # The file and the system's reason, for whoever reads the journal (paths on this
        # device and errno words only: nothing the hub or the code sent).
        log.error(
            "enrolment not written: %s [errno %s] %s (%s)",
            exc.__class__.__name__,
            exc.errno,
            exc.strerror,
            exc.filename,
        )
        raise EnrolmentRefused("not-written", exc.__class__.__name__) from None
    log.info(
        "enrolled as %s (certificate serial %x)",
        issued.settings.device_id,
        issued.certificate.serial_number,
    )
    return issued.settings
