"""The compliance run: policies in force match policies/, the residue scan, a signed report.

R30 (the images enforce no autofill, AV updates, verified erasure), R31 (the compliance run).
Every check is shown to pass on a compliant rootfs and to fail when its setting is broken.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from fieldkit.antivirus.database import build_unsigned_database, hex_signature
from fieldkit.cli import main
from fieldkit.policies import PolicyError, chromium_policy, load_policies
from fieldkit.wipe.compliance import report_valid
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
    return root


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
        "broker persistence off", "browser policy", "antivirus definitions",
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
