"""The tablet's encrypted data volume (R12, R24): the policy, and the files that make it.

Everything on a tablet that must survive a reboot and may hold session-derived data (sync's
outbox, the kiosk's audit trail, the wipe's evidence store, the device keys and enrolment
bundle) lives on one LUKS2 volume in the disk's third GPT partition, mounted at
``/var/lib/fieldkit``. ``policies/erasure.yaml`` (``data_volume``) is the one source: the image
build writes the partition and ``/etc/crypttab``/``/etc/fstab`` from it, the hardening role
installs the units rendered here, the service units require the volume, and ``fieldkit wipe
device`` finds the volume to purge through the same policy.

How it comes up (docs/images.md, "Encrypted data volume"):

1. first boot only, ``fieldkit-datavol-format.service`` (pulled in before
   ``systemd-cryptsetup@<name>.service``): no TPM 2.0, no volume (the tablet cannot be
   fielded); otherwise the partition is grown to the end of the disk, formatted LUKS2 with a
   random key held in RAM, the TPM 2.0 enrolled with ``systemd-cryptenroll`` (sealed to the
   policy's PCRs), and the random key's keyslot killed: the TPM is the only way in;
2. every boot, ``/etc/crypttab`` (``tpm2-device=auto,headless=true``) opens it without a
   passphrase, and ``/etc/fstab`` mounts it (the format step made its ext4);
3. ``fieldkit-datavol.service`` makes the policy's folders on it; every fieldkit service
   unit requires that service.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from pydantic import Field, field_validator, model_validator

from fieldkit.models import Strict

_OWNER = r"^[a-z_][a-z0-9_-]{0,30}$"
# Generic Linux data: not a type systemd-gpt-auto-generator would mount on its own.
DATA_PARTITION_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
FORMAT_UNIT = "fieldkit-datavol-format.service"
LAYOUT_UNIT = "fieldkit-datavol.service"
FORMAT_SCRIPT = PurePosixPath("/usr/local/lib/fieldkit/datavol-format.sh")
TMPFILES = PurePosixPath("/etc/fieldkit/datavol.tmpfiles.conf")
# Where ``fieldkit wipe device`` leaves the certificate on a tablet: the root filesystem,
# which the purge of the data volume does not touch.
CERTIFICATE_DIR = PurePosixPath("/var/lib/fieldkit-certificates")


class VolumeDirectory(Strict):
    path: PurePosixPath
    mode: str = Field(pattern=r"^[0-7]{4}$")
    owner: str = Field(default="root", pattern=_OWNER)
    group: str | None = Field(default=None, pattern=_OWNER)
    why: str = ""


class DataVolume(Strict):
    """``data_volume`` in ``erasure.yaml``."""

    # The dm-crypt name (/dev/mapper/<name>), the GPT partition name and the LUKS label.
    name: str = Field(default="fieldkit-data", pattern=r"^[a-z][a-z0-9-]{0,30}$")
    mount: PurePosixPath = PurePosixPath("/var/lib/fieldkit")
    # PCR 7: the Secure Boot state and keys. A changed Secure Boot configuration (or a disk
    # moved to another machine) no longer unseals the key.
    tpm2_pcrs: list[int] = Field(default=[7], min_length=1)
    directories: list[VolumeDirectory] = Field(min_length=1)
    # Paths the services use that are not below the mount: symlinks into the volume.
    links: dict[PurePosixPath, PurePosixPath] = Field(default_factory=dict)

    @field_validator("tpm2_pcrs")
    @classmethod
    def _pcr_range(cls, pcrs: list[int]) -> list[int]:
        if any(not 0 <= p <= 23 for p in pcrs):
            raise ValueError("TPM 2.0 PCRs are 0 to 23")
        return pcrs

    @model_validator(mode="after")
    def _on_the_volume(self) -> DataVolume:
        if not self.mount.is_absolute() or ".." in self.mount.parts:
            raise ValueError("mount must be an absolute path")
        for path in [d.path for d in self.directories] + list(self.links.values()):
            if not path.is_relative_to(self.mount) or ".." in path.parts:
                raise ValueError(f"{path} is not on the volume ({self.mount})")
        for link in self.links:
            if link.is_relative_to(self.mount):
                raise ValueError(f"link {link} is on the volume already")
        return self

    @property
    def mapper(self) -> PurePosixPath:
        return PurePosixPath("/dev/mapper") / self.name

    @property
    def cryptsetup_unit(self) -> str:
        return f"systemd-cryptsetup@{systemd_escape(self.name)}.service"

    def crypttab_line(self, partuuid: str) -> str:
        # headless: never ask for a passphrase at the kiosk (there is none); nofail: a tablet
        # without its volume boots to a kiosk whose services do not start, not to a shell.
        return f"{self.name} PARTUUID={partuuid} none luks,tpm2-device=auto,headless=true,nofail\n"

    def fstab_line(self) -> str:
        # The device appears only after the TPM unsealed the key, and on first boot after the
        # format (grow, luksFormat, enrol): more than systemd's default 90 s on a slow device
        # (and in a loaded TCG VM, where the default ran out: docs/images.md).
        return (
            f"{self.mapper} {self.mount} ext4 "
            "defaults,nofail,nodev,nosuid,noexec,x-systemd.device-timeout=10min 0 2\n"
        )


def systemd_escape(name: str) -> str:
    """``systemd-escape`` for a unit name's instance part (no slashes here)."""
    out = []
    for i, ch in enumerate(name):
        if ch.isascii() and (ch.isalnum() or ch in "_:" or (ch == "." and i > 0)):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


FORMAT_SH = r"""#!/bin/sh
# {generated}
# First boot: make the fieldkit data volume (LUKS2) and seal its key to the TPM 2.0.
# Runs before {cryptsetup_unit}; does nothing once the partition holds LUKS.
set -eu
NAME={name}
PCRS={pcrs}
say() {{ echo "fieldkit-datavol: $*"; }}
source=$(awk -v n="$NAME" '$1 == n {{ print $2 }}' /etc/crypttab)
case "$source" in
    PARTUUID=*) dev=/dev/disk/by-partuuid/${{source#PARTUUID=}} ;;
    *) say "no $NAME line with a PARTUUID in /etc/crypttab"; exit 1 ;;
esac
if ! udevadm wait --timeout=90 "$dev"; then
    say "$dev did not appear within 90 s"
    exit 1
fi
if cryptsetup isLuks "$dev" && cryptsetup luksDump "$dev" | grep -q systemd-tpm2; then
    say "$dev holds the LUKS2 volume"
    exit 0
fi
# Not LUKS, or LUKS without its TPM token (a first boot cut short before the enrolment: never
# opened, nothing on it): made (again) from the start.
# No TPM 2.0, no volume: its key would have to be stored in the clear or typed at every boot.
# Every fieldkit service requires the volume, so this tablet cannot be fielded.
# This unit starts once udev's coldplug is queued, not done: the TPM's driver may still be
# loading, and on a loaded machine that took more than the 10 s this once waited (a first boot
# failed so). 90 s, as for a disk.
if ! udevadm wait --timeout=90 /dev/tpmrm0; then
    say "no TPM 2.0 (/dev/tpmrm0) after 90 s: the data volume is not made;" \
        "this tablet cannot be fielded"
    exit 1
fi
part=$(readlink -f "$dev")
disk=/dev/$(lsblk -ndo PKNAME "$part")
number=$(cat "/sys/class/block/${{part##*/}}/partition")
# The image holds a small placeholder: grow it to the end of the disk it was written to.
sfdisk --quiet --no-reread --no-tell-kernel --relocate gpt-bak-std "$disk"
echo ", +" | sfdisk --quiet --no-reread --no-tell-kernel -N "$number" "$disk"
partx --update --nr "$number" "$disk"
udevadm settle --timeout=30
say "partition $number of $disk: $(blockdev --getsize64 "$part") bytes"
# A random key that exists only in RAM (/run is tmpfs) until the TPM holds it.
umask 077
key=/run/fieldkit-datavol.key
trap 'head -c 64 /dev/zero > "$key" 2>/dev/null; rm -f "$key"' EXIT
head -c 64 /dev/urandom > "$key"
cryptsetup luksFormat --batch-mode --type luks2 --label "$NAME" \
    --pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file "$key" "$dev"
# The filesystem is made here, not by x-systemd.makefs: udev (99-systemd.rules) keeps a dm-crypt
# device without a filesystem "not ready", so systemd would wait for it forever.
cryptsetup open --key-file "$key" "$dev" "$NAME-format"
mkfs.ext4 -q -L "$NAME" "/dev/mapper/$NAME-format"
cryptsetup close "$NAME-format"
systemd-cryptenroll --unlock-key-file="$key" --tpm2-device=auto --tpm2-pcrs="$PCRS" "$dev"
# The random key's keyslot goes: no passphrase and no recovery key open this volume.
cryptsetup luksKillSlot --batch-mode "$dev" 0
say "LUKS2 volume made on $dev, key sealed to the TPM 2.0 (PCRs $PCRS), keyslot 0 killed"
"""


def render(volume: DataVolume, generated: str) -> dict[PurePosixPath, str]:
    """The files installed on a tablet for its data volume (the crypttab and fstab lines are
    written by the image build's pack step, which knows the partition's UUID)."""
    pcrs = "+".join(str(p) for p in volume.tpm2_pcrs)
    system = PurePosixPath("/etc/systemd/system")
    files: dict[PurePosixPath, str] = {
        FORMAT_SCRIPT: FORMAT_SH.format(
            generated=generated,
            cryptsetup_unit=volume.cryptsetup_unit,
            name=volume.name,
            pcrs=pcrs,
        ),
        system / FORMAT_UNIT: (
            f"# {generated}\n"
            "[Unit]\n"
            f"Description=fieldkit data volume: first-boot LUKS2 format, key sealed to the TPM\n"
            "DefaultDependencies=no\n"
            "After=systemd-udevd.service systemd-udev-trigger.service\n"
            f"Before={volume.cryptsetup_unit} shutdown.target\n"
            "Conflicts=shutdown.target\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            "RemainAfterExit=yes\n"
            f"ExecStart=/bin/sh {FORMAT_SCRIPT}\n"
        ),
        system / f"{volume.cryptsetup_unit}.d" / "50-fieldkit-format.conf": (
            f"# {generated}\n[Unit]\nRequires={FORMAT_UNIT}\nAfter={FORMAT_UNIT}\n"
        ),
        TMPFILES: "\n".join(
            [
                f"# {generated}",
                f"d {volume.mount} 0755 root root -",
                *(
                    f"d {d.path} {d.mode} {d.owner} {d.group or d.owner} -"
                    for d in volume.directories
                ),
                "",
            ]
        ),
        system / LAYOUT_UNIT: (
            f"# {generated}\n"
            "[Unit]\n"
            f"Description=fieldkit data volume: its folders on {volume.mount}\n"
            f"Requires={mount_unit(volume.mount)}\n"
            f"After={mount_unit(volume.mount)}\n\n"
            "[Service]\n"
            "Type=oneshot\n"
            "RemainAfterExit=yes\n"
            f"ExecStart=/bin/systemd-tmpfiles --create {TMPFILES}\n\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        ),
    }
    return files


def mount_unit(path: PurePosixPath) -> str:
    return "-".join(systemd_escape(part) for part in path.parts[1:]) + ".mount"
