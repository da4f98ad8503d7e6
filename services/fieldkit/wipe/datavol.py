"""``fieldkit wipe device`` on a tablet: the purge of its encrypted data volume (R24).

The tablet keeps everything that outlives a reboot on one LUKS2 volume whose key only its
TPM 2.0 can unseal (``fieldkit.datavol``). At contract end the volume is released by systemd
(the services stopped, the filesystem unmounted, the mapping closed, so the volume key is no
longer in the kernel), and then purged (NIST SP 800-88 Rev. 1, Purge by cryptographic erase):

1. the LUKS2 tokens go: the ``systemd-tpm2`` token holds the TPM-sealed copy of the keyslot's
   passphrase, the only one there is;
2. ``cryptsetup erase`` destroys every keyslot, the only encrypted copies of the volume key;
3. the whole LUKS2 header area (primary and secondary binary header, JSON metadata, keyslots
   area: everything before the data segment) is overwritten, so no header copy is readable;
4. :func:`fieldkit.wipe.sanitize.sanitize` then overwrites the whole partition, verifies by
   sampling and signs the certificate, which names this method.

``tpm2_clear`` is not used: it needs the TPM's lockout or platform authorization, it would
destroy every other key the TPM holds for the firmware or another system, and it adds nothing
here. The sealed blob lives in the LUKS2 token, not in the TPM: with the token and the
header gone there is nothing left for the TPM to unseal.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from fieldkit.datavol import DataVolume
from fieldkit.wipe.sanitize import SanitizeError, Target

# Where a LUKS2 binary header may start: the primary at 0, the secondary at the end of the
# primary's metadata area (16 KiB to 4 MiB, a power of two).
LUKS2_HEADER_OFFSETS = (0, *(1 << n for n in range(14, 23)))
LUKS_MAGICS = (b"LUKS\xba\xbe", b"SKUL\xba\xbe")
HEADER_CHUNK = 1 << 20


@dataclass(frozen=True)
class TabletVolume:
    """The tablet's data volume as this device has it."""

    policy: DataVolume
    partition: Path  # the LUKS2 partition (/dev/disk/by-partuuid/..., resolved)


def find_volume(policy: DataVolume | None, crypttab: Path = Path("/etc/crypttab")) -> TabletVolume:
    """The partition ``crypttab`` names for the policy's volume; SanitizeError if none."""
    if policy is None:
        raise SanitizeError("the erasure policy has no data_volume: this device has none")
    try:
        lines = crypttab.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise SanitizeError(f"{crypttab} does not exist: this device has no data volume") from None
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and fields[0] == policy.name:
            source = fields[1]
            if source.startswith("PARTUUID="):
                path = Path("/dev/disk/by-partuuid") / source.removeprefix("PARTUUID=").lower()
            elif source.startswith("/"):
                path = Path(source)
            else:
                raise SanitizeError(f"{crypttab}: {policy.name} names {source}, not a partition")
            if not path.exists():
                raise SanitizeError(f"{crypttab}: {policy.name}'s partition {path} is not here")
            return TabletVolume(policy, path.resolve())
    raise SanitizeError(f"{crypttab} has no line for {policy.name}: this device has no volume")


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise SanitizeError(f"{cmd[0]} is not installed") from None


def _mounts(mountinfo: Path) -> list[tuple[str, str]]:
    """(mount point, ``major:minor``) of every mount, in mount order, points unescaped."""
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            found.append((point, fields[2]))
    return found


def mounts_at_or_below(mount: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    base = str(mount).rstrip("/")
    return [p for p, _ in _mounts(mountinfo) if p == base or p.startswith(base + "/")]


# systemd may still be unmounting or closing what `systemctl stop` left (a field boot found
# /var/lib/fieldkit gone between the listing and its umount: "not mounted", the purge refused):
# each step is retried for up to SETTLE_TRIES x SETTLE_PAUSE s and judged by what is still there.
SETTLE_TRIES = 50
SETTLE_PAUSE = 0.1


def unmount_below(mount: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> None:
    """Unmount ``mount`` and everything below it, deepest first. A point that is no longer
    mounted is done, whoever unmounted it; one that stays mounted (busy) raises SanitizeError
    after the retries, naming it: a process would still hold the volume's files."""
    said = ""
    for _ in range(SETTLE_TRIES):
        points = sorted(mounts_at_or_below(mount, mountinfo), key=len, reverse=True)
        if not points:
            return
        done = _run(["umount", points[0]])
        if done.returncode != 0 and points[0] in mounts_at_or_below(mount, mountinfo):
            said = done.stderr.strip()
            time.sleep(SETTLE_PAUSE)
    points = sorted(mounts_at_or_below(mount, mountinfo), key=len, reverse=True)
    if points:
        raise SanitizeError(f"cannot unmount {points[0]}: {said or 'still mounted'}")


def stop_services(stop: list[str]) -> str:
    """Stop every fieldkit service first, so no record or file is written after this."""
    if not stop:
        return "services: none to stop"
    done = _run(stop)
    if done.returncode != 0:
        raise SanitizeError(f"{' '.join(stop)} failed: {done.stderr.strip()}")
    return f"services stopped ({' '.join(stop)})"


def release(volume: TabletVolume) -> str:
    """Unmount the volume (and what is mounted below it) and close its mapping.

    Through systemd: stopping the cryptsetup unit stops the mount and everything that needs
    it; what systemd does not know is unmounted and closed by hand. A mount that stays busy
    stops the purge: a process would still hold the volume's files.
    """
    policy = volume.policy
    _run(["systemctl", "stop", policy.cryptsetup_unit])
    unmount_below(Path(str(policy.mount)))
    done = None
    for _ in range(SETTLE_TRIES):
        if not Path(str(policy.mapper)).exists():
            break
        done = _run(["cryptsetup", "close", policy.name])
        if done.returncode == 0:
            break
        time.sleep(SETTLE_PAUSE)
    else:
        reason = done.stderr.strip() if done is not None else "still open"
        raise SanitizeError(f"cannot close {policy.mapper}: {reason}")
    for _ in range(50):  # udev removes the node a moment after the mapping is gone
        if not Path(str(policy.mapper)).exists():
            break
        time.sleep(0.1)
    if mounts_at_or_below(Path(str(policy.mount))) or Path(str(policy.mapper)).exists():
        raise SanitizeError(f"{policy.mapper} is still open or mounted")
    return f"released: {policy.mount} unmounted, {policy.mapper} closed (volume key out of RAM)"


def luks_metadata(target: Target | Path) -> dict[str, object]:
    path = target if isinstance(target, Path) else target.path
    done = _run(["cryptsetup", "luksDump", "--dump-json-metadata", str(path)])
    if done.returncode != 0:
        raise SanitizeError(f"{path} has no readable LUKS2 header: {done.stderr.strip()}")
    found = json.loads(done.stdout)
    if not isinstance(found, dict):
        raise SanitizeError(f"{path}: unexpected LUKS2 metadata")
    return found


def _mounted_device(mount: Path, mountinfo: Path) -> str | None:
    """``major:minor`` of the filesystem mounted at ``mount`` (the last mount there wins)."""
    found = [device for point, device in _mounts(mountinfo) if point == str(mount).rstrip("/")]
    return found[-1] if found else None


def live_volume(
    policy: DataVolume | None,
    crypttab: Path = Path("/etc/crypttab"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
    sysfs: Path = Path("/sys"),
) -> tuple[list[str], str]:
    """The running tablet's data volume as the kernel has it: (problems, what was found).

    Mounted at the policy's mount point from a dm-crypt LUKS2 mapping of the partition
    crypttab names; every keyslot opened only by a ``systemd-tpm2`` token sealed to the
    policy's PCRs (no passphrase, no recovery key); the policy's folders on that filesystem
    and its links pointing into it.
    """
    try:
        volume = find_volume(policy, crypttab)
    except SanitizeError as exc:
        return [str(exc)], ""
    mount = Path(str(volume.policy.mount))
    device = _mounted_device(mount, mountinfo)
    if device is None:
        return [f"{mount} is not mounted: the services would write to the root filesystem"], ""
    block = sysfs / "dev" / "block" / device
    try:
        uuid = (block / "dm" / "uuid").read_text().strip()
    except OSError:
        uuid = ""
    if not uuid.startswith("CRYPT-LUKS2-"):
        return [f"{mount} is mounted from {device}, which is not a LUKS2 mapping"], ""
    problems = []
    under = sorted(p.name for p in (block / "slaves").iterdir())
    if under != [volume.partition.name]:
        problems.append(f"the mapping is on {', '.join(under)}, not on {volume.partition.name}")
    try:
        metadata = luks_metadata(volume.partition)
    except SanitizeError as exc:
        return [*problems, str(exc)], ""
    tokens = metadata.get("tokens")
    sealed: set[str] = set()
    pcrs: set[int] = set()
    for token in tokens.values() if isinstance(tokens, dict) else []:
        if isinstance(token, dict) and token.get("type") == "systemd-tpm2":
            sealed |= {str(slot) for slot in token.get("keyslots", [])}
            pcrs |= set(token.get("tpm2-pcrs", []))
    keyslots = metadata.get("keyslots")
    slots = set(keyslots) if isinstance(keyslots, dict) else set()
    if not sealed:
        problems.append("no key sealed to the TPM 2.0 (no systemd-tpm2 token)")
    elif pcrs != set(volume.policy.tpm2_pcrs):
        problems.append(f"the key is sealed to PCRs {sorted(pcrs)}, not {volume.policy.tpm2_pcrs}")
    if slots - sealed:
        problems.append(
            f"keyslot {', '.join(sorted(slots - sealed))} is not the TPM's: "
            "a passphrase or recovery key opens the volume"
        )
    major, minor = (int(n) for n in device.split(":"))
    for folder in volume.policy.directories:
        path = Path(str(folder.path))
        try:
            on_volume = os.stat(path).st_dev == os.makedev(major, minor)
        except OSError:
            on_volume = False
        if not on_volume:
            problems.append(f"{path} is not on the volume")
    for link, target in volume.policy.links.items():
        if not Path(str(link)).resolve().is_relative_to(mount):
            problems.append(f"{link} does not lead into the volume (to {target})")
    segments = metadata.get("segments")
    first: object = next(iter(segments.values()), {}) if isinstance(segments, dict) else {}
    cipher = first.get("encryption", "?") if isinstance(first, dict) else "?"
    found = (
        f"{mount} on {volume.policy.mapper} (LUKS2, {cipher}) from {volume.partition.name}, "
        f"keyslot {', '.join(sorted(slots))} sealed to the TPM 2.0 (PCRs "
        f"{'+'.join(str(p) for p in sorted(pcrs))}), {len(volume.policy.directories)} folders on it"
    )
    return problems, found


def header_bytes(metadata: dict[str, object]) -> int:
    """Where the data segment starts: everything before it is header, JSON and keyslots."""
    segments = metadata.get("segments")
    if not isinstance(segments, dict) or not segments:
        raise SanitizeError("the LUKS2 header lists no data segment")
    return min(int(s["offset"]) for s in segments.values())


def remove_tokens(target: Target, metadata: dict[str, object]) -> str:
    """Remove every LUKS2 token (the TPM-sealed key is in the ``systemd-tpm2`` one)."""
    tokens = metadata.get("tokens")
    removed = []
    for token_id, token in tokens.items() if isinstance(tokens, dict) else []:
        done = _run(["cryptsetup", "token", "remove", "--token-id", token_id, str(target.path)])
        if done.returncode != 0:
            raise SanitizeError(f"cannot remove LUKS2 token {token_id}: {done.stderr.strip()}")
        kind = token.get("type", "?") if isinstance(token, dict) else "?"
        pcrs = token.get("tpm2-pcrs") if isinstance(token, dict) else None
        removed.append(f"{token_id} ({kind}{f', PCRs {pcrs}' if pcrs else ''})")
    if not removed:
        return "TPM-sealed key: no LUKS2 token to remove"
    return "TPM-sealed key destroyed: LUKS2 token " + ", ".join(removed) + " removed"


def overwrite_header(target: Target, length: int) -> str:
    """Zeros over the header area (both binary headers, JSON areas, keyslots), flushed."""
    length = min(length, target.size)
    fd = os.open(target.path, os.O_WRONLY)
    try:
        written = 0
        block = bytes(HEADER_CHUNK)
        while written < length:
            written += os.pwrite(fd, block[: min(HEADER_CHUNK, length - written)], written)
        os.fsync(fd)
    finally:
        os.close(fd)
    return f"overwrite: LUKS2 header area (both header copies, keyslots) 0..{length} bytes"


def luks_headers_left(path: Path, size: int) -> int:
    """LUKS magics (LUKS1/LUKS2 primary, LUKS2 secondary) at any header offset."""
    found = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in LUKS2_HEADER_OFFSETS:
            if offset + 6 <= size and os.pread(fd, 6, offset) in LUKS_MAGICS:
                found += 1
    finally:
        os.close(fd)
    return found
