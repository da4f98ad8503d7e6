"""The operator roster the hub sent, kept on the tablet between restarts (R13, R22)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fieldkit.messages import MessageError, decode
from fieldkit.sharing import private_mode
from fieldkit.sync.wire import OperatorRoster

log = logging.getLogger(__name__)

NO_ROSTER = OperatorRoster(version="", issued_at=0.0)


def load_roster(path: Path) -> OperatorRoster:
    """The roster kept from the hub, or an empty one (none yet, or unreadable: said in the log)."""
    try:
        return decode(path.read_bytes(), OperatorRoster)
    except FileNotFoundError:
        return NO_ROSTER
    except (OSError, MessageError) as exc:
        log.error("kept operator roster at %s unreadable (%s); waiting for the hub", path, exc)
        return NO_ROSTER


def save_roster(path: Path, roster: OperatorRoster) -> None:
    """Write the roster atomically, readable by this service only (it holds password hashes),
    and by the kiosk on a tablet, where the two share its folder (fieldkit.sharing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    mode = private_mode(path.parent)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), mode)
        out.write(roster.encode())
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
