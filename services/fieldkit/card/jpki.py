"""The JPKI application of the My Number Card, as its public specification describes it.

Only what is readable without a PIN is ever asked for: the JPKI application (JPKI-AP) is
selected by its AID, then the user-authentication certificate (利用者証明用電子証明書,
EF 00 0A) is read with READ BINARY. The card-face application (券面事項入力補助AP: name,
address, birth date, the individual number) is never selected, no PIN is ever sent, and no
key is used (docs/card.md).

The protocol is here, over a ``transmit`` callable; ``fieldkit.card.reader`` gives it the
PC/SC one. Nothing here logs or raises with what the card answered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# JPKI-AP's application identifier (ISO 7816-5 registered application provider D392F00026).
JPKI_AID = bytes.fromhex("D392F000260100000001")
# The user-authentication certificate's elementary file; readable without a PIN.
USER_AUTH_CERT_EF = bytes.fromhex("000A")
SW_OK = 0x9000
# A DER certificate is a SEQUENCE with a long-form length: 30 81 LL or 30 82 LL LL.
HEADER_BYTES = 4
MAX_CERTIFICATE_BYTES = 4096  # the EF holds about 2 KB; more is not a certificate

# What a transmit gives back: the response data and the status word.
Transmit = Callable[[bytes], tuple[bytes, int]]


class JpkiError(Exception):
    """The card did not answer as JPKI-AP does. The message is fixed text, never card data."""


class NotJpki(JpkiError):
    """The JPKI application is not on this card: not a My Number Card."""


def select_jpki_ap() -> bytes:
    """SELECT by DF name (P1=04), no response data (P2=0C)."""
    return bytes([0x00, 0xA4, 0x04, 0x0C, len(JPKI_AID)]) + JPKI_AID


def select_user_auth_certificate() -> bytes:
    """SELECT an elementary file under the current DF by its file ID (P1=02, P2=0C)."""
    return bytes([0x00, 0xA4, 0x02, 0x0C, len(USER_AUTH_CERT_EF)]) + USER_AUTH_CERT_EF


def read_binary(offset: int, length: int) -> bytes:
    """READ BINARY at ``offset`` (15 bits, P1-P2) for ``length`` bytes (Le; 256 is 0x00)."""
    if not 0 <= offset < 0x8000:
        raise ValueError("READ BINARY offset out of range")
    if not 1 <= length <= 256:
        raise ValueError("READ BINARY length out of range")
    return bytes([0x00, 0xB0, offset >> 8, offset & 0xFF, length & 0xFF])


def der_length(header: bytes) -> int:
    """The whole certificate's length from its first bytes (tag, long-form length)."""
    if len(header) < HEADER_BYTES or header[0] != 0x30:
        raise JpkiError("the certificate file does not start with a DER SEQUENCE")
    if header[1] == 0x82:
        total = 4 + (header[2] << 8 | header[3])
    elif header[1] == 0x81:
        total = 3 + header[2]
    else:
        raise JpkiError("the certificate's DER length is not in long form")
    if total > MAX_CERTIFICATE_BYTES:
        raise JpkiError("the certificate file is longer than a certificate")
    return total


def is_my_number_card(transmit: Transmit) -> bool:
    """Select JPKI-AP: it is a My Number Card when the card accepts the AID."""
    _, sw = transmit(select_jpki_ap())
    return sw == SW_OK


@dataclass
class CertificateRead:
    """The certificate as read, in a buffer the holder zeroes (``zero``)."""

    der: bytearray
    apdus: int

    def zero(self) -> None:
        self.der[:] = bytes(len(self.der))


def read_user_auth_certificate(transmit: Transmit, chunk: int = 256) -> CertificateRead:
    """Select JPKI-AP and read the user-authentication certificate, in chunks.

    Raises ``NotJpki`` when the application is absent and ``JpkiError`` when the card answers
    otherwise than the specification says."""
    if not is_my_number_card(transmit):
        raise NotJpki("the card has no JPKI application")
    apdus = 1
    _, sw = transmit(select_user_auth_certificate())
    apdus += 1
    if sw != SW_OK:
        raise JpkiError(f"the certificate file could not be selected (SW {sw:04X})")
    der = bytearray()
    try:
        head, sw = transmit(read_binary(0, HEADER_BYTES))
        apdus += 1
        if sw != SW_OK:
            raise JpkiError(f"the certificate file could not be read (SW {sw:04X})")
        total = der_length(head)
        der += head
        while len(der) < total:
            data, sw = transmit(read_binary(len(der), min(chunk, total - len(der))))
            apdus += 1
            if sw != SW_OK or not data:
                raise JpkiError(f"the certificate file could not be read (SW {sw:04X})")
            der += data[: total - len(der)]
    except BaseException:
        der[:] = bytes(len(der))
        raise
    return CertificateRead(der=der, apdus=apdus)
