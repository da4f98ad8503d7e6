"""The online-application hand-off: open the official site the form's QR points to, with the
session's online JPEG ready to upload from a session folder on tmpfs.

Only hosts on the allowlist are opened (the browser policy allows no others either, R16). The
folder lives under the kiosk's session directory (a tmpfs on the images); it is overwritten and
removed when the session closes, and the wipe service's residue scan checks it (R6).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PHOTO_NAME = "mynumber-photo.jpg"


def allowed_online_url(url: str | None, hosts: list[str]) -> str | None:
    """The URL if it is https to an allowlisted host; None otherwise."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.hostname not in hosts or parts.username or parts.port:
        return None
    return url


class SessionFolders:
    """One private folder per session for files the browser must upload."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, sid: str) -> Path:
        return self.root / sid

    def write_photo(self, sid: str, jpeg: bytes) -> Path:
        folder = self.folder(sid)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        path = folder / PHOTO_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(jpeg)
        return path

    def purge(self, sid: str) -> list[str]:
        """Overwrite every file of the session's folder with zeros, then remove the folder."""
        folder = self.folder(sid)
        if not folder.exists():
            return []
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                size = path.stat().st_size
                with path.open("r+b") as handle:
                    handle.write(bytes(size))
                    handle.flush()
                    os.fsync(handle.fileno())
        shutil.rmtree(folder)
        return ["session folder for the online application"]
