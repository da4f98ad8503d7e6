"""The hub image's provisioning admin (issue 18): SSH public keys and a password hash for sudo,
given to `fieldkit image build hub` as files and checked before the long build starts: never a
private key, never a password in clear, never on a tablet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fieldkit.provision.image import BuildOptions, ImageBuildError, admin_vars

FIELDKIT = [sys.executable, "-m", "fieldkit"]


@pytest.fixture(scope="module")
def admin_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("admin")
    key = folder / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fkadmin@office", "-f", str(key)],
        check=True,
        timeout=60,
    )
    hashed = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input="correct horse battery staple\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    password_hash = folder / "admin.hash"
    password_hash.write_text(hashed)
    return key, key.with_suffix(".pub"), password_hash


def options(role: str, keys: Path | None, password_hash: Path | None) -> BuildOptions:
    return BuildOptions(
        role=role,  # type: ignore[arg-type]
        out=Path("/nonexistent"),
        cache=Path("/nonexistent"),
        admin_keys=keys,
        admin_password_hash=password_hash,
    )


def test_the_admins_public_keys_and_password_hash_reach_the_hub_role(
    admin_files: tuple[Path, Path, Path],
) -> None:
    _, public, password_hash = admin_files
    values = admin_vars("hub", options("hub", public, password_hash))
    assert values["hub_admin_authorized_keys"] == public.read_text().strip() + "\n"
    assert values["hub_admin_password_hash"].startswith("$6$")
    assert admin_vars("hub", options("hub", None, None)) == {}


@pytest.mark.parametrize(
    "case",
    ["private-key-as-keys", "password-in-clear", "hash-without-login", "tablet", "no-key"],
)
def test_a_wrong_admin_file_is_refused_with_what_is_wrong(
    admin_files: tuple[Path, Path, Path], tmp_path: Path, case: str
) -> None:
    private, public, password_hash = admin_files
    clear = tmp_path / "clear"
    clear.write_text("correct horse battery staple\n")
    empty = tmp_path / "empty"
    empty.write_text("# no key yet\n")
    role, keys, hashed, said = {
        "private-key-as-keys": ("hub", private, None, "key 1"),
        "password-in-clear": ("hub", public, clear, "never the password"),
        "hash-without-login": ("hub", None, password_hash, "needs --admin-ssh-keys"),
        "tablet": ("tablet", public, None, "for the hub only"),
        "no-key": ("hub", empty, None, "no public key"),
    }[case]
    with pytest.raises(ImageBuildError, match=said):
        admin_vars(role, options(role, keys, hashed))


def test_the_build_refuses_a_password_in_clear_before_it_starts(
    admin_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Refused in a second, with nothing built: the build's folder is not even made."""
    _, public, _ = admin_files
    clear = tmp_path / "clear"
    clear.write_text("correct horse battery staple\n")
    out = tmp_path / "build"
    admin = ["--admin-ssh-keys", str(public), "--admin-password-hash", str(clear)]
    run = subprocess.run(
        [*FIELDKIT, "image", "build", "hub", "--out", str(out), *admin],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "never the password" in run.stderr, run.stderr
    assert "correct horse" not in run.stdout + run.stderr
    assert not out.exists()
