"""The municipalities' receiver keys the hub's roster carries, written into the tablet's bundle
(issue 21): ``<[sync] bundle>/receivers/<code>.pem``, the files sync seals application packets
to and the kiosk offers municipalities by (``fieldkit.municipalities.receiver_codes``).

The roster has been checked before this runs (signed for this tablet with the hub key pinned
at enrolment, its version matching its content, newer than the installed one). Every key must
still be a public X25519 key, each municipality once, or the whole roster is refused and the
folder left as it was. The folder then holds exactly the roster's keys: a new one is written,
a replaced one overwritten, one no longer on the hub removed. Each file is written beside its
place and renamed over it (a reader sees the old key or the new one, never half of one), and
the keys are written before any is removed. The courier writes them before it keeps the roster;
a folder it cannot write does not hold back the roster's operators (a disabled operator must
reach the tablet): the keys are written again on each status round until they are.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from fieldkit.municipalities import CODE, RECEIVERS_DIR, receiver_key_file
from fieldkit.sealing_keys import SealingKeyError, read_public
from fieldkit.sharing import public_folder_mode
from fieldkit.sync.wire import DownlinkRefused, RosterReceiver

log = logging.getLogger(__name__)


@dataclass
class ReceiverChanges:
    """Which municipality codes a roster added, replaced and removed (codes only)."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


def checked_keys(receivers: Sequence[RosterReceiver]) -> dict[str, bytes]:
    """Each municipality's key in its canonical PEM; ``DownlinkRefused`` for a key that is not
    a public X25519 key (a private key above all) or a municipality named twice."""
    keys: dict[str, bytes] = {}
    for receiver in receivers:
        if receiver.municipality in keys:
            raise DownlinkRefused(f"roster names the receiver {receiver.municipality} twice")
        try:
            key = read_public(receiver.public_key.encode())
        except SealingKeyError as exc:
            raise DownlinkRefused(
                f"roster's receiver key for {receiver.municipality} refused: {exc}"
            ) from None
        keys[receiver.municipality] = key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return keys


def install_receivers(bundle: Path, keys: dict[str, bytes]) -> ReceiverChanges:
    """Make ``<bundle>/receivers/`` hold exactly ``keys`` (from ``checked_keys``)."""
    folder = bundle / RECEIVERS_DIR
    if not folder.is_dir():
        folder.mkdir()
        os.chmod(folder, public_folder_mode(bundle))
    changes = ReceiverChanges()
    for code, pem in sorted(keys.items()):
        target = receiver_key_file(bundle, code)
        try:
            if target.read_bytes() == pem:
                continue
            changes.replaced.append(code)
        except FileNotFoundError:
            changes.added.append(code)
        _write_atomically(target, pem)
    for path in sorted(folder.glob("*.pem")):
        if CODE.match(path.stem) and path.stem not in keys:
            path.unlink()
            changes.removed.append(path.stem)
    if changes:
        _fsync_folder(folder)
    return changes


def _write_atomically(target: Path, data: bytes) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, 0o644)  # public; the umask must not make it unreadable to the kiosk
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _fsync_folder(folder: Path) -> None:
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
