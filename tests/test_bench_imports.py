"""The benchmarks under bench/ start outside pytest: each imports in a fresh interpreter (a
test helper that only works once pytest has loaded conftest would break them silently)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHES = sorted(p.stem for p in (REPO / "bench").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", BENCHES)
def test_the_benchmark_imports_on_its_own(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import bench.{name}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
