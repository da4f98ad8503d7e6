"""Child processes of the supervisor: the broker and the services."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess


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
