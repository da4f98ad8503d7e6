"""Child processes of the supervisor: the broker and the services."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
from collections.abc import Mapping

# What every kit process that may touch a session's data runs with, so that memory it frees
# is overwritten at once instead of keeping the bytes until reused (issue 15; measured in
# docs/wipe.md, "Process memory"):
#   PYTHONMALLOC=malloc  Python's own small-object allocator keeps freed blocks in its arenas
#                        untouched; with it off, every object is a glibc chunk;
#   glibc.malloc.perturb glibc fills each freed chunk with this byte (and new ones with its
#                        complement), for Python and C programs (mosquitto) alike;
#   tcache_count=0       glibc's per-thread cache keeps up to 7 freed chunks per size
#                        *without* the perturb fill: it must be off for the fill to hold.
# A chunk given back to the kernel (munmap) leaves the process; on the device the kernel
# zeroes freed pages too (init_on_free=1 on its command line).
PERTURB_BYTE = 0xA5
# Set by ``fieldkit up`` on every process it starts (the broker too), to this kit's runtime
# folder: the wipe reads the memory of exactly the processes that carry its own value, not
# another kit's on the same development machine.
KIT_ENV = "FIELDKIT_KIT"
SCRUB_TUNABLES = f"glibc.malloc.tcache_count=0:glibc.malloc.perturb={PERTURB_BYTE}"
SCRUB_PYTHON = {"PYTHONMALLOC": "malloc"}


def scrubbing_environment(
    base: Mapping[str, str], *, python: bool = True, enabled: bool = True
) -> dict[str, str]:
    """``base`` with the freed-memory scrub set (or, ``enabled=False``, explicitly unset)."""
    env = dict(base)
    ours = ("glibc.malloc.tcache_count=", "glibc.malloc.perturb=")
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t and not t.startswith(ours)]
    env.pop("MALLOC_PERTURB_", None)
    if enabled:
        tunables.append(SCRUB_TUNABLES)
        if python:
            env.update(SCRUB_PYTHON)
    else:
        env.pop("PYTHONMALLOC", None)
    if tunables:
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    else:
        env.pop("GLIBC_TUNABLES", None)
    return env


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the supervisor dies, so nothing is orphaned.

    Children run in their own session, so a terminal's Ctrl-C reaches only the supervisor,
    which then stops the services before the broker (they can still say they go offline).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def accepting(family: socket.AddressFamily, address: str | tuple[str, int]) -> bool:
    """Whether something accepts connections at ``address`` (a started server is up)."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(address)
        except OSError:
            return False
        return True


def terminate(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
