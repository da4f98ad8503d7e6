"""A shifted wall clock for the kit's processes (tests only): ``wallclock_shim.c`` preloaded.

``Wallclock(directory)`` builds the shim once; ``environment`` is what a process needs to run
on the shifted clock (children inherit it); ``step(seconds)`` moves that clock for every such
process at once (each rereads the offset within 100 ms). The monotonic clocks stay real.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("wallclock_shim.c")


class Wallclock:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.library = directory / "wallclock.so"
        self.offset_file = directory / "clock-offset"
        subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", "-o", str(self.library), str(SHIM_SOURCE), "-ldl"],
            check=True,
        )
        self.step(0, settle=0)

    @property
    def environment(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": str(self.library),
            "FIELDKIT_WALLCLOCK_OFFSET_FILE": str(self.offset_file),
        }

    def step(self, seconds: int, settle: float = 0.5) -> None:
        """Set the shifted processes' wall clock to real time + ``seconds``; wait ``settle``
        seconds, so every process has reread it (each caches it for 100 ms)."""
        tmp = self.offset_file.with_suffix(".new")
        tmp.write_text(f"{seconds}\n")
        tmp.replace(self.offset_file)
        time.sleep(settle)
