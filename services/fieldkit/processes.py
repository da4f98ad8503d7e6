"""Child processes of the supervisor: the broker and the services."""

from __future__ import annotations

import ctypes
import signal


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM if the supervisor dies, so nothing is orphaned.

    Children run in their own session, so a terminal's Ctrl-C reaches only the supervisor,
    which then stops the services before the broker (they can still say they go offline).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
