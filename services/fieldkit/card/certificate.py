"""What the staff are told about a read certificate, and what the wipe looks for afterwards.

The report keeps the validity dates (in Japan time) and the issuer. The holder's side of the
certificate (its subject and serial) is personal data: it goes into ``CardCanaries`` only,
for the session's residue scan, and never into a report, a log line or an exception.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509

from fieldkit.card.messages import CardCertificate

JST = dt.timezone(dt.timedelta(hours=9), "JST")
# A canary shorter than this would be found in ordinary memory and fail wipes for nothing.
MIN_SERIAL_BYTES = 8
MIN_SUBJECT_CHARS = 8


class CertificateUnreadable(Exception):
    """The bytes read are not an X.509 certificate. Fixed text: never the bytes."""


@dataclass(frozen=True)
class CardCanaries:
    """The certificate's own values, for the wipe to look for (personal data, memory only)."""

    serial: bytes | None  # the serial number's big-endian bytes, as the DER holds them
    subject: str | None  # the subject's longest attribute value (for JPKI, its common name)


def parse(der: bytes | bytearray) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(bytes(der))
    except ValueError:
        raise CertificateUnreadable("the card's certificate is not valid DER X.509") from None


def describe(certificate: x509.Certificate, now: dt.datetime | None = None) -> CardCertificate:
    """The validity as the staff read it: JST dates, days left, and the issuing authority."""
    now = now or dt.datetime.now(dt.UTC)
    valid_from = certificate.not_valid_before_utc.astimezone(JST)
    valid_to = certificate.not_valid_after_utc.astimezone(JST)
    today = now.astimezone(JST).date()
    return CardCertificate(
        valid_from=valid_from.date().isoformat(),
        valid_to=valid_to.date().isoformat(),
        days_left=(valid_to.date() - today).days,
        expired=now >= certificate.not_valid_after_utc,
        not_yet_valid=now < certificate.not_valid_before_utc,
        issuer=issuer_name(certificate)[:300],
    )


def issuer_name(certificate: x509.Certificate) -> str:
    """The issuer's organisation names, most specific first (J-LIS's OUs, then O)."""
    names = [
        str(attribute.value)
        for oid in (x509.NameOID.ORGANIZATIONAL_UNIT_NAME, x509.NameOID.ORGANIZATION_NAME)
        for attribute in certificate.issuer.get_attributes_for_oid(oid)
    ]
    return ", ".join(names) or certificate.issuer.rfc4514_string()


def canaries(certificate: x509.Certificate) -> CardCanaries:
    serial_number = certificate.serial_number
    serial = serial_number.to_bytes((serial_number.bit_length() + 7) // 8 or 1, "big")
    values = [str(a.value) for a in certificate.subject]
    subject = max(values, key=len, default="")
    return CardCanaries(
        serial=serial if len(serial) >= MIN_SERIAL_BYTES else None,
        subject=subject if len(subject) >= MIN_SUBJECT_CHARS and len(set(subject)) > 1 else None,
    )
