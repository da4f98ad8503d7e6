"""Sealing application packets (R15): encrypted to the receiver, signed by the device.

Encryption is HPKE (RFC 9180, base mode) from ``cryptography``: DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256, ChaCha20-Poly1305. The tablet holds only the receiver's *public* key, so it
cannot open what it sealed. The HPKE ``info`` binds the ciphertext to its record id, device
and municipality: a ciphertext moved into another packet fails to open.

The device signs the sealed packet (header + ciphertext) with its Ed25519 key, so the
receiver can check, offline, which enrolled device produced it.

Receipt that proves decryption (packet v2, issue 17): the tablet seals a fresh random token
in front of the plaintext, and puts only a hash of it (``receipt_commitment``) in the signed
header. Only whoever decrypts the ciphertext learns the token; the municipality's receipt
(``PacketReceipt``, made by ``fieldkit packet receipt``) returns the tokens, and the hub erases
its copies only when every token matches its commitment. The hub, which cannot decrypt, cannot
make that receipt itself. v1 packets (sealed before) carry no token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import os
import zipfile
from typing import Any, Literal, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from pydantic import Field, model_validator

from fieldkit.models import RECORD_ID_PATTERN, Strict
from fieldkit.pki import key_fingerprint, raw_public

SUITE_NAME: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305"] = (
    "hpke-base-x25519-hkdfsha256-chacha20poly1305"
)
SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.CHACHA20_POLY1305)

MUNICIPALITY_PATTERN = r"^[0-9]{6}$"
DEVICE_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
RECEIPT_TOKEN_BYTES = 32


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

    v: Literal[1, 2] = 2
    type: Literal["sealed-packet"] = "sealed-packet"
    suite: Literal["hpke-base-x25519-hkdfsha256-chacha20poly1305"] = SUITE_NAME
    record_id: str = Field(pattern=RECORD_ID_PATTERN)
    device_id: str = Field(pattern=DEVICE_PATTERN)
    municipality: str = Field(pattern=MUNICIPALITY_PATTERN)
    receiver_key: str = Field(pattern=r"^[0-9a-f]{16}$", description="fingerprint of the key")
    ciphertext: str
    # v2: SHA-256 (hex) of the receipt token sealed inside; v1 packets have none.
    receipt_commitment: str = Field(default="", pattern=r"^([0-9a-f]{64})?$")
    signature: str = ""

    @model_validator(mode="after")
    def _commitment_with_v2(self) -> Self:
        if (self.v >= 2) != bool(self.receipt_commitment):
            raise ValueError("a v2 packet carries a receipt commitment, a v1 packet none")
        return self

    def signed_part(self) -> bytes:
        # v1 packets were signed before the commitment existed: their bytes stay as they were.
        excluded = {"signature"} if self.v >= 2 else {"signature", "receipt_commitment"}
        return canonical(self.model_dump(exclude=excluded))


def receipt_commitment(token: bytes) -> str:
    return hashlib.sha256(b"fieldkit-receipt/v1\0" + token).hexdigest()


def receipt_matches(packet_commitment: str, token_hex: str) -> bool:
    """Whether a returned token is the one sealed inside the packet with this commitment."""
    try:
        token = bytes.fromhex(token_hex)
    except ValueError:
        return False
    if len(token) != RECEIPT_TOKEN_BYTES:
        return False
    return hmac.compare_digest(receipt_commitment(token), packet_commitment)


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
    """Encrypt ``plaintext`` (behind a fresh receipt token) to ``receiver``, and sign the
    result with the device key."""
    token = os.urandom(RECEIPT_TOKEN_BYTES)
    info = _info(record_id, device_id, municipality)
    ciphertext = SUITE.encrypt(token + plaintext, receiver, info=info)
    unsigned = SealedPacket(
        record_id=record_id,
        device_id=device_id,
        municipality=municipality,
        receiver_key=key_fingerprint(raw_public(receiver)),
        ciphertext=b64(ciphertext),
        receipt_commitment=receipt_commitment(token),
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
    return open_with_token(packet, receiver, device_public)[0]


def open_with_token(
    packet: SealedPacket,
    receiver: x25519.X25519PrivateKey,
    device_public: ed25519.Ed25519PublicKey | None,
) -> tuple[bytes, bytes | None]:
    """The plaintext and (v2) the receipt token sealed with it."""
    if device_public is not None:
        verify_packet(packet, device_public)
    if packet.receiver_key != key_fingerprint(raw_public(receiver.public_key())):
        raise SealingError(f"packet {packet.record_id} was sealed to another receiver key")
    try:
        opened = SUITE.decrypt(
            unb64(packet.ciphertext, "ciphertext"),
            receiver,
            info=_info(packet.record_id, packet.device_id, packet.municipality),
        )
    except Exception:
        # The library's message says nothing useful and must not carry content anyway.
        raise SealingError(f"packet {packet.record_id} does not decrypt with this key") from None
    if packet.v == 1:
        return opened, None
    token, plaintext = opened[:RECEIPT_TOKEN_BYTES], opened[RECEIPT_TOKEN_BYTES:]
    if not receipt_matches(packet.receipt_commitment, token.hex()):
        raise SealingError(f"packet {packet.record_id}: its receipt token does not match")
    return plaintext, token


class PacketReceipt(Strict):
    """What the municipality returns for a pick-up: the bundle's hash, and the token sealed in
    each v2 packet, which only decrypting it reveals."""

    v: Literal[1] = 1
    type: Literal["packet-receipt"] = "packet-receipt"
    bundle_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    tokens: dict[str, str] = Field(default_factory=dict, description="record id -> token hex")


def bundle_packets(bundle: bytes) -> list[SealedPacket]:
    """The packets of a pick-up bundle (the hub's ZIP, one ``<code>/<record>.json`` each)."""
    try:
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            return [
                SealedPacket.model_validate_json(archive.read(name))
                for name in sorted(archive.namelist())
                if name.endswith(".json")
            ]
    except (zipfile.BadZipFile, ValueError):
        raise SealingError("the bundle is not a pick-up ZIP of sealed packets") from None


def receipt_for_bundle(
    bundle: bytes,
    receiver: x25519.X25519PrivateKey,
    device_keys: dict[str, ed25519.Ed25519PublicKey] | None = None,
) -> PacketReceipt:
    """Open every packet of a bundle and return its receipt (the plaintexts are dropped)."""
    tokens: dict[str, str] = {}
    for packet in bundle_packets(bundle):
        device = None if device_keys is None else device_keys.get(packet.device_id)
        if device_keys is not None and device is None:
            raise SealingError(f"device {packet.device_id} is not in the roster")
        _, token = open_with_token(packet, receiver, device)
        if token is not None:
            tokens[packet.record_id] = token.hex()
    return PacketReceipt(bundle_sha256=hashlib.sha256(bundle).hexdigest(), tokens=tokens)
