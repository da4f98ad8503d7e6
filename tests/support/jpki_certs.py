"""Certificates for the virtual My Number Card, made by a test CA shaped like J-LIS's.

The user-authentication certificate's subject is a random common name (as a real card's
is: it names no one, but it is the holder's own, so personal data), its serial 16 random
bytes. Both are returned so a test can use them as the residue scan's canaries.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

ISSUER = x509.Name(
    [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "JP"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "JPKI"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "JPKI for user authentication"),
        x509.NameAttribute(
            NameOID.ORGANIZATIONAL_UNIT_NAME,
            "Japan Agency for Local Authority Information Systems (test CA)",
        ),
    ]
)
ISSUER_TEXT = (
    "JPKI for user authentication, Japan Agency for Local Authority Information Systems"
    " (test CA), JPKI"
)
JST = dt.timezone(dt.timedelta(hours=9))


@cache
def ca_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass(frozen=True)
class CardCertificate:
    der: bytes
    serial: bytes
    subject: str


def user_auth_certificate(valid_from: dt.date, valid_to: dt.date) -> CardCertificate:
    """A user-authentication certificate valid to the end of ``valid_to`` in Japan time."""
    serial = b"\x42" + secrets.token_bytes(15)  # positive, 16 bytes
    subject = "JPKIUSER" + secrets.token_hex(12).upper()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    not_before = dt.datetime.combine(valid_from, dt.time(0, 0), JST)
    not_after = dt.datetime.combine(valid_to, dt.time(23, 59, 59), JST)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ISSUER)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(serial, "big"))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
        .sign(ca_key(), hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    return CardCertificate(der=der, serial=serial, subject=subject)
