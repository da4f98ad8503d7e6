"""What the tablet and the hub agree on at enrolment: the one-time code's format, the CSR
attribute that registers the tablet's Ed25519 signing key, the device-config extension, and
every refusal with the words staff see (Japanese first).

The exchange follows EST (RFC 7030): ``GET /.well-known/est/cacerts`` (4.1),
``POST /.well-known/est/simpleenroll`` (4.2.1) with a base64 DER PKCS#10 request, the
one-time code as the HTTP Basic password (3.2.3), the certificate back as base64
``application/pkcs7-mime; smime-type=certs-only`` (4.2.3). fieldkit adds
``POST /.well-known/est/fieldkit/device-config``, signed by the new signing key.
"""

from __future__ import annotations

import base64
import secrets
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field

from fieldkit.models import SiteNetwork

EST_PREFIX = "/.well-known/est"
CACERTS = f"{EST_PREFIX}/cacerts"
SIMPLEENROLL = f"{EST_PREFIX}/simpleenroll"
DEVICE_CONFIG = f"{EST_PREFIX}/fieldkit/device-config"
PKCS10 = "application/pkcs10"
PKCS7_CERTS = "application/pkcs7-mime; smime-type=certs-only"
REFUSAL_HEADER = "X-Fieldkit-Refusal"

# The CSR attribute that carries the tablet's Ed25519 signing key (an OID under 2.25, the
# UUID arc of ITU-T X.667: no registration needed). Its value is
# "ed25519:<public, base64>:<signature, base64>", the signature being the signing key's over
# SIGNING_CLAIM_CONTEXT + the request's SubjectPublicKeyInfo (DER): proof that the tablet
# holds the signing key, bound to this very request (which the TLS key signs in turn).
SIGNING_KEY_OID = x509.ObjectIdentifier("2.25.229639516417262447219412826785467371611")
SIGNING_CLAIM_CONTEXT = b"fieldkit enrolment signing key v1\n"
# The CSR attribute that names the key the tablet's wipe signed its erasure records with
# before it was enrolled (``[wipe] device_key``): "ed25519:<public, base64>". The hub lists it
# among the device's earlier signing keys, so those records and the chain through them verify
# there. It carries no proof of its own: the kiosk that enrols cannot read the wipe's private
# key, and the one-time code that authenticates this request could as well enrol any key as
# the current one; a key named here only ever vouches for records of this device id.
PRIOR_KEY_OID = x509.ObjectIdentifier("2.25.229639516417262447219412826785467371612")
CONFIG_CONTEXT = b"fieldkit enrolment device-config v1\n"

# Crockford base32: no I, L, O, U; staff may type i/l as 1 and o as 0, any case, any dashes.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TYPO = str.maketrans({"I": "1", "L": "1", "O": "0"})
CODE_GROUPS = 5  # 5 groups of 4: the first names the code, the other 16 (80 bits) are secret
GROUP = 4


class ProtocolError(Exception):
    """A message of the exchange is malformed; the text says what (never key material)."""


def new_code() -> str:
    """A fresh code, e.g. ``7K3M-Q9TX-…`` (20 symbols, 100 bits, the last 80 secret)."""
    symbols = "".join(secrets.choice(ALPHABET) for _ in range(CODE_GROUPS * GROUP))
    return "-".join(symbols[i : i + GROUP] for i in range(0, len(symbols), GROUP))


def normalise_code(typed: str) -> tuple[str, str] | None:
    """(lookup, secret) of a code as staff typed it, or None when it cannot be one."""
    text = "".join(typed.split()).replace("-", "").upper().translate(_TYPO)
    if len(text) != CODE_GROUPS * GROUP or any(c not in ALPHABET for c in text):
        return None
    return text[:GROUP], text[GROUP:]


def signing_claim(signing: ed25519.Ed25519PrivateKey, spki_der: bytes) -> str:
    public = signing.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signature = signing.sign(SIGNING_CLAIM_CONTEXT + spki_der)
    return f"ed25519:{base64.b64encode(public).decode()}:{base64.b64encode(signature).decode()}"


def signing_key_of(csr: x509.CertificateSigningRequest) -> bytes:
    """The Ed25519 signing key (raw) a request registers, after checking its proof."""
    try:
        value = csr.attributes.get_attribute_for_oid(SIGNING_KEY_OID).value
    except x509.AttributeNotFound:
        raise ProtocolError("the request does not carry the signing key attribute") from None
    try:
        kind, public_b64, signature_b64 = value.decode("ascii").split(":")
        public = base64.b64decode(public_b64, validate=True)
        signature = base64.b64decode(signature_b64, validate=True)
        key = ed25519.Ed25519PublicKey.from_public_bytes(public)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("the signing key attribute is malformed") from None
    if kind != "ed25519":
        raise ProtocolError("the signing key attribute is not an Ed25519 key")
    spki = csr.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        key.verify(signature, SIGNING_CLAIM_CONTEXT + spki)
    except InvalidSignature:
        raise ProtocolError("the signing key's proof does not verify") from None
    return public


def prior_claim(public: bytes) -> str:
    return f"ed25519:{base64.b64encode(public).decode()}"


def prior_key_of(csr: x509.CertificateSigningRequest) -> bytes | None:
    """The pre-enrolment signing key (raw) a request names, or None when it names none."""
    try:
        value = csr.attributes.get_attribute_for_oid(PRIOR_KEY_OID).value
    except x509.AttributeNotFound:
        return None
    try:
        kind, public_b64 = value.decode("ascii").split(":")
        public = base64.b64decode(public_b64, validate=True)
        ed25519.Ed25519PublicKey.from_public_bytes(public)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("the pre-enrolment key attribute is malformed") from None
    if kind != "ed25519":
        raise ProtocolError("the pre-enrolment key attribute is not an Ed25519 key")
    return public


def config_message(device_id: str, serial: int) -> bytes:
    """What the tablet signs to fetch its device config after its certificate was issued."""
    return CONFIG_CONTEXT + f"{device_id}\n{serial:x}".encode()


class ConfigRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(max_length=63)
    serial: str = Field(pattern=r"^[0-9a-f]{1,40}$")
    signature: str = Field(max_length=200)


class DeviceSettings(BaseModel):
    """The device config the hub hands the tablet at enrolment (schema 1)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    device_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    site: str = Field(default="", max_length=200)
    hub_host: str = Field(max_length=253)
    hub_port: int = Field(ge=1, le=65535)
    antivirus_mirror: str | None = Field(default=None, max_length=500)
    application_hosts: list[str] = Field(default=[], max_length=20)
    # The hub's downlink public key (Ed25519, PEM), pinned by the tablet: acks and rosters
    # signed with anything else are refused (issue 17 item 3).
    downlink_key: str = Field(min_length=1, max_length=1000)
    # Municipality code -> X25519 public key (PEM): whom packets are sealed to.
    receivers: dict[str, str] = {}
    # The operator roster (fieldkit.sync.wire.OperatorRoster as JSON), or None while empty.
    operators: str | None = None
    # The site's addresses for the tablet's allowlist, DNS, time and Wi-Fi (fieldkit.network);
    # None: the hub has none configured, and the tablet keeps its firewall as it is.
    network: SiteNetwork | None = None


Refusal = Literal[
    "bad-code",
    "code-used",
    "code-expired",
    "too-many-attempts",
    "device-active",
    "bad-request",
    "foreign-ca",
    "clock-off",
    "hub-unreachable",
    "hub-error",
    "already-enrolled",
    "not-written",
]

# What staff read: (Japanese, English). Plain words, what happened and what to do.
REFUSALS: dict[str, tuple[str, str]] = {
    "bad-code": (
        "登録コードが正しくありません。もう一度入力してください。",
        "The enrolment code is not right. Please type it again.",
    ),
    "code-used": (
        "この登録コードはもう使われています。管理者に新しいコードをもらってください。",
        "This enrolment code has been used already. Ask the administrator for a new code.",
    ),
    "code-expired": (
        "この登録コードは有効期限が切れています。管理者に新しいコードをもらってください。",
        "This enrolment code has expired. Ask the administrator for a new code.",
    ),
    "too-many-attempts": (
        "入力の間違いが多すぎます。しばらく待ってから、管理者に連絡してください。",
        "Too many wrong codes. Wait a while, then call the administrator.",
    ),
    "device-active": (
        "この端末IDはすでに登録されています。"
        "管理者が前の登録を失効させてから、もう一度登録してください。",
        "This device ID is enrolled already. "
        "The administrator must revoke it first, then enrol again.",
    ),
    "bad-request": (
        "ハブが登録の要求を受け付けませんでした。管理者に連絡してください。",
        "The hub did not accept the enrolment request. Call the administrator.",
    ),
    "foreign-ca": (
        "接続先はこのキットのハブではありません(証明書が違います)。ハブのアドレスを確かめてください。",
        "This is not your kit's hub (its certificate is from another authority). "
        "Check the hub address.",
    ),
    "clock-off": (
        "端末の日付か時刻が合っていません。日付と時刻を直してから、もう一度登録してください。",
        "The tablet's date or time is wrong. Set the date and time, then enrol again.",
    ),
    "hub-unreachable": (
        "ハブにつながりません。ハブのアドレスとネットワークを確かめてください。",
        "Cannot reach the hub. Check the hub address and the network.",
    ),
    "hub-error": (
        "ハブでエラーが起きました。しばらく待ってから、もう一度登録してください。",
        "The hub had an error. Wait a moment, then enrol again.",
    ),
    "already-enrolled": (
        "この端末はすでに登録されています。",
        "This tablet is enrolled already.",
    ),
    "not-written": (
        "登録の内容を端末に保存できませんでした。何も変更していません。管理者に連絡してください。",
        "The enrolment could not be saved on the tablet. Nothing was changed. "
        "Call the administrator.",
    ),
}


def refusal_text(code: str, lang: Literal["ja", "en"] = "ja") -> str:
    ja, en = REFUSALS.get(code, REFUSALS["hub-error"])
    return ja if lang == "ja" else en
