"""Boot a built image in QEMU the way the device boots it, and read back what came up.

The firmware is OVMF (UEFI), the disk is a qcow2 overlay on the built raw image, so the image
itself is never written. The path is the device's: firmware → systemd-boot on the ESP → kernel
and initrd from the ESP → root found by PARTUUID → systemd. Only two things differ from the
device, both on the overlay's copy of the ESP:

- a second loader entry, ``fieldkit-boottest.conf``, with the image's own options line plus
  ``console=ttyS0``, ``systemd.run=`` and ``systemd.setenv=WLR_RENDERER=pixman`` (the VM's
  display has no 3D acceleration; see :data:`VM_RENDERER`), made the default in ``loader.conf``;
- the command ``systemd.run=`` starts (systemd-run-generator) is :data:`REPORT_SCRIPT`, handed
  to the guest over QEMU's fw_cfg, so the image carries no test hook.

The script waits for ``systemctl is-system-running --wait``, writes sections of command
output to the second serial port (``/dev/ttyS1``), and powers the machine off. The first serial
port carries the console, kept for diagnosis. The VM has no network device (``-nic none``)
unless the caller gives one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from tests.support.apparmor_boot import TABLET_PROBE
from tests.support.apparmor_boot import sections as apparmor_sections

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
FW_CFG_NAME = "opt/org.fieldkit/boot-report"
TEST_ENTRY = "fieldkit-boottest.conf"
# The host's CPU model, minus IA32_ARCH_CAPABILITIES: under nested KVM (this build machine is a
# VM itself) QEMU aborts setting that MSR ("failed to set MSR 0x10a").
KVM_CPU = "host,-arch-capabilities"
# TCG: all the CPU features QEMU emulates (Chromium wants more than qemu64's), one host thread
# per virtual CPU.
TCG = ["-accel", "tcg,thread=multi", "-cpu", "max"]
# wlroots renderer for the VM only (see prepare_overlay); never set in the image.
VM_RENDERER = "WLR_RENDERER=pixman"
SECTION = "==> "
END = "end"

# Runs inside the booted image as root. Every section is one command's output, verbatim; the
# host parses and judges (tests/test_image_boot.py), so the script has no expectations in it.
SCRIPT_HEAD = r"""#!/bin/sh
# fieldkit boot report: handed to the VM over fw_cfg and started by systemd-run-generator.
# Never installed in the image.
set -u
if [ "${1-}" = launch ]; then
    # kernel-command-line.service is a oneshot inside the boot transaction: waiting there for
    # the boot to finish would wait for itself. Continue in a unit started outside of it.
    cp "$0" /run/boot-report.sh
    exec systemd-run --unit=boot-report --no-block --quiet /bin/sh /run/boot-report.sh report
fi
exec >/dev/ttyS1 2>&1
export COLUMNS=400 SYSTEMD_COLORS=0 SYSTEMD_PAGER=
section() { printf '\n==> %s\n' "$1"; }
units() {
    systemctl list-units --all --full --plain --no-legend --no-pager "$@" | awk '{print $1}'
}
# Deadlines, not timings: each wait ends as soon as its condition holds.
wait_for() {
    deadline=$(($(date +%s) + $1)); shift
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 1
    done
}
"""
# fieldkit units that are not fieldkit services (one list: the report's settle wait skips them,
# field_boot's every-service check leaves them out): the kiosk's compositor, the data volume's,
# the bus credentials' and the site network's oneshots, the hardening's integrity check (AIDE,
# started by its timer at boot; the kit test found it still running when the report looked) and
# the audit summary. Shell glob patterns.
NOT_SERVICES = (
    "fieldkit-kiosk-browser.service",
    "fieldkit-datavol*.service",
    "fieldkit-site-network.service",
    "fieldkit-bus-credentials.service",
    "fieldkit-integrity-check.service",
    "fieldkit-audit-summary.service",
)
REPORT_SCRIPT = (
    SCRIPT_HEAD
    + r"""settled() {
    # A fieldkit service counts as up once systemd has its READY=1 (Type=notify: sent once its
    # config, bus and work thread answer; the kiosk's by its gunicorn worker, which logs no
    # "running" line); one still starting, or restarting, is not settled yet.
    for unit in $(units 'fieldkit-*.service'); do
        case "$unit" in
            # not fieldkit services (NOT_SERVICES)
            """
    + "|".join(NOT_SERVICES)
    + r""") continue ;;
        esac
        state=$(systemctl show -P ActiveState "$unit")
        case "$state" in
            activating|deactivating|reloading) return 1 ;;
        esac
    done
}
section state
timeout 300 systemctl is-system-running --wait
section settle
wait_for 180 settled && echo settled || echo "not settled"
wait_for 180 pgrep -u kiosk -x chromium >/dev/null && echo chromium || echo "no chromium"
section boot-time
systemd-analyze time --no-pager
section failed
systemctl list-units --all --full --state=failed --plain --no-legend --no-pager
section failed-journal
# What each failed unit said (a first-boot LUKS format failed once under load with nothing
# else to go on): its last lines of this boot.
for unit in $(systemctl list-units --all --full --state=failed --plain --no-legend \
        --no-pager | awk '{print $1}'); do
    echo "--- $unit"
    journalctl -b -u "$unit" --no-pager -q -o cat | tail -n 25
done
section active-count
systemctl list-units --all --full --state=active --plain --no-legend --no-pager | wc -l
section units
systemctl list-units --all --full --plain --no-legend --no-pager --type=service,mount,socket
section fieldkit-show
for unit in $(units 'fieldkit-*'); do
    systemctl show --no-pager -p Id,ActiveState,SubState,Result,NRestarts,UnitFileState \
        -p ConditionResult,User,NoNewPrivileges,ProtectSystem,PrivateUsers "$unit"
    echo
done
section bus-credentials
# Issue 17: the bus passwords are root's; each unit is handed its own (LoadCredential=); the
# compliance run's audit identity has none; a service with a user of its own reads the
# shared config but not the credentials nor the kiosk's state.
stat -c 'file %U %a %n' /run/fieldkit/credentials /run/fieldkit/credentials/*
echo "passwd $(cut -d: -f1 /run/fieldkit/broker/fieldkit.passwd | sort | tr '\n' ' ')"
for unit in $(units 'fieldkit-*.service'); do
    for f in "/run/credentials/$unit"/*; do [ -e "$f" ] && echo "unit $unit ${f##*/}"; done
done
for user in $(getent passwd | cut -d: -f1 | grep '^fieldkit-'); do
    echo "user $user $(id -gn "$user")"
    for f in /run/fieldkit/credentials/kiosk /var/lib/fieldkit/audit /etc/fieldkit/device.toml \
        /var/lib/fieldkit/enrol; do
        if runuser -u "$user" -- ls "$f" >/dev/null 2>&1 && runuser -u "$user" -- test -r "$f"
        then echo "reads $user $f"; else echo "denied $user $f"; fi
    done
done
sharers=$(getent group fieldkit-enrol | cut -d: -f4 | tr ',' '\n' | sort | paste -sd,)
echo "group fieldkit-enrol $sharers"
stat -c 'enrol %U %G %a' /var/lib/fieldkit/enrol
section security
for unit in $(units 'fieldkit-*.service'); do
    systemd-analyze security --no-pager "$unit" | grep 'Overall exposure level'
done
section nft
nft list ruleset
section usbguard
systemctl is-active usbguard.service
usbguard list-rules
section usb-devices
usbguard list-devices
section usb-disks
lsblk -dn -o NAME,TRAN | grep -w usb || echo none
section mounts
cat /proc/self/mounts
section tmpfs-owners
for target in $(findmnt -rn -t tmpfs -o TARGET); do stat -c '%U %a %n' "$target"; done
section device-config
test -e /etc/fieldkit/device.toml && echo present || echo absent
section swaps
cat /proc/swaps
section journal-files
find /run/log/journal /var/log/journal -name '*.journal' 2>/dev/null
section sysctl
sysctl kernel.core_pattern fs.suid_dumpable
section kiosk
cage=$(pgrep -o -x cage)
ps -ww -o pid=,user=,args= -p "${cage:-0}"
section kiosk-children
ps -ww -o pid=,ppid=,user=,comm=,args= --ppid "${cage:-0}"
section kiosk-journal
# cage's and Chromium's output by identifier too: an image whose unit opens a login session
# (PAMName=) has it filed under session-N.scope, not under the unit.
journalctl -b --no-pager -q -o short-monotonic -u fieldkit-kiosk-browser.service | tail -n 10
journalctl -b --no-pager -q -o short-monotonic -t cage -t chromium | tail -n 30
pgrep -a Xwayland || echo "no Xwayland"
ls /sys/class/drm
section journal-errors
journalctl -b --no-pager -q -p err -o short-monotonic
"""
    # Issue 19: AppArmor enforcing, every fieldkit process confined, a refusal logged.
    + apparmor_sections(TABLET_PROBE)
    + r"""# @EXTRA@
section end
sync
systemctl poweroff --no-block
"""
)
EXTRA_MARK = "# @EXTRA@"
FW_CFG_PREFIX = "opt/org.fieldkit/"


class BootError(Exception):
    """The VM could not be started or did not report; the message says why and where to look."""


@dataclass
class BootReport:
    """What the booted image reported, section by section, and how the boot went."""

    sections: dict[str, str]
    accelerator: str
    seconds: float
    console: Path
    command_line: str
    notes: list[str] = field(default_factory=list)

    def lines(self, name: str) -> list[str]:
        return [line for line in self.sections.get(name, "").splitlines() if line.strip()]


def accelerator() -> tuple[str, str | None]:
    """``kvm`` when /dev/kvm can run an unmodified guest, else ``tcg`` and the reason why not.

    ``FIELDKIT_BOOT_ACCEL=kvm|tcg`` overrides the choice.
    """
    chosen = os.environ.get("FIELDKIT_BOOT_ACCEL")
    if chosen in ("kvm", "tcg"):
        return chosen, f"FIELDKIT_BOOT_ACCEL={chosen}" if chosen == "tcg" else None
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm: booting with TCG emulation (slow)"
    if Path("/sys/module/kvm_pvm").exists():
        # PVM (pagetable-based nested KVM) runs only PVM-enabled guest kernels; OVMF stops at
        # "KVM internal error" and a stock Debian kernel never prints a line.
        return "tcg", "/dev/kvm is kvm-pvm, which cannot run OVMF or a stock kernel: using TCG"
    return "kvm", None


def parse_report(text: str) -> dict[str, str]:
    """Split the report serial port's output into sections (``==> name`` headers)."""
    sections: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []
    for raw in text.replace("\r", "").splitlines():
        if raw.startswith(SECTION):
            if name is not None:
                sections[name] = "\n".join(body).strip("\n")
            name, body = raw[len(SECTION) :].strip(), []
        elif name is not None:
            body.append(raw)
    if name is not None:
        sections[name] = "\n".join(body).strip("\n")
    return sections


def _mtools_env() -> dict[str, str]:
    return os.environ | {"MTOOLS_SKIP_CHECK": "1"}


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise BootError(f"{' '.join(cmd)} failed (exit {done.returncode}): {done.stderr.strip()}")
    return str(done.stdout)


def prepare_overlay(
    disk: Path,
    esp_offset: int,
    esp_bytes: int,
    work: Path,
    extra_cmdline: str = "",
    grow_mib: int = 0,
) -> tuple[Path, str]:
    """A qcow2 overlay on ``disk`` whose ESP boots the test entry; returns it and the options.

    ``grow_mib``: the overlay's disk is that much larger than the image, as a device's disk is
    larger than the image written to it (the data volume grows into it on first boot)."""
    overlay = work / "overlay.qcow2"
    overlay.unlink(missing_ok=True)
    size = [str(disk.stat().st_size + grow_mib * (1 << 20))] if grow_mib else []
    _run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            str(disk.resolve()),
            "-F",
            "raw",
            str(overlay),
            *size,
        ]
    )
    esp = work / "esp.img"
    with disk.open("rb") as src, esp.open("wb") as dst:
        src.seek(esp_offset)
        remaining = esp_bytes
        while remaining:
            block = src.read(min(remaining, 4 << 20))
            if not block:
                raise BootError(f"{disk} ends inside its ESP")
            dst.write(block)
            remaining -= len(block)
    image = f"-i{esp}"
    entry = _run(["mtype", image, "::/loader/entries/fieldkit.conf"], env=_mtools_env())
    found = re.search(r"^options\s+(.+)$", entry, re.M)
    if found is None:
        raise BootError(f"the image's loader entry has no options line:\n{entry}")
    options = (
        f"{found.group(1).strip()} console=ttyS0,115200"
        f' systemd.run="/bin/sh /sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_NAME}/raw launch"'
        " systemd.run_success_action=none systemd.run_failure_action=poweroff"
        # The generator makes kernel-command-line.service the default target, which the
        # image's /etc/systemd/system/default.target (graphical) overrides: pull it in instead,
        # so the boot reaches the image's own target and the report runs alongside.
        " systemd.wants=kernel-command-line.service"
        # The VM's display (virtio-vga, no virgl) has no 3D: Mesa falls back to kms_swrast, and
        # cage 0.1.4's GLES2 renderer (wlroots 0.15) on it dies with SIGSEGV within seconds
        # (exit 139). The tablet's GPU has a Mesa driver; the VM gets wlroots' software
        # renderer instead, as a default environment variable of the service manager.
        f" systemd.setenv={VM_RENDERER}"
        # Software emulation on a shared 2-core host runs the tablet 10-50x slower than its
        # hardware: a service importing numpy and OpenCV then takes longer than systemd's 90 s
        # to say READY (a loaded run timed the kiosk out and restarted it). The VM's manager
        # waits 5 min; the units themselves keep systemd's default on the device.
        " systemd.default_timeout_start_sec=300"
    )
    if extra_cmdline:
        options += f" {extra_cmdline}"
    test_entry = work / TEST_ENTRY
    test_entry.write_text(re.sub(r"^options\s+.+$", f"options {options}", entry, flags=re.M))
    loader = work / "loader.conf"
    loader.write_text(f"default {TEST_ENTRY}\ntimeout 0\neditor no\n")
    for source, target in (
        (test_entry, f"::/loader/entries/{TEST_ENTRY}"),
        (loader, "::/loader/loader.conf"),
    ):
        _run(["mcopy", "-o", image, str(source), target], env=_mtools_env())
    _run(
        [
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            f"write -q -s {esp} {esp_offset} {esp_bytes}",
            str(overlay),
        ]
    )
    esp.unlink()
    return overlay, options


class VmOptions(TypedDict, total=False):
    """:func:`start`'s options beyond the image (described at :func:`boot`)."""

    memory_mib: int
    extra_cmdline: str
    script: str
    files: dict[str, Path] | None
    tpm: Path | None
    again: bool
    grow_mib: int
    nic: str
    smp: int
    control: Path | None


def boot(
    image_dir: Path, role: str, work: Path, *, timeout: float = 600.0, **options: Unpack[VmOptions]
) -> BootReport:
    """Boot ``image_dir``'s ``fieldkit-<role>.raw`` once and return its report.

    ``timeout`` bounds the whole VM run; past it QEMU is killed and :class:`BootError` says
    where the console log is. ``extra_cmdline`` is appended to the kernel command line (for
    diagnosis, e.g. ``systemd.journald.forward_to_console=1``). ``script`` is the report
    script (handed over fw_cfg), ``files`` more fw_cfg files for it
    (``/sys/firmware/qemu_fw_cfg/by_name/opt/org.fieldkit/<name>/raw``). ``tpm``: a state
    directory for a software TPM 2.0 (swtpm, TIS), kept between boots. ``again``: boot the
    same overlay and firmware variables once more (a reboot of the same device). ``nic``:
    QEMU's ``-nic`` (default none; the field test gives a restricted user network, whose
    only ways out are forwards to the host's loopback: ``field_boot.field_nic``). ``smp``: the
    VM's virtual CPUs. ``control``: a unix socket (QEMU listens) on the guest's third serial
    port, ``/dev/ttyS2``, for the host to tell the report script when to go on
    (:meth:`RunningVm.tell`). :func:`start` is the same without waiting for the power-off.
    """
    return start(image_dir, role, work, **options).finish(timeout)


@dataclass
class RunningVm:
    """A VM :func:`start` started: its QEMU, its swtpm, where it reports."""

    proc: subprocess.Popen[bytes]
    swtpm: subprocess.Popen[bytes] | None
    work: Path
    accel: str
    options: str
    notes: list[str]
    started: float
    control: Path | None = None

    @property
    def console(self) -> Path:
        return self.work / "console.log"

    @property
    def report(self) -> Path:
        return self.work / "report.log"

    def sections(self) -> dict[str, str]:
        """The report so far (a section still being written may be incomplete)."""
        text = self.report.read_text(errors="replace") if self.report.exists() else ""
        return parse_report(text)

    def wait_section(self, name: str, timeout: float) -> dict[str, str]:
        """Wait until section ``name`` is finished (the next one has begun); the report so far.
        Raises :class:`BootError` when the VM stops or the time is up first."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.report.read_text(errors="replace") if self.report.exists() else ""
            sections = parse_report(text)
            names = list(sections)
            if name in names and names.index(name) < len(names) - 1:
                return sections
            if self.proc.poll() is not None:
                raise BootError(f"the VM stopped before its section {name}; console {self.console}")
            if time.monotonic() > deadline:
                raise BootError(f"no section {name} within {timeout:.0f} s; report {self.report}")
            time.sleep(2)

    def tell(self, line: str) -> None:
        """One line to the guest's ``/dev/ttyS2`` (the report script reads it)."""
        import socket as sockets

        if self.control is None:
            raise BootError("this VM has no control port")
        with sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM) as sock:
            sock.connect(str(self.control))
            sock.sendall(line.encode() + b"\n")
            time.sleep(1)

    def stop(self) -> None:
        """Kill the VM (and its swtpm) if it still runs: for clean-up after a failure."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._end_swtpm()

    def _end_swtpm(self) -> None:
        if self.swtpm is not None and self.swtpm.poll() is None:
            try:
                self.swtpm.wait(timeout=10)  # --terminate: it ends with QEMU's connection
            except subprocess.TimeoutExpired:
                self.swtpm.kill()
                self.swtpm.wait()

    def finish(self, timeout: float) -> BootReport:
        """Wait for the power-off (at most ``timeout`` s from the start) and read the report."""
        try:
            remaining = max(1.0, timeout - (time.monotonic() - self.started))
            try:
                code = self.proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise BootError(
                    f"the VM did not power off within {timeout:.0f} s ({self.accel}); "
                    f"console {self.console}, report so far {self.report}"
                ) from None
        finally:
            self._end_swtpm()
        seconds = round(time.monotonic() - self.started, 1)
        if code != 0:
            raise BootError(f"qemu exited {code}: {(self.work / 'qemu.stderr').read_text()[-800:]}")
        sections = self.sections()
        if END not in sections:
            raise BootError(f"the VM powered off without a complete report; console {self.console}")
        return BootReport(sections, self.accel, seconds, self.console, self.options, self.notes)


def start(
    image_dir: Path,
    role: str,
    work: Path,
    *,
    memory_mib: int = 2048,
    extra_cmdline: str = "",
    script: str = REPORT_SCRIPT,
    files: dict[str, Path] | None = None,
    tpm: Path | None = None,
    again: bool = False,
    grow_mib: int = 0,
    nic: str = "none",
    smp: int = 2,
    control: Path | None = None,
) -> RunningVm:
    """Start the VM :func:`boot` boots, and return at once (see :func:`boot`)."""
    for tool in ("qemu-system-x86_64", "qemu-img", "qemu-io", "mtype", "mcopy", "mkfs.vfat"):
        if shutil.which(tool) is None:
            raise BootError(f"{tool} is not installed (dev.sh: APT_PACKAGES_IMAGE_BOOT)")
    for firmware in (OVMF_CODE, OVMF_VARS):
        if not firmware.exists():
            raise BootError(f"{firmware} is missing (Debian package ovmf)")
    manifest = json.loads((image_dir / f"fieldkit-{role}.manifest.json").read_text())
    disk = image_dir / manifest["image"]["file"]
    esp = manifest["image"]["layout"]["esp"]
    work.mkdir(parents=True, exist_ok=True)
    variables = work / "OVMF_VARS.fd"
    overlay = work / "overlay.qcow2"
    if again:
        if not overlay.exists() or not variables.exists():
            raise BootError(f"nothing booted in {work} yet to boot again")
        options = (work / TEST_ENTRY).read_text().split("options ", 1)[1].splitlines()[0]
    else:
        overlay, options = prepare_overlay(
            disk, esp["offset"], esp["bytes"], work, extra_cmdline, grow_mib
        )
        shutil.copyfile(OVMF_VARS, variables)
    script_file = work / "boot-report.sh"
    script_file.write_text(script)
    # A 16 MiB stick with a file system: what a visitor might plug in (it must stay blocked).
    stick = work / "usb-stick.img"
    if not stick.exists():
        with stick.open("wb") as handle:
            handle.truncate(16 * 1024 * 1024)
        _run(["mkfs.vfat", "-n", "STICK", str(stick)])
    console, report = work / "console.log", work / "report.log"
    console.unlink(missing_ok=True)
    report.unlink(missing_ok=True)
    accel, why = accelerator()
    notes = [why] if why else []
    cmd = [
        "qemu-system-x86_64",
        "-machine",
        "q35",
        *(["-accel", "kvm", "-cpu", KVM_CPU] if accel == "kvm" else TCG),
        "-smp",
        str(smp),
        "-m",
        str(memory_mib),
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={variables}",
        "-drive",
        f"if=none,id=root,format=qcow2,file={overlay}",
        "-device",
        "virtio-blk-pci,drive=root,bootindex=0",
        "-nic",
        nic,
        # The tablet's buses: USB (USBGuard needs /sys/bus/usb) and a KMS display for cage.
        # On the USB bus: a memory stick (mass storage, 08: USBGuard must block it, R23) and a
        # keyboard (HID, 03: allowed). QEMU emulates no USB camera (UVC, 0e).
        "-device",
        "qemu-xhci,id=xhci",
        "-drive",
        f"if=none,id=stick,format=raw,file={stick}",
        "-device",
        "usb-storage,bus=xhci.0,drive=stick",
        "-device",
        "usb-kbd,bus=xhci.0",
        "-vga",
        "none",
        "-device",
        "virtio-vga",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{console}",
        "-serial",
        f"file:{report}",
        "-fw_cfg",
        f"name={FW_CFG_NAME},file={script_file}",
        "-no-reboot",
    ]
    for name, path in (files or {}).items():
        cmd += ["-fw_cfg", f"name={FW_CFG_PREFIX}{name},file={path}"]
    swtpm = None
    if tpm is not None:
        if shutil.which("swtpm") is None:
            raise BootError("swtpm is not installed (Debian package swtpm)")
        tpm.mkdir(parents=True, exist_ok=True)
        socket = tpm / "swtpm.sock"
        socket.unlink(missing_ok=True)
        swtpm = subprocess.Popen(
            ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tpm}", "--terminate",
             "--ctrl", f"type=unixio,path={socket}", "--log", f"file={tpm / 'swtpm.log'}"],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(100):
            if socket.exists():
                break
            time.sleep(0.05)
        cmd += [
            "-chardev", f"socket,id=chrtpm,path={socket}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", "tpm-tis,tpmdev=tpm0",
        ]  # fmt: skip
    if control is not None:
        control.unlink(missing_ok=True)
        cmd += [
            "-chardev", f"socket,id=control,path={control},server=on,wait=off",
            "-serial", "chardev:control",
        ]  # fmt: skip
    (work / "qemu.cmd").write_text(" ".join(cmd) + "\n")
    started = time.monotonic()
    with (work / "qemu.stderr").open("w") as stderr:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    return RunningVm(proc, swtpm, work, accel, options, notes, started, control)
