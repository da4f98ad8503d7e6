"""Sealing application packets (R15): encrypted to the receiver, signed by the device.

Encryption is HPKE (RFC 9180, base mode) from ``cryptography``: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, ChaCha20-Poly1305. The tablet holds only the receiver's *public* key, so it
cannot open what it sealed. The HPKE ``info`` binds the ciphertext to its record id, device
and municipality: a ciphertext moved into another packet fails to open.

The device signs the sealed packet (header + ciphertext) with its Ed25519 key, so the
receiver can check, offline, which enrolled device produced it.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from pydantic import Field

from fieldkit.models import RECORD_ID_PATTERN, Strict
from fieldkit.pki import key_fingerprint, raw_public

SUITE_NAME: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305"] = (
    "hpke-base-x25519-hkdfsha256-chacha20poly1305"
)
SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)

MUNICIPALITY_PATTERN = r"^[0-9]{6}$"
DEVICE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class SealingError(Exception):
    """A packet could not be sealed, verified or opened (the message never holds its content)."""


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes that get signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealingError(f"{what} is not valid base64") from None


class SealedPacket(Strict):
    """An application packet as it is stored and sent: only ciphertext, plus who and for whom."""

    v: Literal[1] = 1
    type: Literal["sealed-packet"] = "sealed-packet"
    suite: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305"] = SUITE_NAME
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_PATTERN)
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    receiver_key: str = Field(pattern=r"^[0-9a-f]{16}$", description="fingerprint of the key")
    ciphertext: str
    signature: str = ""

    def signed_part(self) -> bytes:
        return canonical(self.model_dump(exclude={"signature"}))


def _info(record_id: str, device_id: str, municipality: str) -> bytes:
    return f"fieldkit-packet/v1/{record_id}/{device_id}/{municipality}".encode()


def seal(
    plaintext: bytes,
    receiver: x25519.X25519PublicKey,
    signer: ed25519.Ed25519PrivateKey,
    *,
    record_id: str,
    device_id: str,
    municipality: str,
) -> SealedPacket:
    """Encrypt ``plaintext`` to ``receiver`` and sign the result with the device key."""
    ciphertext = SUITE.encrypt(plaintext, receiver, info=_info(record_id, device_id, municipality))
    unsigned = SealedPacket(
        record_id=record_id,
        device_id=device_id,
        municipality=municipality,
        receiver_key=key_fingerprint(raw_public(receiver)),
        ciphertext=b64(ciphertext),
    )
    signature = signer.sign(unsigned.signed_part())
    return unsigned.model_copy(update={"signature": b64(signature)})


def verify_packet(packet: SealedPacket, device_public: ed25519.Ed25519PublicKey) -> None:
    """Raise SealingError unless the packet carries a valid signature of ``device_public``."""
    try:
        device_public.verify(unb64(packet.signature, "signature"), packet.signed_part())
    except InvalidSignature:
        raise SealingError(f"packet {packet.record_id}: device signature does not verify") from None


def open_packet(
    packet: SealedPacket,
    receiver: x25519.X25519PrivateKey,
    device_public: ed25519.Ed25519PublicKey | None,
) -> bytes:
    """Verify (when the device key is given) and decrypt a packet; only the receiver can."""
    if device_public is not None:
        verify_packet(packet, device_public)
    if packet.receiver_key != key_fingerprint(raw_public(receiver.public_key())):
        raise SealingError(f"packet {packet.record_id} was sealed to another receiver key")
    try:
        return SUITE.decrypt(
            unb64(packet.ciphertext, "ciphertext"),
            receiver,
            info=_info(packet.record_id, packet.device_id, packet.municipality),
        )
    except Exception:
        # The library's message says nothing useful and must not carry content anyway.
        raise SealingError(f"packet {packet.record_id} does not decrypt with this key") from None
