"""``fieldkit image build tablet|hub``: Debian rootfs → Ansible roles (chroot) → bootable raw disk.

Steps, each shown as it runs:

1. **bootstrap**: mmdebstrap a Debian 12 rootfs with the profile's packages, sharing one apt
   archive cache between builds (``sync-in``/``sync-out`` hooks), so a rebuild downloads
   only what changed;
2. **wheelhouse**: ``pip wheel`` this fieldkit and its dependencies, for the venv on the device;
3. **roles**: ``ansible-playbook`` with the ``community.general.chroot`` connection, in a
   private mount namespace where /proc, /sys, /dev and /run are mounted for the rootfs only
   and a ``policy-rc.d`` keeps package scripts from starting services. Nothing is mounted
   in the build host's namespace and no task touches the running kernel;
4. **rerun** (optional): the same playbook again; the roles are idempotent when it reports
   ``changed=0``;
5. **pack**: an EFI system partition (FAT, built with mtools, holding systemd-boot, the
   kernel and the initrd) and an ext4 root (``mke2fs -d``) are written into a GPT raw disk
   image with sfdisk: no loop devices, so it runs in containers too;
6. **manifest**: packages with versions, the sha256 and size of the image, the policy
   renderings, timings and the Ansible change counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from fieldkit import __version__
from fieldkit.datavol import DATA_PARTITION_TYPE
from fieldkit.models import Strict, describe_validation_error
from fieldkit.policies import (
    KINDS,
    ansible_vars,
    default_policy_dir,
    load_policies,
    render,
)

REPO = Path(__file__).resolve().parents[3]
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ROOT_X86_64_TYPE = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"
MIB = 1024 * 1024
SECTOR = 512


class ImageBuildError(Exception):
    """A build step failed; the message names the step and where its log is."""


class DiskLayout(Strict):
    esp_mib: int = Field(default=256, ge=64, le=2048)
    root_headroom_mib: int = Field(default=768, ge=64)
    root_fill_factor: float = Field(default=1.15, ge=1.0, le=3.0)
    # The encrypted data volume's partition (third, last): a placeholder of this size that the
    # first boot grows to the end of the disk and formats LUKS2 (fieldkit.datavol). 0: none.
    data_mib: int = Field(default=0, ge=0, le=65536)


class ImageProfile(Strict):
    """An ``image/<role>.yaml`` file: what goes into the rootfs and how the disk is laid out."""

    kind: Literal["image"] = "image"
    version: Literal[1] = 1
    role: Literal["tablet", "hub"]
    suite: Literal["bookworm"] = "bookworm"
    architecture: Literal["amd64"] = "amd64"
    variant: Literal["apt", "minbase", "required", "important"] = "apt"
    sources: list[str] = Field(min_length=1)
    include: list[str] = Field(min_length=1)
    playbook: str = Field(pattern=r"^[a-z_]+\.yml$")
    hostname: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    kernel_cmdline: str = "ro quiet"
    disk: DiskLayout = DiskLayout()


def load_profile(path: Path) -> ImageProfile:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ImageBuildError(f"image profile {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ImageBuildError(f"image profile {path} is not valid YAML: {exc}") from None
    try:
        return ImageProfile.model_validate(raw)
    except ValidationError as exc:
        raise ImageBuildError(f"image profile {path}: {describe_validation_error(exc)}") from None


@dataclass
class BuildOptions:
    role: Literal["tablet", "hub"]
    out: Path
    cache: Path
    policies: Path = field(default_factory=default_policy_dir)
    profiles: Path = REPO / "image"
    ansible_dir: Path = REPO / "ansible"
    reuse_rootfs: bool = False
    rerun: bool = True
    pack: bool = True
    # The kit CA certificate a tablet pins its hub to before enrolment (PEM file).
    kit_ca: Path | None = None
    # Hub: the provisioning admin's SSH public keys (authorized_keys lines) and the crypt(5)
    # hash of the password sudo asks them for; without keys the hub has no admin login.
    admin_keys: Path | None = None
    admin_password_hash: Path | None = None


SSH_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ssh-rsa")
# yescrypt (Debian 12's default) or SHA-512 crypt: what shadow and sudo check on Debian 12.
PASSWORD_HASH = re.compile(
    r"^\$(y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,86}|6\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16})\$[./A-Za-z0-9]{43,86}$"
)


def admin_vars(role: str, options: BuildOptions) -> dict[str, str]:
    """The hub role's admin variables from the build's files, each checked: public keys only,
    a password hash only (never a password in clear, never a private key)."""
    given = [o for o in (options.admin_keys, options.admin_password_hash) if o is not None]
    if not given:
        return {}
    if role != "hub":
        raise ImageBuildError("--admin-ssh-keys and --admin-password-hash are for the hub only")
    from cryptography.hazmat.primitives.serialization import load_ssh_public_key

    values: dict[str, str] = {}
    if options.admin_keys is not None:
        try:
            lines = [ln.strip() for ln in options.admin_keys.read_text().splitlines()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ImageBuildError(f"--admin-ssh-keys {options.admin_keys}: {exc}") from None
        keys = [ln for ln in lines if ln and not ln.startswith("#")]
        for number, line in enumerate(keys, 1):
            try:
                if not line.startswith(SSH_KEY_TYPES):
                    raise ValueError("not an ssh-ed25519, ecdsa or ssh-rsa public key")
                load_ssh_public_key(line.encode())
            except ValueError as exc:
                raise ImageBuildError(
                    f"--admin-ssh-keys {options.admin_keys}: key {number}: {exc}"
                ) from None
        if not keys:
            raise ImageBuildError(f"--admin-ssh-keys {options.admin_keys}: no public key in it")
        values["hub_admin_authorized_keys"] = "\n".join(keys) + "\n"
    if options.admin_password_hash is not None:
        if options.admin_keys is None:
            raise ImageBuildError("--admin-password-hash needs --admin-ssh-keys (the login)")
        try:
            text = options.admin_password_hash.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ImageBuildError(f"--admin-password-hash: {exc}") from None
        if not PASSWORD_HASH.match(text):
            raise ImageBuildError(
                f"--admin-password-hash {options.admin_password_hash}: not a yescrypt ($y$) or "
                "SHA-512 ($6$) crypt hash (make it with `mkpasswd -m yescrypt`; never the password)"
            )
        values["hub_admin_password_hash"] = text
    return values


@dataclass
class PlaybookRun:
    seconds: float
    ok: int
    changed: int
    failed: int


@dataclass
class BuildResult:
    rootfs: Path
    disk: Path | None
    manifest: Path
    timings: dict[str, float]
    first_run: PlaybookRun | None
    rerun: PlaybookRun | None


Progress = Callable[[str], None]


def _print_progress(message: str) -> None:
    print(message, flush=True)


class ImageBuild:
    """One build of one profile into ``options.out``; see the module docstring for the steps."""

    def __init__(self, options: BuildOptions, progress: Progress = _print_progress) -> None:
        self.options = options
        self.progress = progress
        self.profile = load_profile(options.profiles / f"{options.role}.yaml")
        if self.profile.role != options.role:
            raise ImageBuildError(f"image/{options.role}.yaml describes a {self.profile.role}")
        self.policies = load_policies(options.policies)
        self.out = options.out
        self.rootfs = self.out / "rootfs"
        self.logs = self.out / "logs"
        self.timings: dict[str, float] = {}
        self.layout: dict[str, Any] = {}

    # --- the steps -------------------------------------------------------------------

    def run(self) -> BuildResult:
        if os.geteuid() != 0:
            raise ImageBuildError("image build needs root (mmdebstrap, chroot, mount namespace)")
        for tool in ("mmdebstrap", "unshare", "mke2fs", "mkfs.vfat", "mcopy", "sfdisk"):
            if shutil.which(tool) is None:
                raise ImageBuildError(f"{tool} is not installed (see dev.sh APT_PACKAGES)")
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        self.options.cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        steps = 6 if self.options.pack else 4
        with self._step(1, steps, "bootstrap"):
            self.bootstrap()
        with self._step(2, steps, "wheelhouse"):
            wheelhouse = self.wheelhouse()
        with self._step(3, steps, "roles"):
            first = self.apply_roles(wheelhouse, "roles")
        rerun = None
        if self.options.rerun:
            with self._step(4, steps, "rerun"):
                rerun = self.apply_roles(wheelhouse, "rerun")
        self.finalize_rootfs()
        disk = None
        if self.options.pack:
            with self._step(5, steps, "pack"):
                self.sweep_mounts("before pack")
                disk = self.pack()
        self.timings["total"] = round(time.monotonic() - started, 1)
        with self._step(steps, steps, "manifest"):
            self.sweep_mounts("before manifest")
            manifest = self.write_manifest(disk, first, rerun)
        return BuildResult(self.rootfs, disk, manifest, self.timings, first, rerun)

    @contextmanager
    def _step(self, number: int, total: int, name: str) -> Iterator[None]:
        self.progress(f"[{number}/{total}] {name} ...")
        started = time.monotonic()
        # Whatever a step (or a tool it ran: mmdebstrap, a killed unshare) left mounted in the
        # rootfs goes, even when the step failed: a later step or build must never walk, pack
        # or delete through a /proc, /sys or /dev mount.
        try:
            yield
        except BaseException:
            with suppress(ImageBuildError):  # the step's own error is the one to report
                self.sweep_mounts(name)
            raise
        self.sweep_mounts(name)
        self.timings[name] = round(time.monotonic() - started, 1)
        self.progress(f"[{number}/{total}] {name} done in {self.timings[name]:.1f} s")

    def sweep_mounts(self, when: str) -> list[Path]:
        """Unmount everything mounted under the rootfs (deepest first); say what it was."""
        if not self.rootfs.exists():
            return []
        left = unmount_under(self.rootfs)
        for path in left:
            self.progress(f"      {when}: unmounted {path}, left mounted in the rootfs")
        still = mounts_under(self.rootfs)
        if still:
            raise ImageBuildError(
                f"{when}: cannot unmount {', '.join(map(str, still))}; "
                "unmount them by hand before building again"
            )
        return left

    def bootstrap(self) -> None:
        # A rootfs from an interrupted build may still have /proc, /sys, /dev mounted in it:
        # never reuse or delete through them (rmtree would descend into the host's /dev).
        self.sweep_mounts("before bootstrap")
        if self.options.reuse_rootfs and (self.rootfs / "etc" / "os-release").exists():
            self.progress("      reusing the existing rootfs")
            return
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)
        cache = self.options.cache / "apt-archives"
        cache.mkdir(parents=True, exist_ok=True)
        p = self.profile
        cmd = [
            "mmdebstrap",
            "--mode=root",
            f"--variant={p.variant}",
            f"--architectures={p.architecture}",
            f"--include={','.join(p.include)}",
            # Keep the downloaded .debs until the customize hook has copied them to the cache.
            "--skip=download/empty",
            # Keep the package lists: the roles' apt tasks resolve against them.
            "--skip=cleanup/apt/lists",
            '--setup-hook=mkdir -p "$1/var/cache/apt/archives"',
            f"--setup-hook=sync-in {cache} /var/cache/apt/archives",
            f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
            f'--customize-hook=echo {p.hostname} > "$1/etc/hostname"',
            p.suite,
            str(self.rootfs),
            *p.sources,
        ]
        self._run(cmd, "bootstrap")

    def wheelhouse(self) -> Path:
        wheels = self.out / "wheelhouse"
        if wheels.exists():
            shutil.rmtree(wheels)
        wheels.mkdir()
        pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheels)]
        # The role's libraries at the versions and hashes of requirements/ROLE.lock (held to
        # dev.lock's versions: the image runs what the tests ran), then fieldkit itself. The
        # device installs `fieldkit[ROLE]` from these wheels only (--no-index).
        lock = REPO / "requirements" / f"{self.profile.role}.lock"
        if not lock.is_file():
            raise ImageBuildError(f"wheelhouse: no lock file {lock} (./dev.sh lock makes it)")
        self._run([*pip, "--require-hashes", "-r", str(lock)], "wheelhouse")
        self._run([*pip, "--no-deps", str(REPO)], "wheelhouse")
        return wheels

    def playbook_vars(self, wheelhouse: Path) -> Path:
        values = ansible_vars(self.policies, self.profile.role, self.options.policies.resolve())
        extra: dict[str, Any] = {
            "fieldkit_policy": values,
            "fieldkit_services_wheelhouse": str(wheelhouse),
        }
        if self.options.kit_ca is not None:
            extra["fieldkit_services_kit_ca"] = self.kit_ca_pem(self.options.kit_ca)
        extra |= admin_vars(self.profile.role, self.options)
        path = self.out / "policy-vars.json"
        path.write_text(json.dumps(extra, ensure_ascii=False, indent=1))
        return path

    @staticmethod
    def kit_ca_pem(path: Path) -> str:
        """The kit CA certificate, checked: a CA, and only a certificate (never a key)."""
        from cryptography import x509

        try:
            data = path.read_bytes()
            certificate = x509.load_pem_x509_certificate(data)
            constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints)
        except (OSError, ValueError, x509.ExtensionNotFound) as exc:
            raise ImageBuildError(f"--kit-ca {path}: not a CA certificate ({exc})") from None
        if not constraints.value.ca or b"PRIVATE KEY" in data:
            raise ImageBuildError(f"--kit-ca {path}: give the kit CA's certificate only")
        return data.decode("ascii")

    def apply_roles(self, wheelhouse: Path, log_name: str) -> PlaybookRun:
        inventory = self.out / "inventory.ini"
        inventory.write_text(
            f"[{self.profile.role}]\n{self.rootfs} ansible_connection=community.general.chroot\n"
        )
        extra = self.playbook_vars(wheelhouse)
        bindir = Path(sys.executable).parent
        playbook = [
            str(bindir / "ansible-playbook"),
            "-i",
            str(inventory),
            "-e",
            f"@{extra}",
            str(self.options.ansible_dir / self.profile.playbook),
        ]
        env = os.environ | {
            "ANSIBLE_CONFIG": str(self.options.ansible_dir / "ansible.cfg"),
            "ANSIBLE_HOME": str(self.options.cache / "ansible"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        }
        started = time.monotonic()
        with self._chroot_ready():
            if not any((self.rootfs / "var/lib/apt/lists").glob("*_Packages*")):
                # A finalized rootfs has no lists; apt in the roles needs them.
                refresh = ["chroot", str(self.rootfs), "apt-get", "update", "-qq"]
                self._run(self._in_private_mounts(refresh), log_name)
            output = self._run(self._in_private_mounts(playbook), log_name, env=env, tasks=True)
        seconds = round(time.monotonic() - started, 1)
        recap = re.search(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=\d+\s+failed=(\d+)", output)
        if recap is None:
            raise ImageBuildError(f"{log_name}: no PLAY RECAP; see {self.logs / log_name}.log")
        ok, changed, failed = (int(g) for g in recap.groups())
        self.progress(f"      ansible: ok={ok} changed={changed} failed={failed} in {seconds} s")
        return PlaybookRun(seconds=seconds, ok=ok, changed=changed, failed=failed)

    @contextmanager
    def _chroot_ready(self) -> Iterator[None]:
        """policy-rc.d while the roles run: package scripts must not start services."""
        policy_rc = self.rootfs / "usr/sbin/policy-rc.d"
        policy_rc.write_text(
            "#!/bin/sh\n# fieldkit image build: no service starts in a chroot\nexit 101\n"
        )
        policy_rc.chmod(0o755)
        try:
            yield
        finally:
            policy_rc.unlink(missing_ok=True)

    def _in_private_mounts(self, command: Sequence[str]) -> list[str]:
        # The mounts exist only in this new mount namespace and vanish with it.
        r = self.rootfs
        script = (
            "set -e; "
            f"mount -t proc proc '{r}/proc'; "
            f"mount --rbind /sys '{r}/sys'; mount --make-rslave '{r}/sys'; "
            f"mount --rbind /dev '{r}/dev'; mount --make-rslave '{r}/dev'; "
            f"mount -t tmpfs tmpfs '{r}/run'; "
            'exec "$@"'
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *command,
        ]

    def finalize_rootfs(self) -> None:
        r = self.rootfs
        (r / "etc/machine-id").write_text("")  # systemd makes a fresh one on first boot
        (r / "var/lib/dbus/machine-id").unlink(missing_ok=True)
        for stale in (r / "var/cache/apt/archives").glob("*.deb"):
            stale.unlink()
        for lists in (r / "var/lib/apt/lists").glob("*_Packages*"):
            lists.unlink()

    # --- packing ---------------------------------------------------------------------

    def integrity_baseline(self) -> None:
        """AIDE's baseline of the finished tree (issue 19), when the roles installed AIDE: made
        after the last file of the root file system is written (fstab, crypttab), before it is
        packed, with the image's own aide and rules (``/etc/aide/aide.conf``, integrity role).
        The booted device checks itself against it after each boot and daily."""
        r = self.rootfs
        if not (r / "usr/bin/aide").exists() or not (r / "etc/aide/aide.conf").exists():
            return
        database = r / "var/lib/aide"
        database.mkdir(mode=0o700, parents=True, exist_ok=True)
        (database / "aide.db.new").unlink(missing_ok=True)
        started = time.monotonic()
        init = ["chroot", str(r), "/usr/bin/aide", "--config", "/etc/aide/aide.conf", "--init"]
        self._run(self._in_private_mounts(init), "pack-integrity")
        (database / "aide.db.new").replace(database / "aide.db")
        (database / "aide.db").chmod(0o600)
        self.timings["integrity_baseline"] = round(time.monotonic() - started, 1)

    def pack(self) -> Path:
        r = self.rootfs
        kernels = sorted((r / "boot").glob("vmlinuz-*"))
        initrds = sorted((r / "boot").glob("initrd.img-*"))
        if not kernels or not initrds:
            raise ImageBuildError("pack: the rootfs has no kernel/initrd in /boot")
        bootloader = r / "usr/lib/systemd/boot/efi/systemd-bootx64.efi"
        if not bootloader.exists():
            raise ImageBuildError("pack: systemd-boot-efi is not in the rootfs (profile include)")
        disk_id, esp_id, root_id, data_id = (str(uuid.uuid4()) for _ in range(4))
        fs_uuid = str(uuid.uuid4())
        volume = self.policies.erasure.data_volume if self.profile.role == "tablet" else None
        data_bytes = self.profile.disk.data_mib * MIB
        if (volume is None) != (data_bytes == 0):
            raise ImageBuildError(
                "pack: erasure.yaml's data_volume and the profile's disk.data_mib go together"
            )
        fstab = (
            "# fieldkit image: root by partition UUID; tmpfs mounts are systemd units\n"
            f"PARTUUID={root_id} / ext4 defaults,errors=remount-ro 0 1\n"
            # Mounted when a kernel update copies itself there (fieldkit-esp-sync), not before.
            f"PARTUUID={esp_id} /efi vfat noauto,x-systemd.automount,umask=0077 0 2\n"
        )
        if volume is not None:
            # The encrypted data volume (fieldkit.datavol): opened with the TPM, mounted here.
            fstab += volume.fstab_line()
            (r / "etc/crypttab").write_text(
                "# fieldkit image: the data volume, LUKS2, key sealed to the TPM 2.0\n"
                + volume.crypttab_line(data_id)
            )
        (r / "etc/fstab").write_text(fstab)
        (r / "efi").mkdir(mode=0o700, exist_ok=True)
        self.integrity_baseline()
        work = self.out / "pack"
        if work.exists():
            shutil.rmtree(work)
        work.mkdir()

        esp = work / "esp.img"
        self._run(
            [
                "mkfs.vfat",
                "-F",
                "32",
                "-n",
                "FK-ESP",
                "-C",
                str(esp),
                str(self.profile.disk.esp_mib * 1024),
            ],
            "pack-esp",
        )
        loader = work / "loader.conf"
        # editor no: nobody at the kiosk may edit the kernel command line at boot.
        loader.write_text("default fieldkit.conf\ntimeout 0\neditor no\n")
        entry = work / "fieldkit.conf"
        entry.write_text(
            f"title fieldkit {self.profile.role}\n"
            "linux /fieldkit/vmlinuz\n"
            "initrd /fieldkit/initrd.img\n"
            f"options root=PARTUUID={root_id} {self.profile.kernel_cmdline}\n"
        )
        mtools = os.environ | {"MTOOLS_SKIP_CHECK": "1"}
        img = f"-i{esp}"
        for directory in (
            "::/EFI",
            "::/EFI/BOOT",
            "::/EFI/systemd",
            "::/loader",
            "::/loader/entries",
            "::/fieldkit",
        ):
            self._run(["mmd", img, directory], "pack-esp", env=mtools)
        for source, target in (
            (bootloader, "::/EFI/BOOT/BOOTX64.EFI"),
            (bootloader, "::/EFI/systemd/systemd-bootx64.efi"),
            (loader, "::/loader/loader.conf"),
            (entry, "::/loader/entries/fieldkit.conf"),
            (kernels[-1], "::/fieldkit/vmlinuz"),
            (initrds[-1], "::/fieldkit/initrd.img"),
        ):
            self._run(["mcopy", img, str(source), target], "pack-esp", env=mtools)

        used = _tree_bytes(r)
        root_bytes = (
            int(used * self.profile.disk.root_fill_factor)
            + self.profile.disk.root_headroom_mib * MIB
        )
        root_bytes = -(-root_bytes // MIB) * MIB
        root = work / "root.img"
        self._run(
            [
                "mke2fs",
                "-q",
                "-t",
                "ext4",
                "-L",
                "fieldkit-root",
                "-U",
                fs_uuid,
                "-E",
                "root_owner=0:0",
                "-d",
                str(r),
                str(root),
                f"{root_bytes // 1024}k",
            ],
            "pack-root",
        )

        esp_bytes = esp.stat().st_size
        start = MIB
        total = start + esp_bytes + root_bytes + data_bytes + MIB  # + the backup GPT
        disk = self.out / f"fieldkit-{self.profile.role}.raw"
        disk.unlink(missing_ok=True)
        with disk.open("wb") as handle:
            handle.truncate(total)
        table = (
            "label: gpt\n"
            f"label-id: {disk_id}\n"
            f"start={start // SECTOR}, size={esp_bytes // SECTOR}, type={ESP_TYPE}, "
            f'uuid={esp_id}, name="EFI system"\n'
            f"start={(start + esp_bytes) // SECTOR}, size={root_bytes // SECTOR}, "
            f'type={ROOT_X86_64_TYPE}, uuid={root_id}, name="fieldkit-root"\n'
        )
        if volume is not None:
            table += (
                f"start={(start + esp_bytes + root_bytes) // SECTOR}, "
                f"size={data_bytes // SECTOR}, type={DATA_PARTITION_TYPE}, uuid={data_id}, "
                f'name="{volume.name}"\n'
            )
        self._run(
            ["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", str(disk)],
            "pack-disk",
            stdin=table,
        )
        _copy_into(esp, disk, start)
        _copy_into(root, disk, start + esp_bytes)
        shutil.rmtree(work)
        self.layout = {
            "disk_guid": disk_id,
            "esp": {"partuuid": esp_id, "offset": start, "bytes": esp_bytes},
            "root": {
                "partuuid": root_id,
                "fs_uuid": fs_uuid,
                "offset": start + esp_bytes,
                "bytes": root_bytes,
            },
        }
        if volume is not None:
            # Empty until the first boot formats it (LUKS2); grown there to the disk's end.
            self.layout["data"] = {
                "partuuid": data_id,
                "name": volume.name,
                "offset": start + esp_bytes + root_bytes,
                "bytes": data_bytes,
            }
        return disk

    # --- manifest --------------------------------------------------------------------

    def packages(self) -> list[dict[str, str]]:
        out = subprocess.run(
            [
                "dpkg-query",
                f"--admindir={self.rootfs}/var/lib/dpkg",
                "-W",
                "-f",
                "${Package}\t${Version}\t${Architecture}\n",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = [line.split("\t") for line in out.splitlines() if line]
        return [{"package": p, "version": v, "architecture": a} for p, v, a in rows]

    def write_manifest(
        self, disk: Path | None, first: PlaybookRun | None, rerun: PlaybookRun | None
    ) -> Path:
        renderings = {}
        for kind in KINDS:
            for target, body in render(self.policies, kind, self.profile.role).items():
                renderings[str(target)] = hashlib.sha256(body.encode()).hexdigest()
        manifest: dict[str, Any] = {
            "schema": 1,
            "role": self.profile.role,
            "suite": self.profile.suite,
            "architecture": self.profile.architecture,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fieldkit_version": __version__,
            "source_commit": _git_commit(),
            "timings_seconds": self.timings,
            "ansible": {
                "first_run": first.__dict__ if first else None,
                "rerun": rerun.__dict__ if rerun else None,
            },
            "rootfs_bytes": _tree_bytes(self.rootfs),
            "policy_renderings_sha256": renderings,
            "packages": self.packages(),
        }
        if disk is not None:
            manifest["image"] = {
                "file": disk.name,
                "bytes": disk.stat().st_size,
                "allocated_bytes": disk.stat().st_blocks * 512,
                "sha256": _sha256(disk),
                "layout": self.layout,
            }
        path = self.out / f"fieldkit-{self.profile.role}.manifest.json"
        path.write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        return path

    # --- running commands ------------------------------------------------------------

    def _run(
        self,
        cmd: Sequence[str],
        step: str,
        *,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
        tasks: bool = False,
    ) -> str:
        """Run one command, logging to logs/<step>.log; show Ansible task names as progress."""
        log = self.logs / f"{step}.log"
        lines: list[str] = []
        with log.open("a", encoding="utf-8") as sink:
            sink.write(f"$ {' '.join(cmd)}\n")
            proc = subprocess.Popen(
                list(cmd),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            if stdin is not None and proc.stdin is not None:
                proc.stdin.write(stdin)
                proc.stdin.close()
            for line in proc.stdout or ():
                sink.write(line)
                lines.append(line)
                if tasks and line.startswith("TASK ["):
                    self.progress("      " + line.strip().rstrip("*").strip())
            code = proc.wait()
        if code != 0:
            tail = "".join(lines[-15:])
            raise ImageBuildError(f"{step} failed (exit {code}); log {log}\n{tail}")
        return "".join(lines)


def _unescape_mountinfo(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal escapes.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(root: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points at or below ``root`` in this mount namespace, deepest first."""
    base = os.path.realpath(root)
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = _unescape_mountinfo(fields[4])
        if point == base or point.startswith(base.rstrip("/") + "/"):
            found.append(Path(point))
    return sorted(set(found), key=lambda p: (len(p.parts), str(p)), reverse=True)


def unmount_under(root: Path) -> list[Path]:
    """Unmount every mount below ``root`` (not ``root`` itself), deepest first.

    A plain unmount first; a busy one is detached lazily (``umount -l``), so nothing of it
    stays reachable through the rootfs. Returns what was unmounted.
    """
    done = []
    for _ in range(8):  # a recursive bind can reveal mounts that were hidden under others
        points = [p for p in mounts_under(root) if p != Path(os.path.realpath(root))]
        if not points:
            break
        for point in points:
            plain = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if plain.returncode != 0:
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
            done.append(point)
    return done


def _tree_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root``, never crossing into a mount below it.

    Two guards: a directory on another device (``st_dev``) is not entered, and neither is a
    mount point listed in /proc/self/mountinfo (a bind mount of the same filesystem has the
    same ``st_dev``). A /proc left mounted in a rootfs changes under the walk and would fail it.
    """
    device = os.lstat(root).st_dev
    below = {str(p) for p in mounts_under(root)} - {os.path.realpath(root)}
    total = 0
    for dirpath, dirs, files in os.walk(root):
        keep = []
        for name in dirs:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue
            if info.st_dev == device and os.path.realpath(path) not in below:
                keep.append(name)
        dirs[:] = keep
        for name in files:
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)
            except FileNotFoundError:
                continue  # gone between listing and reading
            if stat.S_ISREG(info.st_mode) and info.st_dev == device:
                total += info.st_size
    return total


def _copy_into(source: Path, disk: Path, offset: int) -> None:
    # Copy in chunks and skip runs of zeros, so the raw image stays sparse.
    chunk = 4 * MIB
    zero = bytes(chunk)
    with source.open("rb") as src, disk.open("r+b") as dst:
        position = offset
        while block := src.read(chunk):
            if block != zero[: len(block)]:
                dst.seek(position)
                dst.write(block)
            position += len(block)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None
