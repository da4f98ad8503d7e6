"""The capture service's sandbox lets its models load (found in the booted image).

The person-segmentation model (MediaPipe Selfie Segmentation) has a custom op,
Convolution2DTransposeBias, that only LiteRT's XNNPACK delegate runs; the delegate starts only
when it can read the CPU's description from /proc. The baseline sandbox's ``ProcSubset=pid``
mounts a /proc without it: in the booted tablet capture died at every start
("unresolved custom op"). Here the same /proc mount is made in a namespace of its own
(``mount -t proc -o subset=pid``, what systemd does for ``ProcSubset=pid``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fieldkit.policies import load_policies, service_unit
from tests.support.paths import REPO_POLICIES

LOAD = "from fieldkit.capture.segmentation import PersonSegmentation; PersonSegmentation()"


def load_under_proc(subset: str) -> subprocess.CompletedProcess[str]:
    mount = "mount -t proc" + (f" -o subset={subset}" if subset else "") + " proc /proc"
    return subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "sh", "-c", f'{mount} && exec "$@"', "sh",
         sys.executable, "-c", LOAD],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


@pytest.mark.skipif(
    shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root"
)
def test_the_segmentation_model_needs_the_whole_proc() -> None:
    whole = load_under_proc("")
    assert whole.returncode == 0, whole.stderr[-600:]
    pids_only = load_under_proc("pid")
    assert pids_only.returncode != 0
    assert "Convolution2DTransposeBias" in pids_only.stderr, pids_only.stderr[-600:]


def test_the_capture_unit_mounts_the_whole_proc_and_still_hides_other_processes() -> None:
    unit = service_unit("capture", "camera", load_policies(REPO_POLICIES))
    settings = [line for line in unit.splitlines() if line.startswith(("ProcSubset=", "Protect"))]
    assert "ProcSubset=all" in settings and "ProcSubset=pid" not in settings, settings
    assert "ProtectProc=invisible" in settings, settings
