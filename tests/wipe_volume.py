"""A real LUKS2 data volume in an image file, written without dm-crypt.

This machine has loop devices but no device mapper, so the volume cannot be opened with
``cryptsetup open``. The header is made by cryptsetup itself; the payload is written here
with the volume key that cryptsetup hands out, exactly as dm-crypt would write it
(aes-xts-plain64, 512-byte sectors, the IV being the sector number), so the image is a
LUKS2 volume in dm-crypt's layout (not opened with dm-crypt here: there is no device mapper).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.conftest import write_config
from tests.wipe_fixtures import APPLICATION_ID

SECTOR = 512


def make_volume(image: Path, size: int, key_file: Path) -> None:
    with image.open("wb") as out:
        out.truncate(size)
    subprocess.run(
        [
            "cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2",
            "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--sector-size", str(SECTOR), "--key-file", str(key_file), str(image),
        ],
        check=True, capture_output=True,
    )  # fmt: skip


def volume_key(image: Path, key_file: Path) -> bytes | None:
    """The volume key unlocked by the passphrase, or None when no keyslot opens any more."""
    dump = subprocess.run(
        ["cryptsetup", "luksDump", "--dump-volume-key", "--batch-mode",
         "--key-file", str(key_file), str(image)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if dump.returncode != 0:
        return None
    block = dump.stdout.split("MK dump:", 1)[1]
    return bytes.fromhex("".join(re.findall(r"[0-9a-f]{2}", block.split("\n\n")[0])))


def payload_offset(image: Path) -> int:
    dump = subprocess.run(
        ["cryptsetup", "luksDump", str(image)], capture_output=True, text=True, check=True
    ).stdout
    segment = dump.split("Data segments:", 1)[1]
    match = re.search(r"offset: (\d+) \[bytes\]", segment)
    assert match is not None
    return int(match.group(1))


def _xts(key: bytes, sector: int) -> Cipher[modes.XTS]:
    return Cipher(algorithms.AES(key), modes.XTS(sector.to_bytes(16, "little")))


def write_plaintext(image: Path, key: bytes, first_sector: int, data: bytes) -> bytes:
    """Encrypt ``data`` into the volume from ``first_sector``; returns the ciphertext written."""
    data = data + bytes(-len(data) % SECTOR)
    written = bytearray()
    for i in range(0, len(data), SECTOR):
        sector = first_sector + i // SECTOR
        encryptor = _xts(key, sector).encryptor()
        written += encryptor.update(data[i : i + SECTOR]) + encryptor.finalize()
    with image.open("r+b") as out:
        out.seek(payload_offset(image) + first_sector * SECTOR)
        out.write(written)
    return bytes(written)


def read_plaintext(image: Path, key: bytes, first_sector: int, length: int) -> bytes:
    offset = payload_offset(image) + first_sector * SECTOR
    with image.open("rb") as source:
        source.seek(offset)
        raw = source.read(length + (-length % SECTOR))
    plain = bytearray()
    for i in range(0, len(raw), SECTOR):
        decryptor = _xts(key, first_sector + i // SECTOR).decryptor()
        plain += decryptor.update(raw[i : i + SECTOR]) + decryptor.finalize()
    return bytes(plain[:length])


# -- a volume holding an applicant record, and a wipe config (sanitization tests) ----------

SIZE = 64 << 20


PLANTED = b"applicant " + APPLICATION_ID.encode() + b" photo follows " + os.urandom(2000)


def volume(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A 64 MiB LUKS2 image holding an applicant record; returns image, key file, ciphertext."""
    key_file = tmp_path / "passphrase"
    key_file.write_bytes(os.urandom(32))
    image = tmp_path / "data.img"
    make_volume(image, SIZE, key_file)
    key = volume_key(image, key_file)
    assert key is not None and len(key) == 64
    ciphertext = write_plaintext(image, key, 1000, PLANTED)
    # Before: whoever holds the passphrase reads the applicant back; the raw file shows only
    # ciphertext.
    assert read_plaintext(image, key, 1000, len(PLANTED)) == PLANTED
    raw = image.read_bytes()
    assert ciphertext[:64] in raw and APPLICATION_ID.encode() not in raw
    return image, key_file, ciphertext


def wipe_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path,
        f"""
        [wipe]
        device_key = "{tmp_path / "keys" / "device.pem"}"
        state_dir = "{tmp_path / "wipe-state"}"
        """,
    )
