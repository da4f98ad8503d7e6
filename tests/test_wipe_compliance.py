"""The compliance run: policies in force match policies/, the residue scan, a signed report.

R30 (the images enforce no autofill, AV updates, verified erasure), R31 (the compliance run).
Every check is shown to pass on a compliant rootfs and to fail when its setting is broken.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldkit import datavol
from fieldkit.antivirus.database import build_unsigned_database, hex_signature
from fieldkit.cli import main
from fieldkit.network import load_site, render_site
from fieldkit.policies import (
    PolicyError,
    chromium_policy,
    load_policies,
    render_erasure,
    usbguard_rules,
)
from fieldkit.wipe.compliance import check_data_volume, report_valid
from tests.conftest import write_config
from tests.wipe_fixtures import APPLICATION_ID

REPO_POLICIES = Path(__file__).resolve().parents[1] / "policies"


def compliant_rootfs(root: Path) -> Path:
    files = {
        "etc/systemd/journald.conf": "[Journal]\n#Storage=auto\n",
        "etc/systemd/journald.conf.d/fieldkit.conf": "[Journal]\nStorage=volatile\n",
        "etc/systemd/coredump.conf": "[Coredump]\nStorage=none\nProcessSizeMax=0\n",
        "etc/sysctl.d/50-coredump.conf": "kernel.core_pattern = |/bin/false\n",
        "etc/fstab": "/dev/mmcblk0p2 / ext4 defaults 0 1\n# /swapfile none swap sw 0 0\n",
        "etc/cups/cupsd.conf": "LogLevel warn\nPreserveJobFiles No\nPreserveJobHistory No\n",
        "etc/mosquitto/mosquitto.conf": "persistence false\n",
        "etc/chromium/policies/managed/fieldkit.json": json.dumps(
            chromium_policy(load_policies(REPO_POLICIES).browser)
        ),
        "etc/usbguard/rules.conf": usbguard_rules(load_policies(REPO_POLICIES).usb),
    }
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    clamav = root / "var/lib/clamav"
    clamav.mkdir(parents=True)
    signatures = {"fieldkit.ndb": (hex_signature("t", b"fieldkit-test-marker") + "\n").encode()}
    (clamav / "fieldkit.cud").write_bytes(
        build_unsigned_database("fieldkit", signatures, version=3, built_at=time.time() - 3600)
    )
    for folder in ("var/tmp", "tmp", "var/spool/cups", "var/lib/fieldkit/outbox"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    install(root, tablet_files(root))
    return root


# An enrolled tablet: its site network where the enrolment puts it (the test config's
# [sync] bundle is the default, /etc/fieldkit/bundle).
SITE_FILE = "etc/fieldkit/bundle/site-network.toml"
SITE = (
    'hub = "10.20.0.5"\ndns = ["10.20.0.1"]\ntime = ["10.20.0.1"]\n'
    'official_application_host = ["10.99.0.0/24"]\n'
)
NFT = "etc/nftables.conf"


def tablet_files(root: Path) -> dict[str, str]:
    """The data volume's files as erasure.yaml renders them, and the enrolled site's
    firewall and the services' address lists as `fieldkit network apply` writes them."""
    loaded = load_policies(REPO_POLICIES)
    assert loaded.erasure.data_volume is not None
    erasure = render_erasure(loaded.erasure, "tablet")
    files = {str(p).lstrip("/"): erasure[p] for p in datavol.render(loaded.erasure.data_volume, "")}
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("tab-01\n")
    site = root / SITE_FILE
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text(SITE)
    network = render_site(loaded.network, load_site(site), "tab-01", loaded.services)
    files |= {str(p).lstrip("/"): body for p, body in network.items()}
    return files


def install(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def policies(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    for policy in REPO_POLICIES.glob("*.yaml"):
        shutil.copy(policy, folder)
    (folder / "antivirus.toml").write_text(
        '[antivirus]\nofficial_databases = []\ncustom_databases = ["fieldkit.cud"]\n'
        'database_dir = "/var/lib/clamav"\nmax_definitions_age_hours = 48\n'
    )
    return folder


def run(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    config = write_config(tmp_path, f'\n[wipe]\ndevice_key = "{tmp_path / "key.pem"}"\n')
    report = tmp_path / "report.json"
    args = ["--config", str(config), "compliance", "run", "--policies", str(policies_dir(tmp_path))]
    return main([*args, "--json", str(report), *extra]), report


def policies_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    return folder if folder.exists() else policies(tmp_path)


def test_a_compliant_rootfs_passes_with_a_signed_report_and_a_pdf(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = compliant_rootfs(tmp_path / "rootfs")
    pdf = tmp_path / "report.pdf"
    status, report = run(tmp_path, "--root", str(root), "--pdf", str(pdf))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "result: PASS" in out and "FAIL" not in out
    text = report.read_text()
    assert report_valid(text)
    data = json.loads(text)
    assert {c["name"] for c in data["checks"]} >= {
        "journald storage", "core dumps off", "no swap", "CUPS keeps no jobs",
        "broker persistence off", "browser policy", "antivirus definitions", "USB allowlist",
        "encrypted data volume", "network allowlist",
    }  # fmt: skip
    assert all(c["verdict"] == "pass" for c in data["checks"])
    assert report_valid(text.replace('"ok": true', '"ok": false')) is False
    pdf_text = subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "コンプライアンス確認" in pdf_text and "result: PASS" in pdf_text


def _append(name: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        with (root / name).open("a") as out:
            out.write(text)

    return change


def _write(name: str, text: str) -> Callable[[Path], None]:
    def change(root: Path) -> None:
        (root / name).write_text(text)

    return change


def _age_definitions(root: Path) -> None:
    path = root / "var/lib/clamav/fieldkit.cud"
    signatures = {"fieldkit.ndb": (hex_signature("t", b"fieldkit-test-marker") + "\n").encode()}
    old = time.time() - 72 * 3600
    path.write_bytes(build_unsigned_database("fieldkit", signatures, version=2, built_at=old))


USB_RULES = "etc/usbguard/rules.conf"


def _drop_card_reader(root: Path) -> None:
    path = root / USB_RULES
    path.write_text(path.read_text().replace(" 0b:*:*", ""))


def _keep_first_keyslot(root: Path) -> None:
    path = root / "usr/local/lib/fieldkit/datavol-format.sh"
    path.write_text(
        path.read_text().replace("cryptsetup luksKillSlot", ": cryptsetup luksKillSlot")
    )


def _widen_sync(root: Path) -> None:
    path = root / "etc/systemd/system/fieldkit-sync.service.d/site-network.conf"
    path.write_text(path.read_text().replace("localhost 10.20.0.5", "localhost any"))


BREAKERS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "journald persistent": (
        "journald storage",
        _write("etc/systemd/journald.conf.d/zz-local.conf", "[Journal]\nStorage=persistent\n"),
    ),
    "core dumps stored": ("core dumps off", _write("etc/systemd/coredump.conf", "[Coredump]\n")),
    "core pattern": ("core dumps off", _write("etc/sysctl.d/50-coredump.conf", "")),
    "swap in fstab": ("no swap", _append("etc/fstab", "/swapfile none swap sw 0 0\n")),
    "cups history": ("CUPS keeps no jobs", _write("etc/cups/cupsd.conf", "PreserveJobFiles No\n")),
    "broker persistence": (
        "broker persistence off",
        _write("etc/mosquitto/mosquitto.conf", "persistence true\n"),
    ),
    "autofill on": (
        "browser policy",
        _write("etc/chromium/policies/managed/zz-local.json", '{"AutofillAddressEnabled": true}'),
    ),
    "stale definitions": ("antivirus definitions", _age_definitions),
    # The card reader's class taken out of the allow rule (issue 22): the rules in force
    # are no longer the policy's.
    "card reader not allowed": ("USB allowlist", _drop_card_reader),
    "usbguard rules missing": ("USB allowlist", lambda root: (root / USB_RULES).unlink()),
    # A format script that keeps its first keyslot: a key outside the TPM would open the volume.
    "volume keeps a keyslot": ("encrypted data volume", _keep_first_keyslot),
    "volume format unit missing": (
        "encrypted data volume",
        lambda root: (root / "etc/systemd/system/fieldkit-datavol-format.service").unlink(),
    ),
    "firewall opened": (
        "network allowlist",
        lambda root: (root / NFT).write_text(
            (root / NFT).read_text().replace('oif "lo" accept', 'oif "lo" accept\n        accept')
        ),
    ),
    "sync's address list widened": ("network allowlist", _widen_sync),
}


@pytest.mark.parametrize("breaker", sorted(BREAKERS))
def test_each_policy_check_fails_when_its_setting_is_broken(
    tmp_path: Path, breaker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    check, change = BREAKERS[breaker]
    root = compliant_rootfs(tmp_path / "rootfs")
    change(root)
    status, report = run(tmp_path, "--root", str(root))
    assert status == 1
    verdicts = {c["name"]: c["verdict"] for c in json.loads(report.read_text())["checks"]}
    assert [name for name, verdict in verdicts.items() if verdict == "fail"] == [check]


def test_residue_in_the_rootfs_fails_the_run(tmp_path: Path) -> None:
    root = compliant_rootfs(tmp_path / "rootfs")
    (root / "var/spool/cups/d00007-001").write_bytes(b"%PDF " + APPLICATION_ID.encode())
    status, report = run(tmp_path, "--root", str(root))
    assert status == 1
    data = json.loads(report.read_text())
    assert [r["name"] for r in data["residue"] if r["fails"]] == ["cups-spool"]
    assert APPLICATION_ID not in report.read_text()


def test_a_raw_image_is_scanned_including_free_space(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 << 20))
    assert run(tmp_path, "--image", str(image))[0] == 0
    with image.open("r+b") as out:  # a deleted file's blocks: not in any directory any more
        out.seek(3 << 20)
        out.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100))
    status, report = run(tmp_path, "--image", str(image))
    assert status == 1
    (residue,) = json.loads(report.read_text())["residue"]
    assert residue["findings"][0]["kind"] == "jpeg" and residue["findings"][0]["offset"] == 3 << 20


def test_a_broken_policy_file_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = policies_dir(tmp_path)
    erasure = folder / "erasure.yaml"
    erasure.write_text(erasure.read_text().replace("storage: volatile", "storage: persistent"))
    with pytest.raises(PolicyError, match=r"erasure\.yaml.*journald\.storage"):
        load_policies(folder)
    assert run(tmp_path, "--root", str(tmp_path))[0] == 2
    err = capsys.readouterr().err
    assert "erasure.yaml" in err and "journald.storage" in err and "Traceback" not in err


def test_a_tablet_not_enrolled_has_no_site_network_to_check(tmp_path: Path) -> None:
    """Before enrolment there is no site network: the check says so (skip), it does not pass."""
    root = compliant_rootfs(tmp_path / "rootfs")
    (root / SITE_FILE).unlink()
    status, report = run(tmp_path, "--root", str(root))
    assert status == 0
    verdicts = {c["name"]: c for c in json.loads(report.read_text())["checks"]}
    assert verdicts["network allowlist"]["verdict"] == "skip"
    assert "not enrolled" in verdicts["network allowlist"]["detail"]


def test_on_a_device_without_its_volume_the_live_check_fails(tmp_path: Path) -> None:
    """Live, the files are not enough: the volume itself must be mounted from LUKS2. This host
    has no tablet volume (no crypttab line, nothing mounted): the check fails and says why.
    The passing side runs in the booted image (test_field.py)."""
    root = compliant_rootfs(tmp_path / "rootfs")
    policies = load_policies(REPO_POLICIES)
    assert check_data_volume(root, policies, live=False).verdict == "pass"
    live = check_data_volume(root, policies, live=True)
    assert live.verdict == "fail"
    assert "crypttab" in live.detail or "not mounted" in live.detail, live.detail


LIVE_NETWORK = """
import sys
from pathlib import Path
from fieldkit.policies import load_policies
from fieldkit.wipe.compliance import check_network
check = check_network(Path(sys.argv[1]), load_policies(Path(sys.argv[2])), Path(sys.argv[3]), True)
print(check.verdict, check.detail)
"""


@pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs nft, unshare and root",
)
def test_the_live_check_compares_the_ruleset_the_kernel_enforces(tmp_path: Path) -> None:
    """R18, live: in a network namespace of its own, the check passes while the kernel holds
    the rendered ruleset, and fails, naming the rule, once a rule is added beside it (the
    file on disk unchanged), and when nothing is loaded at all."""
    root = compliant_rootfs(tmp_path / "rootfs")
    nft = root / NFT
    check = [sys.executable, "-c", LIVE_NETWORK, str(root), str(REPO_POLICIES), "/" + SITE_FILE]

    def in_namespace(setup: str) -> str:
        script = f'{setup} && exec "$@"'
        done = subprocess.run(
            ["unshare", "--net", "sh", "-c", script, "sh", *check],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert in_namespace(f"nft -f {nft}").startswith("pass hub 10.20.0.5: the kernel enforces")
    added = 'nft add rule inet fieldkit output tcp dport 22 accept comment \\"ssh\\"'
    opened = in_namespace(f"nft -f {nft} && {added}")
    assert opened.startswith("fail") and "not in the file: rule fieldkit/ssh" in opened, opened
    nothing = in_namespace("true")
    assert nothing.startswith("fail") and "missing: table" in nothing, nothing


def test_without_policies_the_run_reads_the_devices_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the device `fieldkit compliance run` is typed without --policies: it reads the
    installed folder (here given by $FIELDKIT_POLICIES), not a relative "policies" (the booted
    tablet found the run failing on that)."""
    root = compliant_rootfs(tmp_path / "rootfs")
    folder = policies_dir(tmp_path)
    monkeypatch.chdir(tmp_path / "rootfs")  # no policies/ here
    monkeypatch.setenv("FIELDKIT_POLICIES", str(folder))
    config = write_config(tmp_path, f'\n[wipe]\ndevice_key = "{tmp_path / "key.pem"}"\n')
    report = tmp_path / "report.json"
    args = ["--config", str(config), "compliance", "run", "--root", str(root)]
    assert main([*args, "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert set(data["policies"]) >= {"erasure.yaml", "network.yaml", "antivirus.toml"}


LIVE_LISTENING = """
import socket, sys
from fieldkit.policies import load_policies
from fieldkit.wipe.compliance import check_listening
held = []
for spec in sys.argv[2:]:
    kind, host, port = spec.split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    if kind == "tcp":
        sock.listen()
    held.append(sock)
check = check_listening(load_policies(__import__("pathlib").Path(sys.argv[1])))
print(check.verdict, check.detail)
"""


# The name the kernel gives the test program's process (what `ss -p` shows): the name it was
# started by, e.g. python or python3, at most 15 characters.
PROGRAM = Path(sys.executable).name[:15]


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root"
)
@pytest.mark.parametrize(
    ("sockets", "verdict", "said"),
    [
        ([], "pass", "0 listening"),
        (["tcp:127.0.0.1:8080"], "pass", f"tcp 127.0.0.1:8080 ({PROGRAM})"),  # the kiosk's port
        (["udp:0.0.0.0:5353"], "fail", f"udp 0.0.0.0:5353 ({PROGRAM}) listens beyond loopback"),
        (["tcp:127.0.0.1:2222"], "fail", f"tcp 127.0.0.1:2222 ({PROGRAM}) is not in the policy"),
        # A TCP listener on a port the kernel could have picked is still a listener.
        (["tcp:127.0.0.1:46809"], "fail", f"tcp 127.0.0.1:46809 ({PROGRAM}) is not in the policy"),
        # A UDP socket on an ephemeral port is a client's (Chromium's, in the booted tablet).
        (["udp:0.0.0.0:48660"], "pass", "0 listening"),
        (["tcp:127.0.0.1:18830"], "fail", "is the policy's bus, held by another program"),
        (["udp:0.0.0.0:68"], "fail", "is the policy's dhcp-client, held by another program"),
    ],
)
def test_the_live_run_names_every_listening_socket(
    sockets: list[str], verdict: str, said: str
) -> None:
    """Issue 19, live: in a network namespace of its own, sockets opened by a test program
    are checked against network.yaml's `listening`: nothing at all passes, the kiosk's port
    passes (python runs it), and a socket beyond loopback, an unnamed port or another
    program on the bus's port each fail, named."""
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", 'ip link set lo up 2>/dev/null; exec "$@"', "sh",
         sys.executable, "-c", LIVE_LISTENING, str(REPO_POLICIES), *sockets],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(verdict + " ") and said in done.stdout, done.stdout


def test_the_policys_bus_listener_is_the_bus_port_services_use() -> None:
    """network.yaml names the bus and the capture preview by their ports: the same ports the
    device config (the image's) gives them."""
    from fieldkit.config import BusSection
    from fieldkit.policies import CAPTURE_PREVIEW_PORT

    listening = {rule.name: rule for rule in load_policies(REPO_POLICIES).network.listening}
    assert listening["bus"].port == BusSection().port
    assert listening["capture-preview"].port == CAPTURE_PREVIEW_PORT
    assert [r.name for r in listening.values() if r.beyond_loopback] == ["dhcp-client"]
