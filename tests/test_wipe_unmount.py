"""The device purge's unmount (`fieldkit.wipe.datavol.unmount_below`), on real tmpfs mounts in a
private mount namespace: everything at or below the volume's mount point goes, deepest first,
whoever unmounts it; a mount a process still holds stops the purge with its name (fail closed).

Why: a booted field test found /var/lib/fieldkit already gone (systemd finished stopping it)
between the listing of the mounts and its `umount`; the purge refused with "not mounted" and
the volume stayed LUKS. The retry loop is judged by what is still mounted, not by umount's
exit status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting tmpfs needs root"),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)"),
]

SCRIPT = """
import subprocess, sys, time
from pathlib import Path
from fieldkit.wipe.datavol import mounts_at_or_below, unmount_below
from fieldkit.wipe.sanitize import SanitizeError

top = Path(sys.argv[1])
case = sys.argv[2]
(top / "session").mkdir(parents=True)
subprocess.run(["mount", "-t", "tmpfs", "vol", str(top)], check=True)
(top / "session").mkdir()
subprocess.run(["mount", "-t", "tmpfs", "session", str(top / "session")], check=True)
print("before", len(mounts_at_or_below(top)))
if case == "gone":
    subprocess.run(["umount", "-R", str(top)], check=True)  # someone else was first
holder = None
if case == "busy":
    holder = subprocess.Popen(["sleep", "60"], cwd=top / "session")
try:
    unmount_below(top)
    print("released")
except SanitizeError as exc:
    print("refused:", exc)
finally:
    if holder:
        holder.kill()
print("after", len(mounts_at_or_below(top)))
"""


def run(tmp_path: Path, case: str) -> list[str]:
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", SCRIPT,
         str(tmp_path / "fieldkit"), case],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYTHONPATH": str(REPO / "services")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_the_volume_and_what_is_below_it_are_unmounted(tmp_path: Path) -> None:
    assert run(tmp_path, "plain") == ["before 2", "released", "after 0"]


def test_a_mount_already_gone_is_done_not_an_error(tmp_path: Path) -> None:
    assert run(tmp_path, "gone") == ["before 2", "released", "after 0"]


def test_a_mount_a_process_holds_refuses_the_purge_by_name(tmp_path: Path) -> None:
    before, said, after = run(tmp_path, "busy")
    assert before == "before 2" and after == "after 2"
    assert said.startswith(f"refused: cannot unmount {tmp_path / 'fieldkit' / 'session'}: ")
    assert "busy" in said
