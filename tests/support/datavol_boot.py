"""The encrypted data volume in the booted tablet: what the VM runs, and the host's disk scan.

Two boots of the same overlay, the same OVMF variables and the same swtpm state (one device,
rebooted):

1. the first boot (the standard report plus :data:`FIRST_BOOT`): the volume was made on this
   boot (format unit's log, ``luksDump``: LUKS2, one keyslot, a ``systemd-tpm2`` token on
   PCR 7), opened by the TPM, mounted, the state folders on it; then a canary in three
   encodings (ASCII, UTF-16LE, a small JPEG carrying a marker) is written into sync's outbox
   (on the volume) and into the CUPS spool (memory-only);
2. the second boot (:data:`PURGE_BOOT`): the volume opened again by the TPM without a
   passphrase, the canary read back; then ``fieldkit wipe device`` with a device config
   handed over fw_cfg, signed with the key the (unenrolled) device's wipe service made for
   its erasure records, whose public half the report prints; ``--force``: those records
   never reached a hub. The certificate is printed and the machine powered off.

The host then converts the overlay to a raw disk and scans every byte of it (holes are
zeros) for the canary in each encoding and for a LUKS magic at any 512-byte-aligned offset.
"""

from __future__ import annotations

import os
import secrets
import struct
import subprocess
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from tests.support.image_boot import SCRIPT_HEAD

FW = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.fieldkit"
CANARY_FILES = ("canary-ascii.txt", "canary-utf16le.txt", "canary.jpg")
LUKS_MAGICS = (b"LUKS\xba\xbe", b"SKUL\xba\xbe")

# What both boots show of the volume: it is mounted (a deadline), its units, their logs.
VOLUME_SECTIONS = r"""
section datavol-wait
wait_for 300 mountpoint -q /var/lib/fieldkit && echo mounted || echo "not mounted"
section datavol-units
systemctl show --no-pager -p Id,ActiveState,Result fieldkit-datavol-format.service \
    'systemd-cryptsetup@fieldkit\x2ddata.service' var-lib-fieldkit.mount fieldkit-datavol.service
section datavol-format-log
journalctl -b --no-pager -q -o short-monotonic -u fieldkit-datavol-format.service
section datavol-unlock-log
journalctl -b --no-pager -q -o short-monotonic -u 'systemd-cryptsetup@fieldkit\x2ddata.service' \
    -u var-lib-fieldkit.mount -u 'dev-mapper-fieldkit\x2ddata.device'
section datavol-mount
findmnt -n -o TARGET,SOURCE,FSTYPE /var/lib/fieldkit
"""

# Appended to the standard report on the first boot.
FIRST_BOOT = (
    "export LC_ALL=C.UTF-8\n"
    + VOLUME_SECTIONS
    + rf"""
section datavol-luks
cryptsetup luksDump /dev/disk/by-partlabel/fieldkit-data
section datavol-status
cryptsetup status fieldkit-data
section datavol-paths
for p in /var/lib/fieldkit/outbox /var/lib/fieldkit/audit /var/lib/fieldkit/wipe \
         /etc/fieldkit/keys /var/lib/fieldkit/enrol; do
    echo "$p $(findmnt -n -o TARGET -T "$(readlink -f "$p")") $(stat -L -c '%U %a' "$p")"
done
section datavol-disk
lsblk -b -n -o NAME,SIZE,TYPE,PARTLABEL /dev/vda
section datavol-tpm
ls /dev/tpm0 /dev/tpmrm0
section canary-write
c=$(cat {FW}/canary/raw)
for d in /var/lib/fieldkit/outbox /var/spool/cups; do
    printf '%s' "$c" > "$d/canary-ascii.txt"
    printf '%s' "$c" | iconv -f ASCII -t UTF-16LE > "$d/canary-utf16le.txt"
    cat {FW}/canary.jpg/raw > "$d/canary.jpg"
done
sync
sha256sum /var/lib/fieldkit/outbox/canary*
"""
)

# The whole report of the second boot.
PURGE_BOOT = (
    SCRIPT_HEAD
    + "export LC_ALL=C.UTF-8\nsection state\ntimeout 300 systemctl is-system-running --wait\n"
    + VOLUME_SECTIONS
    + rf"""
section canary-read
sha256sum /var/lib/fieldkit/outbox/canary*
section spool-after-reboot
ls -A /var/spool/cups
section wipe-setup
mkdir -p /run/fieldkit-test
cat {FW}/device.toml/raw > /run/fieldkit-test/device.toml
ls -l /etc/fieldkit/keys/
section signer
/opt/fieldkit/venv/bin/python -c 'from pathlib import Path
from fieldkit.wipe.record import load_device_key, public_hex
print(public_hex(load_device_key(Path("/etc/fieldkit/keys/device-ed25519.pem"))))'
section wipe
start=$(date +%s)
/opt/fieldkit/venv/bin/python -m fieldkit --config /run/fieldkit-test/device.toml wipe device \
    --yes --sanitized-by "boot test" --org fieldkit --location "QEMU" --force
echo "exit $?"
echo "seconds $(($(date +%s) - start))"
section certificate
cat /var/lib/fieldkit-certificates/*.json
section after
cryptsetup isLuks /dev/disk/by-partlabel/fieldkit-data && echo "still LUKS" || echo "no LUKS"
findmnt -n /var/lib/fieldkit || echo "not mounted"
ls /dev/mapper
section journal-errors
journalctl -b --no-pager -q -p err -o short-monotonic
section end
sync
systemctl poweroff --no-block
"""
)


@dataclass
class Canary:
    """One run's canary: a random marker, and a JPEG that carries it in a comment."""

    text: str
    jpeg: bytes
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def needles(self) -> dict[str, bytes]:
        # Start of the image data after the headers: a slice no other file has.
        body = self.jpeg[-96:-32]
        return {
            "ascii": self.text.encode("ascii"),
            "utf-16le": self.text.encode("utf-16-le"),
            "jpeg comment": self.text.encode("ascii") + b"-jpeg",
            "jpeg data": body,
        }


def make_canary(work: Path) -> Canary:
    from PIL import Image

    text = f"FIELDKIT-CANARY-{secrets.token_hex(12)}"
    buffer = BytesIO()
    noise = Image.frombytes("RGB", (32, 32), os.urandom(32 * 32 * 3))
    noise.save(buffer, "JPEG", quality=90)
    plain = buffer.getvalue()
    comment = (text + "-jpeg").encode("ascii")
    # A COM segment right after SOI: FF FE, length (itself included), the marker.
    jpeg = plain[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + plain[2:]
    canary = Canary(text, jpeg)
    work.mkdir(parents=True, exist_ok=True)
    (work / "canary.txt").write_text(text)
    (work / "canary.jpg").write_bytes(jpeg)
    canary.files = {"canary": work / "canary.txt", "canary.jpg": work / "canary.jpg"}
    return canary


@dataclass
class ScanResult:
    bytes_scanned: int
    disk_bytes: int
    found: dict[str, list[int]]
    luks_aligned: list[int]
    convert_seconds: float
    scan_seconds: float


def raw_disk(overlay: Path, out: Path) -> float:
    """The overlay (with its backing image) as one raw disk; returns the seconds it took."""
    started = time.monotonic()
    out.unlink(missing_ok=True)
    subprocess.run(
        ["qemu-img", "convert", "-O", "raw", str(overlay), str(out)],
        check=True,
        capture_output=True,
    )
    return round(time.monotonic() - started, 1)


def scan(disk: Path, needles: dict[str, bytes], chunk: int = 16 << 20) -> ScanResult:
    """Every byte of ``disk`` (holes skipped: they read as zeros) searched for ``needles``
    and for a LUKS magic at a 512-byte-aligned offset (where a header can start)."""
    started = time.monotonic()
    found: dict[str, list[int]] = {name: [] for name in needles}
    luks: list[int] = []
    patterns = dict(needles) | {f"luks{i}": m for i, m in enumerate(LUKS_MAGICS)}
    overlap = max(len(p) for p in patterns.values()) - 1
    size = disk.stat().st_size
    scanned = 0
    fd = os.open(disk, os.O_RDONLY)
    try:
        position = 0
        while position < size:
            try:
                data_start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            hole = os.lseek(fd, data_start, os.SEEK_HOLE)
            offset = data_start
            while offset < hole:
                length = min(chunk, hole - offset)
                block = os.pread(fd, length + overlap, offset)
                scanned += length
                for name, pattern in patterns.items():
                    at = block.find(pattern)
                    while at != -1:
                        if at < length:  # the overlap is searched again with the next block
                            where = offset + at
                            if name.startswith("luks"):
                                if where % 512 == 0:
                                    luks.append(where)
                            else:
                                found[name].append(where)
                        at = block.find(pattern, at + 1)
                offset += length
            position = hole
    finally:
        os.close(fd)
    return ScanResult(
        bytes_scanned=scanned,
        disk_bytes=size,
        found=found,
        luks_aligned=luks,
        convert_seconds=0.0,
        scan_seconds=round(time.monotonic() - started, 1),
    )
