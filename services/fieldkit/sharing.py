"""Files two services share through their folder's group (issue 17).

On a tablet the kiosk (which makes the device's keys at enrolment) and sync (which connects and
signs with them, and keeps the operator roster) run as two Unix users. The enrolment folder is
set-group-ID and belongs to the group of those two (``policies/services.yaml`` shared_groups,
``policies/erasure.yaml``): what either writes there takes that group, and its private files are
made readable by the group, so each of the two reads what the other wrote and no other service
does. Anywhere else (a development kit, one user for every service) private files stay 0600.

The services may not set a set-group-ID bit themselves (systemd's ``RestrictSUIDSGID=``: the
booted tablet refused the kiosk's ``chmod`` with EPERM). They need not: a folder made in a
set-group-ID folder takes its group and the bit from the kernel. A later ``chmod`` without the
bit keeps the group and clears the bit, so a folder is given its final mode only once what
must take the group is in it.
"""

from __future__ import annotations

import stat
from pathlib import Path

# The public parts (certificates, the hub's address, the receivers' public keys) are readable
# by path; a shared folder is not listable by the others (0751).
SHARED_FOLDER_MODE = 0o751
PRIVATE_FOLDER_MODE = 0o750


def is_shared(folder: Path) -> bool:
    """Whether ``folder`` hands its group to what is made in it (set-group-ID)."""
    try:
        return bool(folder.stat().st_mode & stat.S_ISGID)
    except FileNotFoundError:
        return False


def private_mode(folder: Path) -> int:
    """The mode of a private file made in ``folder``: its group's too when it is shared."""
    return 0o640 if is_shared(folder) else 0o600


def public_folder_mode(parent: Path) -> int:
    """A folder of public files (the receivers' keys) made in ``parent``, set explicitly: the
    services' umask (0077) would leave it to its maker alone. Shared, it is the group's to
    write too: the kiosk makes it at enrolment, and sync rewrites it from the hub's roster
    (``fieldkit.sync.receivers``, issue 21)."""
    return 0o775 if is_shared(parent) else 0o755


def folder_mode(parent: Path) -> int:
    """The final mode of a folder made in ``parent`` (the enrolment bundle in the enrolment
    folder), set once its files are in it."""
    return SHARED_FOLDER_MODE if is_shared(parent) else PRIVATE_FOLDER_MODE
