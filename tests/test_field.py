"""The built tablet image in the field (issue 16; R16, R24, R28, R30, R31): booted in QEMU
(OVMF, swtpm, a restricted user network), enrolled through its own kiosk against a hub on the
host, rebooted, and every fieldkit service running with the site's network applied.

Slow: ``./dev.sh test --slow -k field`` (the image build, if there is none, and two TCG
boots). The hub is the development hub (``fieldkit up`` with role hub: its broker with mutual
TLS, the ingest, the antivirus mirror) and its EST enrolment server, on the host's loopback;
the VM reaches them only through the forwards of ``tests/support/field_boot.py``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fieldkit.policies import PolicySet, load_policies
from tests.conftest import FIELD_HUB_ADDRESS, IMAGE_BUILD_ROOT, field_pki
from tests.enrolkit import add_hub_operator, enrolment_code
from tests.hubkit import free_port, wait_for
from tests.support.datavol_boot import Canary, ScanResult, make_canary, raw_disk, scan
from tests.support.field_boot import (
    FIRST_BOOT,
    HUB_PORTS,
    SECOND_BOOT,
    check_every_service_running,
    field_nic,
)
from tests.support.image_boot import BootError, BootReport, boot
from tests.support.paths import REPO, REPO_POLICIES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="building and booting the image need root"),
]

FIELDKIT = [sys.executable, "-m", "fieldkit"]
# A new device id each run: the test kit's PKI is kept between runs, and a device id still
# active there is refused a second enrolment (as it must be).
DEVICE = f"tab-field-{secrets.token_hex(3)}"
GROW_MIB = 512
BOOT_TIMEOUT = 1500.0


@dataclass
class FieldHub:
    root: Path
    config: Path
    ports: dict[str, int]

    def code(self, device: str) -> str:
        return enrolment_code(self.config, device)


def _accepting(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def field_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FieldHub]:
    """The development hub on the host's loopback, with the test kit's PKI (whose CA the test
    image carries) and the site network it hands every tablet."""
    root = tmp_path_factory.mktemp("field-hub")
    pki = field_pki()
    ports = {name: free_port() for name in ("bus", "enrol", "broker", "mirror")}
    database = f"sqlite:///{root / 'hub.sqlite'}"
    config = root / "hub.toml"
    config.write_text(
        f"""[device]
id = "field-hub"
role = "hub"
site = "試験会場"
[bus]
port = {ports["bus"]}
runtime_dir = "{root / "run"}"
[runner]
services = ["hub-broker", "hub-ingest", "av-mirror"]
[av_mirror]
directory = "{root / "av-mirror"}"
port = {ports["mirror"]}
[hub]
pki = "{pki.root}"
broker_port = {ports["broker"]}
broker_dir = "{root / "run" / "hub-broker"}"
database_url = "{database}"
[enrol]
listen_host = "127.0.0.1"
listen_port = {ports["enrol"]}
broker_host = "{FIELD_HUB_ADDRESS}"
broker_port = {HUB_PORTS["broker"]}
antivirus_mirror = "https://{FIELD_HUB_ADDRESS}:{HUB_PORTS["mirror"]}"
site_network = {{hub = "{FIELD_HUB_ADDRESS}", dns = ["10.0.2.3"], time = ["10.0.2.2"], \
official_application_host = ["10.99.0.0/24"]}}
"""
    )
    # The database made first (as `fieldkit hub migrate` would), with an operator on its roster:
    # the enrolment brings the roster to the tablet.
    from fieldkit.hub.db import upgrade

    upgrade(database)
    add_hub_operator(database)
    logs = {name: (root / f"{name}.log").open("wb") for name in ("up", "enrol")}
    processes = [
        subprocess.Popen(
            [*FIELDKIT, "--config", str(config), *command],
            stdout=logs[name],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for name, command in (("up", ["up"]), ("enrol", ["hub", "enrol-server"]))
    ]
    try:
        for name in ("enrol", "broker", "mirror"):
            wait_for(lambda n=name: _accepting(ports[n]), 120, f"the hub's {name} port")
        yield FieldHub(root, config, ports)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
        for log in logs.values():
            log.close()


@pytest.fixture(scope="module")
def work() -> Path:
    path = Path(os.environ.get("FIELDKIT_FIELD_WORK", IMAGE_BUILD_ROOT / "field-test"))
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(REPO_POLICIES)


def _boot(image: Path, work: Path, hub: FieldHub, script: str, **options: object) -> BootReport:
    nic = field_nic({name: hub.ports[name] for name in HUB_PORTS})
    try:
        found = boot(
            image,
            "tablet",
            work,
            script=script,
            tpm=work / "tpm",
            timeout=BOOT_TIMEOUT,
            nic=nic,
            **options,  # type: ignore[arg-type]
        )
    except BootError as exc:
        pytest.fail(str(exc))
    print(f"\nboot: {found.accelerator}, VM ran {found.seconds} s")
    return found


@pytest.fixture(scope="module")
def first(tablet_image_dir: Path, work: Path, field_hub: FieldHub) -> BootReport:
    """A fresh tablet's first boot, enrolled from its kiosk's enrolment screen."""
    code = work / "handover" / "enrol-code"
    code.parent.mkdir(parents=True, exist_ok=True)
    code.write_text(field_hub.code(DEVICE))
    found = _boot(
        tablet_image_dir,
        work,
        field_hub,
        FIRST_BOOT,
        files={"enrol-code": code},
        grow_mib=GROW_MIB,
    )
    shutil.copyfile(work / "report.log", work / "report-first-boot.log")
    return found


@pytest.fixture(scope="module")
def second(
    first: BootReport, tablet_image_dir: Path, work: Path, field_hub: FieldHub
) -> BootReport:
    """The same tablet restarted, as the kiosk asks after enrolment; at its end, a canary on
    the volume and the contract-end purge."""
    canary = make_canary(work / "canary")
    found = _boot(tablet_image_dir, work, field_hub, SECOND_BOOT, again=True, files=canary.files)
    shutil.copyfile(work / "report.log", work / "report-second-boot.log")
    return found


def test_a_fresh_tablet_runs_every_service_and_enrols_from_its_kiosk(
    first: BootReport, policies: PolicySet
) -> None:
    """R16 R31: the image as built, first boot: the data volume made, every service up before
    enrolment, the kiosk showing nothing but its enrolment screen; the code and the hub
    address typed there enrol it, and the bundle lands on the volume, the kiosk's and sync's
    (issue 17), behind the image's link."""
    check_every_service_running(first, policies)
    assert first.lines("datavol-wait") == ["mounted"]
    assert first.lines("enrol-before") == ["not enrolled"]
    enrol = first.lines("enrol")
    assert enrol[0].startswith("first page 200") and enrol[0].endswith("/enrol"), enrol
    assert enrol[1:] == ["status 200", "enrolled", "refusal -"], enrol
    files = first.lines("enrol-files")
    assert files[0] == "root root 777 /etc/fieldkit/bundle", files  # the image's link
    assert files[-1] == "/var/lib/fieldkit/enrol/bundle", files  # where it points
    on_volume = files[1:-1]
    # Issue 17: the folder is the kiosk's and sync's (the group fieldkit-enrol, set-group-ID):
    # the keys the kiosk made are readable by sync (which connects with them, below), by no
    # other service; the public files by path to all.
    assert "fieldkit fieldkit-enrol 2771 /var/lib/fieldkit/enrol" in on_volume, files
    assert "fieldkit fieldkit-enrol 751 /var/lib/fieldkit/enrol/bundle" in on_volume, files
    assert "fieldkit fieldkit-enrol 640 /var/lib/fieldkit/enrol/bundle/client.key" in on_volume
    assert "fieldkit fieldkit-enrol 640 /var/lib/fieldkit/enrol/bundle/signing.key" in on_volume
    assert "fieldkit fieldkit-enrol 644 /var/lib/fieldkit/enrol/bundle/enrolment.toml" in on_volume
    # The hub's operator roster came with it, for staff to log in.
    roster = "fieldkit fieldkit-enrol 640 /var/lib/fieldkit/enrol/operators.json"
    assert roster in on_volume, files
    assert all(f.startswith("fieldkit fieldkit-enrol ") for f in on_volume), files


def test_the_enrolled_tablet_runs_the_kit_on_the_sites_network(
    second: BootReport, policies: PolicySet
) -> None:
    """Restarted: the enrolled config (device id, hub) in force, every service running; the
    site's network applied at boot (no placeholder left in the firewall, the services'
    address lists narrowed to the hub), and sync linked to the hub through it."""
    check_every_service_running(second, policies)
    assert second.lines("enrolled-config") == [f"/etc/fieldkit/device.toml: ok (tablet {DEVICE})"]
    site = second.lines("site-network")
    assert {"ActiveState=active", "Result=success"} <= set(site), site
    assert "no placeholder address" in second.sections["network-check"]
    assert FIELD_HUB_ADDRESS in second.sections["nft"]
    for line in second.lines("address-allow"):
        _unit, *allowed = line.split()
        assert f"{FIELD_HUB_ADDRESS}/32" in allowed, line  # systemd writes the prefix length
        assert not any(a.startswith("192.0.2.") for a in allowed), line
    assert second.lines("sync-link") == ["connected"], second.sections["sync-journal"]


def test_the_compliance_run_checks_the_live_volume_and_firewall(second: BootReport) -> None:
    """R12 R18 R31: the compliance run on the running tablet finds its data volume mounted
    from LUKS2 with its only key sealed to the TPM, the kernel enforcing exactly the ruleset
    the site's network renders, and nothing listening beyond what the policy names."""
    checks = {
        line.split(" | ")[0].split(" ", 1)[1]: line
        for line in second.lines("compliance-checks")
        if " | " in line
    }
    volume = checks.get("encrypted data volume", "")
    assert volume.startswith("pass "), second.sections["compliance"]
    assert "LUKS2" in volume and "sealed to the TPM 2.0" in volume, volume
    network = checks.get("network allowlist", "")
    assert network.startswith("pass "), second.sections["compliance"]
    assert f"hub {FIELD_HUB_ADDRESS}: the kernel enforces" in network, network
    # Issue 19: nothing listens that network.yaml does not name (loopback only).
    listening = checks.get("listening sockets", "")
    assert listening.startswith("pass "), listening or second.sections["compliance"]


@pytest.fixture(scope="module")
def disk_scan(second: BootReport, work: Path) -> ScanResult:
    """The powered-off tablet's whole disk, every allocated byte, read from the host."""
    raw = work / "disk-after-purge.raw"
    seconds = raw_disk(work / "overlay.qcow2", raw)
    try:
        found = scan(
            raw,
            Canary(
                (work / "canary" / "canary.txt").read_text(),
                (work / "canary" / "canary.jpg").read_bytes(),
            ).needles,
        )
    finally:
        raw.unlink()
    found.convert_seconds = seconds
    print(f"\ndisk scan: {found.disk_bytes} bytes, {found.bytes_scanned} allocated scanned")
    return found


def test_the_enrolled_tablet_is_purged_and_certified_with_its_enrolled_key(
    second: BootReport, field_hub: FieldHub
) -> None:
    """R12 R24: `fieldkit wipe device` on the enrolled tablet: the volume's keyslots, header
    and sealed key destroyed, and the certificate signed with the key the tablet made at
    enrolment, which the hub registered: the hub's roster verifies it."""
    from fieldkit.pki import read_roster
    from fieldkit.wipe.sanitize import Certificate, verify_certificate

    assert second.lines("canary-write") == ["3"], second.sections["canary-write"]
    wipe = second.sections["wipe"]
    assert "exit 0" in wipe, wipe
    text = second.sections["certificate"]
    enrolled = read_roster(field_pki().roster)[DEVICE].signing_public
    assert verify_certificate(text, enrolled.hex()) == [], text[:400]
    certificate = Certificate.model_validate_json(text)
    assert certificate.result == "pass" and certificate.method.category == "Purge"
    assert certificate.verification.luks_headers_left == 0
    assert certificate.verification.keyslots_left == 0
    assert second.lines("after")[:2] == ["no LUKS", "not mounted"]


def test_the_disk_holds_no_canary_and_no_luks_header(disk_scan: ScanResult) -> None:
    """After the purge, the raw disk from the host: no canary in any encoding (ASCII, UTF-16,
    the JPEG), no LUKS header at any sector."""
    assert disk_scan.bytes_scanned > 1 << 30
    assert disk_scan.found == {name: [] for name in disk_scan.found}
    assert disk_scan.luks_aligned == []


def test_the_hardening_holds_on_the_running_tablet(second: BootReport) -> None:
    """Issue 19: every kernel setting of the hardening role is the running kernel's value
    (not only a file in sysctl.d), and no mDNS daemon runs."""
    import yaml

    defaults = yaml.safe_load((REPO / "ansible/roles/hardening/defaults/main.yml").read_text())
    live = dict(line.split(" = ", 1) for line in second.lines("sysctl") if " = " in line)
    wrong = {
        key: live.get(key)
        for key, value in defaults["hardening_sysctl"].items()
        if live.get(key) != str(value)
    }
    assert wrong == {}, wrong
    assert second.lines("mdns") == ["masked inactive"], second.sections["mdns"]
