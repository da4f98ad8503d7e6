"""The image build never walks, packs or deletes through a mount left in its rootfs (issue 16).

A new user's ``fieldkit image build tablet --no-pack`` died in its manifest step walking a
``proc`` that an interrupted bootstrap had left mounted in the rootfs. These tests mount a
real tmpfs (and a /proc) under a fake rootfs: the walk skips them, the sweep unmounts them,
and a step that fails still sweeps. Needs root (mount); fast.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fieldkit.provision.image import (
    BuildOptions,
    ImageBuild,
    ImageBuildError,
    _tree_bytes,
    mounts_under,
    unmount_under,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


@pytest.fixture
def rootfs(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("x" * 100)
    for name in ("proc", "run", "data"):
        (root / name).mkdir()
    yield root
    # Never leave a mount behind in pytest's tmp_path, whatever a test did.
    for point in mounts_under(root):
        subprocess.run(["umount", "-l", str(point)], check=False)


def _mount_tmpfs(point: Path, payload: int) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(point)], check=True)
    (point / "inside").write_bytes(b"y" * payload)


def test_walk_skips_mounts_by_device_and_by_mountinfo(rootfs: Path) -> None:
    _mount_tmpfs(rootfs / "run", 5000)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    # A bind mount of a folder of the same filesystem has the same st_dev: only mountinfo
    # shows it is a mount.
    (rootfs / "etc" / "sub").mkdir()
    (rootfs / "etc" / "sub" / "f").write_bytes(b"z" * 7)
    subprocess.run(["mount", "--bind", str(rootfs / "etc"), str(rootfs / "data")], check=True)
    assert {p.name for p in mounts_under(rootfs)} == {"run", "proc", "data"}
    assert _tree_bytes(rootfs) == 100 + 7  # /etc only: not the tmpfs, /proc or the bind


def test_sweep_unmounts_everything_below_the_rootfs(rootfs: Path) -> None:
    _mount_tmpfs(rootfs / "run", 10)
    (rootfs / "run" / "nested").mkdir()
    _mount_tmpfs(rootfs / "run" / "nested", 10)
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    done = unmount_under(rootfs)
    assert [p.name for p in done][:1] == ["nested"]  # deepest first
    assert mounts_under(rootfs) == []
    assert not (rootfs / "run" / "inside").exists()


def test_a_failing_step_still_unmounts_what_was_left(rootfs: Path, tmp_path: Path) -> None:
    build = ImageBuild(
        BuildOptions(role="tablet", out=rootfs.parent, cache=tmp_path / "cache"),
        progress=lambda _message: None,
    )
    assert build.rootfs == rootfs
    with pytest.raises(ImageBuildError, match="bootstrap broke"), build._step(1, 1, "bootstrap"):
        subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
        raise ImageBuildError("bootstrap broke")
    assert mounts_under(rootfs) == []


def test_the_manifest_of_a_rootfs_with_a_proc_left_mounted(rootfs: Path, tmp_path: Path) -> None:
    """The reported failure: --no-pack's manifest step on a rootfs with /proc still mounted."""
    build = ImageBuild(
        BuildOptions(role="tablet", out=rootfs.parent, cache=tmp_path / "cache", pack=False),
        progress=lambda _message: None,
    )
    subprocess.run(["mount", "-t", "proc", "proc", str(rootfs / "proc")], check=True)
    with build._step(4, 4, "manifest"):
        assert build.sweep_mounts("before manifest") == [rootfs / "proc"]
        assert _tree_bytes(rootfs) == 100
    assert mounts_under(rootfs) == []
