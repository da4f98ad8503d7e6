"""A PDF that carries its own Ed25519 signature (R24): the deletion-evidence document.

The signature is one PDF comment line after the document's ``%%EOF``: PDF readers look for
``%%EOF`` in the last kilobyte and ignore a comment after it, so the file opens as the PDF it
was. The line holds canonical JSON: what the document is (``claims``), when it was signed,
the SHA-256 of every byte before the line, the signer's public key (hex, raw Ed25519), the
signer's certificate from the kit CA (DER, base64) and the signature over the rest.

``fieldkit evidence verify FILE --ca ca.crt`` checks it offline with the kit CA's certificate
alone: the signer's certificate must be issued by that CA, allow document signing
(id-kp-documentSigning) only, be for the key that signed, and be valid when it signed. A key
or certificate taken from the file itself proves only that the file is whole, not who made
it; ``--public-key HEX`` (a key pinned from the hub's page) is the other way to say who.

This module is a leaf (cryptography and the standard library), so an auditor's machine needs
nothing of the hub.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MARK = b"\n%fieldkit-signature "
KIND = "fieldkit-signed-pdf"
# id-kp-documentSigning (RFC 9336), as ``fieldkit.pki`` issues it (this module stays a leaf).
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_hex(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


def sign(
    pdf: bytes,
    key: Ed25519PrivateKey,
    claims: dict[str, str],
    certificate: x509.Certificate | None = None,
) -> bytes:
    """The PDF with its signature line appended (and the signer's certificate in it)."""
    if not pdf.rstrip().endswith(b"%%EOF"):
        raise ValueError("not a complete PDF (no %%EOF at its end)")
    body = {
        "kind": KIND,
        "claims": claims,
        "sha256": hashlib.sha256(pdf).hexdigest(),
        "signer": public_hex(key),
        "signed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if certificate is not None:
        der = certificate.public_bytes(serialization.Encoding.DER)
        body["certificate"] = base64.b64encode(der).decode()
    signature = key.sign(_canonical(body)).hex()
    line = _canonical({**body, "signature": signature})
    if b"\n" in line:
        raise ValueError("claims must not hold line breaks")
    return pdf + MARK + line + b"\n"


@dataclass(frozen=True)
class Verified:
    claims: dict[str, str]
    signer: str
    sha256: str
    problems: list[str]
    certified: str = ""  # who the CA certified the signer as, when checked against a CA

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(data: bytes, trusted: str | None = None, ca: x509.Certificate | None = None) -> Verified:
    """Whether ``data`` is a signed PDF whose bytes are as signed; with ``trusted`` (hex), also
    that this key signed it; with ``ca``, also that the CA certified the signer for signing
    documents at the time it signed. ``problems`` says what is wrong (empty: valid)."""
    cut = data.rfind(MARK)
    if cut < 0:
        return Verified({}, "", "", ["no fieldkit signature in the file"])
    pdf, line = data[:cut], data[cut + len(MARK) :].strip()
    try:
        body = json.loads(line)
        signature = bytes.fromhex(body.pop("signature"))
        signer = str(body["signer"])
        claims = {str(k): str(v) for k, v in body["claims"].items()}
        sha256 = str(body["sha256"])
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(signer))
    except (ValueError, KeyError, TypeError, AttributeError):
        return Verified({}, "", "", ["the signature line is not readable"])
    problems = []
    if body.get("kind") != KIND:
        problems.append("not a fieldkit signed PDF")
    if hashlib.sha256(pdf).hexdigest() != sha256:
        problems.append("the document was changed after it was signed (SHA-256 differs)")
    try:
        key.verify(signature, _canonical(body))
    except InvalidSignature:
        problems.append("the signature does not verify")
    if trusted is not None and signer != trusted.strip().lower():
        problems.append("signed by a key other than the trusted one")
    certified = ""
    if ca is not None:
        certified, refused = _certified(body, signer, ca)
        problems += refused
    return Verified(claims, signer, sha256, problems, certified)


def _certified(body: dict[str, Any], signer: str, ca: x509.Certificate) -> tuple[str, list[str]]:
    """Who ``ca`` certified the signer as, and what is wrong with that certificate."""
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(body["certificate"], validate=True))
    except KeyError:
        return "", ["the file carries no certificate to check against the CA"]
    except (ValueError, TypeError):
        return "", ["the signer's certificate in the file is not readable"]
    name = cert.subject.rfc4514_string()
    problems = []
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        problems.append(f"the signer's certificate ({name}) was not issued by the given CA")
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        usages = []
    if usages != [DOCUMENT_SIGNING]:
        problems.append("the signer's certificate is not for signing documents only")
    key = cert.public_key()
    raw = (
        key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
        if isinstance(key, Ed25519PublicKey)
        else ""
    )
    if raw != signer:
        problems.append("the certificate is for another key than the one that signed")
    try:
        signed_at = dt.datetime.fromisoformat(str(body["signed_at"]))
    except (KeyError, ValueError):
        problems.append("the signature line says not when it was signed")
    else:
        if not cert.not_valid_before_utc <= signed_at <= cert.not_valid_after_utc:
            problems.append(
                f"signed at {signed_at:%Y-%m-%d %H:%M} UTC, outside the certificate's validity "
                f"({cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
            )
    issuer = ca.subject.rfc4514_string()
    return f"{name}, certified by {issuer} (serial {cert.serial_number:x})", problems


def cmd_verify(args: argparse.Namespace) -> int:
    ca = None
    if args.ca is not None:
        try:
            ca = x509.load_pem_x509_certificate(Path(args.ca).read_bytes())
        except ValueError:
            print(f"INVALID: {args.ca} is not a PEM certificate")
            return 1
    result = verify(Path(args.file).read_bytes(), args.public_key, ca)
    for name, value in sorted(result.claims.items()):
        print(f"{name}: {value}")
    if result.signer:
        print(f"signer: {result.signer}")
        print(f"sha256: {result.sha256}")
    if result.certified:
        print(f"certificate: {result.certified}")
    if result.ok and args.public_key is None and ca is None:
        print(
            "VALID as signed, but by an unchecked key: pass --ca with the kit CA's certificate "
            "(or --public-key pinned from the hub's page)"
        )
    for problem in result.problems:
        print(f"INVALID: {problem}")
    if result.ok:
        print("VALID")
    return 0 if result.ok else 1


def add_commands(sub: Any) -> None:
    """``fieldkit evidence verify FILE [--ca CA.crt] [--public-key HEX]``."""
    evidence = sub.add_parser("evidence", help="signed evidence documents").add_subparsers(
        dest="evidence_command", required=True
    )
    check = evidence.add_parser(
        "verify", help="check a deletion-evidence PDF's signature offline (exit 1 if invalid)"
    )
    check.add_argument("file", type=Path)
    check.add_argument("--public-key", default=None, help="the hub's evidence key (hex) to trust")
    check.add_argument(
        "--ca", type=Path, default=None, help="the kit CA's certificate (ca.crt) to trust"
    )
    # No device config needed: an auditor runs it on their own machine.
    check.set_defaults(standalone=cmd_verify)
