"""Contract-end sanitization (R24): NIST SP 800-88 Purge of a data volume, verified, certified.

For a block device or a disk-image file holding the kit's LUKS data volume:

1. cryptographic erase: ``cryptsetup erase`` destroys every LUKS keyslot, and with them the
   only copies of the volume key, so the ciphertext can no longer be decrypted;
2. an overwrite pass of the whole target with zeros (the SP 800-88 Clear step, so nothing
   readable is left even outside the encrypted area, such as the LUKS header);
3. verification by sampling (SP 800-88 Rev. 1, 4.7.3): the target is split into at least
   1,000 equal subsections; two pseudorandom locations in each, plus the first and the last
   sector, are read back and must hold the overwrite pattern;
4. a certificate with the SP 800-88 Appendix G fields, as JSON signed with the device key
   (Ed25519) and as a PDF in Japanese and English.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import stat
import subprocess
import time
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field

from fieldkit import __version__
from fieldkit.models import Strict
from fieldkit.wipe.record import (
    GENESIS,
    ChainSummary,
    ErasureRecord,
    follow_chain,
    public_hex,
    signature_valid,
)

SAMPLE_BYTES = 512
MIN_SUBSECTIONS = 1000
WRITE_BLOCK = 4 << 20


class SanitizeError(Exception):
    """The target cannot be sanitized as asked; the message says why."""


class Media(Strict):
    make: str
    model: str
    serial: str
    media_type: str
    size_bytes: int
    target: str
    source: str = "fieldkit tablet data volume"
    confidentiality: str = "personal data (My Number Card applications)"


class Method(Strict):
    category: Literal["Clear", "Purge", "Destroy"]
    technique: str
    steps: list[str]
    tool: str
    tool_version: str


class Verification(Strict):
    method: str
    subsections: int
    locations_per_subsection: int
    first_and_last: bool
    sample_bytes: int
    samples_read: int
    samples_failed: int
    seed: str
    keyslots_left: int
    # LUKS magics found at any LUKS2 header offset after the purge (tablet data volume). None
    # in certificates of an image or device purged without the header check (left out of the
    # signed body then, so their signatures still hold).
    luks_headers_left: int | None = None
    result: Literal["pass", "fail"]


class EvidenceChain(Strict):
    """The device's erasure-record chain when it was sanitized: the certificate is its last
    word. An auditor holding the records (the hub's export) checks they end exactly here."""

    records: int
    head: str
    intact: bool

    @classmethod
    def of(cls, summary: ChainSummary) -> EvidenceChain:
        return cls(records=summary.records, head=summary.head, intact=summary.intact)


NO_RECORDS = EvidenceChain(records=0, head=GENESIS, intact=True)


class Person(Strict):
    name: str
    role: str
    organization: str = ""


class Certificate(Strict):
    """A sanitization certificate with the NIST SP 800-88 Rev. 1 Appendix G fields."""

    v: Literal[1] = 1
    type: Literal["sanitization-certificate"] = "sanitization-certificate"
    certificate_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    device: str
    media: Media
    method: Method
    verification: Verification
    sanitized_by: Person
    verified_by: Person
    date: str
    location: str
    post_sanitization_destination: str = "returned to the owner / reuse"
    # None only in certificates made before fieldkit stated the chain (left out of the signed
    # body then, so their signatures still hold).
    evidence_chain: EvidenceChain | None = None
    result: Literal["pass", "fail"]
    signer: str = ""
    signature: str = ""

    def body(self) -> bytes:
        unset: dict[str, Any] = {"signature": True}
        if self.evidence_chain is None:
            unset["evidence_chain"] = True
        if self.verification.luks_headers_left is None:
            unset["verification"] = {"luks_headers_left"}
        data = self.model_dump(mode="json", exclude=unset)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Target:
    path: Path
    size: int
    block_device: bool


def open_target(path: Path) -> Target:
    """The device or image to sanitize; refuses anything mounted or of the wrong kind."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SanitizeError(f"{path} does not exist") from None
    if stat.S_ISBLK(info.st_mode):
        with path.open("rb") as device:
            size = device.seek(0, os.SEEK_END)
        mounted = Path("/proc/mounts").read_text().split()
        real = str(path.resolve())
        if any(field == real or field.startswith(real) for field in mounted[0::6]):
            raise SanitizeError(f"{path} (or a partition of it) is mounted; unmount it first")
        return Target(path, size, True)
    if stat.S_ISREG(info.st_mode):
        return Target(path, info.st_size, False)
    raise SanitizeError(f"{path} is neither a block device nor a disk-image file")


def media_of(target: Target, make: str | None, model: str | None, serial: str | None) -> Media:
    """Make, model and serial from sysfs for a block device; what the operator says otherwise."""
    found = {"vendor": "", "model": "", "serial": ""}
    if target.block_device:
        block = Path("/sys/class/block") / target.path.resolve().name
        if (block / "partition").exists():  # a partition: its disk has the device facts
            block = block.resolve().parent
        sysfs = block / "device"
        for name in found:
            with contextlib.suppress(OSError):
                found[name] = (sysfs / name).read_text().strip()
    return Media(
        make=make or found["vendor"] or ("disk image file" if not target.block_device else "?"),
        model=model or found["model"] or "n/a",
        serial=serial or found["serial"] or "n/a",
        media_type="block device (flash)" if target.block_device else "disk image file",
        size_bytes=target.size,
        target=str(target.path),
    )


def _cryptsetup(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["cryptsetup", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SanitizeError("cryptsetup is not installed (Debian package cryptsetup-bin)") from None


def cryptsetup_version() -> str:
    return _cryptsetup("--version").stdout.split(" flags")[0].strip()


def is_luks(target: Target) -> bool:
    return _cryptsetup("isLuks", str(target.path)).returncode == 0


def keyslots_left(target: Target) -> int:
    """Keyslots in the target's LUKS header (0 once erased, or when there is no header)."""
    dump = _cryptsetup("luksDump", str(target.path))
    if dump.returncode != 0:
        return 0
    section = re.search(r"^Keyslots:\n(.*?)^\S", dump.stdout, re.S | re.M)
    if section is None:  # LUKS1 lists "Key Slot N: ENABLED"
        return len(re.findall(r"Key Slot \d+: ENABLED", dump.stdout))
    return len(re.findall(r"^\s+\d+: luks2", section.group(1), re.M))


def crypto_erase(target: Target) -> str:
    """Destroy every keyslot (the volume key's only copies). Returns what was done."""
    if not is_luks(target):
        raise SanitizeError(
            f"{target.path} holds no LUKS volume: nothing to erase cryptographically"
        )
    before = keyslots_left(target)
    erased = _cryptsetup("erase", "--batch-mode", str(target.path))
    if erased.returncode != 0:
        raise SanitizeError(f"cryptsetup erase failed: {erased.stderr.strip()}")
    if keyslots_left(target) != 0:
        raise SanitizeError("keyslots are still present after cryptsetup erase")
    return f"cryptographic erase: {before} LUKS keyslots destroyed (cryptsetup erase)"


def overwrite(target: Target, pattern: int = 0) -> str:
    """One pass of ``pattern`` over every byte, flushed to the medium."""
    block = bytes([pattern]) * WRITE_BLOCK
    fd = os.open(target.path, os.O_WRONLY)
    try:
        left = target.size
        while left > 0:
            left -= os.write(fd, block[: min(left, WRITE_BLOCK)])
        os.fsync(fd)
    finally:
        os.close(fd)
    return f"overwrite: one pass of 0x{pattern:02x} over {target.size} bytes"


def sample_offsets(size: int, subsections: int, seed: str, sample: int = SAMPLE_BYTES) -> list[int]:
    """First and last sector, then two pseudorandom locations in each equal subsection."""
    last = max(0, size - sample)
    offsets = [0, last]
    chooser = random.Random(seed)  # noqa: S311 -- reproducible sampling, not a secret
    for index in range(subsections):
        start = index * size // subsections
        stop = max(start, (index + 1) * size // subsections - sample)
        offsets += [min(chooser.randint(start, stop), last) for _ in range(2)]
    return offsets


def verify_by_sampling(
    target: Target, subsections: int, seed: str, pattern: int = 0, sample: int = SAMPLE_BYTES
) -> tuple[int, int]:
    """Read every sample back; returns (samples read, samples not holding the pattern)."""
    expected = bytes([pattern]) * sample
    offsets = sample_offsets(target.size, subsections, seed, sample)
    failed = 0
    fd = os.open(target.path, os.O_RDONLY)
    try:
        for offset in offsets:
            data = os.pread(fd, sample, offset)
            if data != expected[: len(data)] or not data:
                failed += 1
    finally:
        os.close(fd)
    return len(offsets), failed


def sanitize(
    path: Path,
    *,
    device: str,
    key: Ed25519PrivateKey,
    sanitized_by: Person,
    verified_by: Person,
    location: str,
    make: str | None = None,
    model: str | None = None,
    serial: str | None = None,
    evidence_chain: EvidenceChain,
    subsections: int = MIN_SUBSECTIONS,
    erase_keys: bool = True,
    overwrite_pass: bool = True,
    steps_done: Sequence[str] = (),
    tablet_volume: bool = False,
    source: str | None = None,
) -> Certificate:
    """Crypto-erase, overwrite, verify by sampling, and return the signed certificate.

    ``erase_keys`` and ``overwrite_pass`` exist so tests can show that the verification
    catches a sanitization that skipped a step; the CLI always does both. ``tablet_volume``:
    the target is a tablet's TPM-sealed LUKS2 data volume (fieldkit.wipe.datavol): its tokens
    (the sealed key) go first and its whole header area is overwritten before the full pass,
    and the verification looks for a LUKS header at every header offset. ``steps_done``: what
    was done before (services stopped, volume released), listed first in the certificate.
    """
    if subsections < MIN_SUBSECTIONS:
        raise SanitizeError(f"SP 800-88 sampling needs at least {MIN_SUBSECTIONS} subsections")
    target = open_target(path)
    if target.size < subsections * SAMPLE_BYTES:
        raise SanitizeError(f"{path} is too small to sample {subsections} subsections")
    steps = list(steps_done)
    headers: int | None = None
    if tablet_volume:
        from fieldkit.wipe import datavol

        metadata = datavol.luks_metadata(target)
        header = datavol.header_bytes(metadata)
        steps.append(datavol.remove_tokens(target, metadata))
        if erase_keys:
            steps.append(crypto_erase(target))
        steps.append(datavol.overwrite_header(target, header))
    elif erase_keys:
        steps.append(crypto_erase(target))
    if overwrite_pass:
        steps.append(overwrite(target))
    seed = secrets.token_hex(16)
    read, failed = verify_by_sampling(target, subsections, seed)
    slots = keyslots_left(target)
    if tablet_volume:
        from fieldkit.wipe.datavol import luks_headers_left

        headers = luks_headers_left(target.path, target.size)
    verdict: Literal["pass", "fail"] = (
        "pass" if failed == 0 and slots == 0 and not headers else "fail"
    )
    media = media_of(target, make, model, serial)
    if source is not None:
        media = media.model_copy(update={"source": source})
    certificate = Certificate(
        device=device,
        media=media,
        method=Method(
            category="Purge",
            technique=(
                "Cryptographic Erase (LUKS2 keyslots and TPM-sealed key) + header and full "
                "Overwrite"
                if tablet_volume
                else "Cryptographic Erase + Overwrite"
            ),
            steps=steps,
            tool="fieldkit wipe device",
            tool_version=f"fieldkit {__version__}; {cryptsetup_version()}",
        ),
        verification=Verification(
            method=(
                "sampling per NIST SP 800-88 Rev. 1 §4.7.3; LUKS keyslot count"
                + ("; LUKS magic at every LUKS2 header offset" if tablet_volume else "")
            ),
            subsections=subsections,
            locations_per_subsection=2,
            first_and_last=True,
            sample_bytes=SAMPLE_BYTES,
            samples_read=read,
            samples_failed=failed,
            seed=seed,
            keyslots_left=slots,
            luks_headers_left=headers,
            result=verdict,
        ),
        sanitized_by=sanitized_by,
        verified_by=verified_by,
        date=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        location=location,
        evidence_chain=evidence_chain,
        result=verdict,
    )
    return sign_certificate(certificate, key)


def sign_certificate(certificate: Certificate, key: Ed25519PrivateKey) -> Certificate:
    signed = certificate.model_copy(update={"signer": public_hex(key)})
    return signed.model_copy(update={"signature": key.sign(signed.body()).hex()})


def verify_certificate(
    text: str,
    trusted: str | None = None,
    records: list[ErasureRecord] | None = None,
    record_signers: Collection[str] | None = None,
) -> list[str]:
    """Problems with a certificate's JSON: shape, signer, signature and, given the device's
    erasure records, the chain they form against the one the certificate closes. Empty: valid."""
    try:
        certificate = Certificate.model_validate_json(text)
    except ValueError as exc:
        return [f"not a sanitization certificate: {str(exc).splitlines()[0]}"]
    problems = []
    if trusted is not None and certificate.signer != trusted:
        problems.append("signed by a key other than the trusted one")
    if not signature_valid(certificate.signer, certificate.signature, certificate.body()):
        problems.append("the signature does not match the content")
    if records is not None:
        problems += chain_problems(certificate, records, record_signers)
    return problems


def chain_problems(
    certificate: Certificate,
    records: list[ErasureRecord],
    signers: Collection[str] | None = None,
) -> list[str]:
    """The records, followed from the genesis, must be intact, signed by ``signers`` (the
    certificate's own signer when not given), and end where the certificate says the
    device's chain ended."""
    claimed = certificate.evidence_chain
    if claimed is None:
        return ["the certificate states no erasure-record chain (made before fieldkit did)"]
    summary = follow_chain(records, signers or {certificate.signer})
    problems = [f"erasure records: {problem}" for problem in summary.problems]
    if (summary.records, summary.head) != (claimed.records, claimed.head):
        problems.append(
            f"the erasure records end after {summary.records} at {summary.head[:12]}, "
            f"the certificate after {claimed.records} at {claimed.head[:12]}"
        )
    if not claimed.intact:
        problems.append("the device found its own chain broken when it was sanitized")
    return problems
