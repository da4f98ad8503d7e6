"""The tablet's encrypted data volume (R12, R24): the policy, its renderings, and the purge.

Fast: the purge runs on a LUKS2 volume in an image file carrying a ``systemd-tpm2`` token as
systemd-cryptenroll writes it (its sealed blob made up: this machine has no TPM), so the
token's removal, the keyslots' erasure and the overwrite of both header copies are real. The
booted proof (first boot format, TPM unlock, reboot, purge in the VM, disk scanned from the
host) is tests/test_image_boot.py (slow).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from pydantic import ValidationError

import fieldkit.wipe.datavol
from fieldkit.cli import main
from fieldkit.datavol import DataVolume, systemd_escape
from fieldkit.policies import ErasurePolicy, load_policies, render, render_services
from fieldkit.wipe.datavol import (
    LUKS2_HEADER_OFFSETS,
    find_volume,
    luks_headers_left,
    luks_metadata,
)
from fieldkit.wipe.record import load_device_key
from fieldkit.wipe.sanitize import (
    NO_RECORDS,
    Certificate,
    Person,
    SanitizeError,
    open_target,
    sanitize,
    verify_certificate,
)
from tests.wipe_volume import volume, volume_key, wipe_config

REPO = Path(__file__).resolve().parents[1]
TOKEN = {
    "type": "systemd-tpm2",
    "keyslots": ["0"],
    "tpm2-blob": base64.b64encode(b"made up for the test: no TPM here").decode(),
    "tpm2-pcrs": [7],
    "tpm2-pcr-bank": "sha256",
    "tpm2-primary-alg": "ecc",
    "tpm2-policy-hash": "00" * 32,
    "tpm2-pin": False,
}


def tpm_volume(tmp_path: Path) -> Path:
    image, _key_file, _ = volume(tmp_path)
    subprocess.run(
        ["cryptsetup", "token", "import", "--json-file", "-", str(image)],
        input=json.dumps(TOKEN),
        text=True,
        check=True,
        capture_output=True,
    )
    assert "systemd-tpm2" in json.dumps(luks_metadata(open_target(image))["tokens"])
    return image


def purge(image: Path, tmp_path: Path, **options: Any) -> Certificate:
    """The tablet-volume purge of ``image``, signed with a key made for the test."""
    return sanitize(
        image,
        device="tab-01",
        key=load_device_key(tmp_path / "device.pem"),
        location="site",
        sanitized_by=Person(name="a", role="sanitized"),
        verified_by=Person(name="b", role="verified"),
        evidence_chain=NO_RECORDS,
        tablet_volume=True,
        **options,
    )


def test_the_policy_puts_state_on_the_volume_and_the_spool_in_memory() -> None:
    policies = load_policies(REPO / "policies")
    vol = policies.erasure.data_volume
    assert vol is not None and vol.mount == PurePosixPath("/var/lib/fieldkit")
    on_volume = {str(d.path) for d in vol.directories}
    for path in ("outbox", "audit", "wipe", "keys", "enrol"):
        assert f"/var/lib/fieldkit/{path}" in on_volume
    assert {str(k) for k in vol.links} == {"/etc/fieldkit/keys", "/etc/fieldkit/bundle"}
    # The config's defaults for what must persist are on the volume (one source: the policy
    # names the mount, the config's paths are below it or linked into it).
    from fieldkit.config import BusSection  # noqa: F401 - the config module loads
    from fieldkit.sync.settings import SyncSection
    from fieldkit.wipe.settings import WipeSection

    persistent = [WipeSection().state_dir, SyncSection().outbox]
    assert all(p.is_relative_to(str(vol.mount)) for p in persistent)
    for linked in (WipeSection().device_key.parent, SyncSection().bundle):
        assert PurePosixPath(linked) in vol.links
    # The CUPS spool is memory-only, never persistent (architecture §3).
    assert "/var/spool/cups" in {str(m.path) for m in policies.erasure.tmpfs}
    assert "/var/spool/cups" not in on_volume


def test_a_path_both_memory_only_and_persistent_does_not_load() -> None:
    with pytest.raises(ValidationError, match="both memory-only and persistent"):
        ErasurePolicy.model_validate(
            {
                "tmpfs": [{"path": "/tmp", "size": "1M", "mode": "1777"},
                          {"path": "/var/lib/fieldkit/outbox", "size": "1M", "mode": "0700"}],
                "data_volume": {"directories": [
                    {"path": "/var/lib/fieldkit/outbox", "mode": "0700"}]},
            }
        )  # fmt: skip
    with pytest.raises(ValidationError, match="not on the volume"):
        DataVolume.model_validate({"directories": [{"path": "/var/lib/other", "mode": "0700"}]})


def test_renderings_for_the_tablet_only() -> None:
    policies = load_policies(REPO / "policies")
    tablet = render(policies, "erasure", "tablet")
    hub = render(policies, "erasure", "hub")
    unit = PurePosixPath("/etc/systemd/system/fieldkit-datavol-format.service")
    dropin = PurePosixPath(
        "/etc/systemd/system/systemd-cryptsetup@fieldkit\\x2ddata.service.d/50-fieldkit-format.conf"
    )
    assert unit in tablet and dropin in tablet and unit not in hub
    assert systemd_escape("fieldkit-data") == "fieldkit\\x2ddata"
    script = tablet[PurePosixPath("/usr/local/lib/fieldkit/datavol-format.sh")]
    assert '--tpm2-pcrs="$PCRS"' in script and "PCRS=7" in script
    assert 'luksKillSlot --batch-mode "$dev" 0' in script
    assert "no TPM 2.0" in script
    for body in render_services(policies, "tablet").values():
        assert "Requires=fieldkit-datavol.service" in body
    for body in render_services(policies, "hub").values():
        assert "fieldkit-datavol" not in body
    vol = policies.erasure.data_volume
    assert vol is not None
    assert vol.crypttab_line("abc").split()[:3] == ["fieldkit-data", "PARTUUID=abc", "none"]
    assert "tpm2-device=auto" in vol.crypttab_line("abc")
    assert "headless=true" in vol.crypttab_line("abc")


def test_find_volume_reads_crypttab(tmp_path: Path) -> None:
    vol = load_policies(REPO / "policies").erasure.data_volume
    crypttab = tmp_path / "crypttab"
    with pytest.raises(SanitizeError, match="does not exist"):
        find_volume(vol, crypttab)
    crypttab.write_text("other /dev/sda9 none luks\n")
    with pytest.raises(SanitizeError, match="no line for fieldkit-data"):
        find_volume(vol, crypttab)
    image = tmp_path / "part.img"
    image.write_bytes(b"")
    crypttab.write_text(f"fieldkit-data {image} none luks,tpm2-device=auto\n")
    assert find_volume(vol, crypttab).partition == image
    with pytest.raises(SanitizeError, match="has no data_volume"):
        find_volume(None, crypttab)


def test_the_purge_removes_the_sealed_key_keyslots_and_both_headers(tmp_path: Path) -> None:
    image = tpm_volume(tmp_path)
    size = image.stat().st_size
    assert luks_headers_left(image, size) == 2  # primary at 0, secondary at 16 KiB
    certificate = purge(image, tmp_path, steps_done=["released: (test)"], source="tablet")
    steps = certificate.method.steps
    assert steps[0] == "released: (test)"
    assert "TPM-sealed key destroyed: LUKS2 token 0 (systemd-tpm2, PCRs [7]) removed" in steps[1]
    assert "keyslots destroyed" in steps[2]
    assert steps[3].startswith("overwrite: LUKS2 header area")
    assert "TPM-sealed key" in certificate.method.technique
    assert certificate.verification.luks_headers_left == 0
    assert certificate.result == "pass"
    assert volume_key(image, tmp_path / "passphrase") is None
    with image.open("rb") as handle:
        for offset in LUKS2_HEADER_OFFSETS:
            handle.seek(offset)
            assert handle.read(6) == bytes(6)
    assert verify_certificate(certificate.model_dump_json()) == []


def test_a_header_left_behind_fails_the_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the header-area overwrite (and no full pass), both header copies are still
    there: the check at every LUKS2 header offset fails the certificate."""
    image = tpm_volume(tmp_path)
    monkeypatch.setattr(fieldkit.wipe.datavol, "overwrite_header", lambda _t, _n: "skipped")
    certificate = purge(image, tmp_path, overwrite_pass=False)
    assert certificate.verification.keyslots_left == 0
    assert certificate.verification.luks_headers_left == 2
    assert certificate.result == "fail"


def test_the_cli_without_target_on_a_device_without_a_volume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = wipe_config(tmp_path)
    args = ["--config", str(config), "wipe", "device", "--yes", "--sanitized-by", "x"]
    assert main([*args, "--crypttab", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no data volume to purge" in err and "Give the disk image or block device" in err
    assert not os.path.exists(tmp_path / "certs")
