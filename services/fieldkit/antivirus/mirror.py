"""The hub's definitions mirror: a directory of ClamAV databases served over HTTP.

On the hub, Cisco-Talos' ``cvdupdate`` fills the directory with the official databases when the
hub is online (``cvd config set --dbdir DIR; cvd update``), and the kit publishes its own
signature database next to them (``publish_database``). Tablets' freshclam fetches the official
ones through ``PrivateMirror`` and the kit's through ``DatabaseCustomURL``.

Only database files are served: no directory listings, nothing else in the directory.
freshclam asks with ``If-Modified-Since`` (the time its local copy was written), which the
standard handler answers from the file's modification time, so a published database always gets
a modification time later than any earlier one.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fieldkit.antivirus.database import (
    CONTAINER_SUFFIXES,
    DATABASE_SUFFIXES,
    DatabaseError,
    DatabaseInfo,
    read_header,
)
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)

# What a mirror may serve: databases, their incremental diffs, and cvdupdate's DNS stand-in.
SERVED_SUFFIXES = (*DATABASE_SUFFIXES, ".cdiff")


class MirrorHandler(SimpleHTTPRequestHandler):
    """Serves database files from the mirror directory by their bare name, nothing else."""

    server_version = "fieldkit-av-mirror"

    def send_head(self) -> Any:
        name = self.path.split("?", 1)[0].lstrip("/")
        if "/" in name or name.startswith(".") or not name.endswith(SERVED_SUFFIXES):
            self.send_error(HTTPStatus.NOT_FOUND, "not a definitions file")
            return None
        return super().send_head()

    def list_directory(self, path: str | os.PathLike[str]) -> None:
        self.send_error(HTTPStatus.NOT_FOUND, "no listings")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("mirror: " + format, *args)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Which databases were asked for, and the answer: the hub shows tablets' fetches.
        fetches = getattr(self.server, "fetches", None)
        if isinstance(fetches, list):
            fetches.append((self.path, int(code) if isinstance(code, int) else 0))
        super().log_request(code, size)


class DefinitionsMirror:
    """A running mirror; ``with DefinitionsMirror(dir) as m: m.url``."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = directory.absolute()
        handler = functools.partial(MirrorHandler, directory=str(self.directory))
        self.server = ThreadingHTTPServer((host, port), handler)
        # (path, HTTP status) of every request served, in order.
        self.fetches: list[tuple[str, int]] = []
        self.server.fetches = self.fetches  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="av-mirror", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> DefinitionsMirror:
        self.thread.start()
        log.info("definitions mirror serving %s at %s", self.directory, self.url)
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def __enter__(self) -> DefinitionsMirror:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def publish_database(directory: Path, filename: str, data: bytes) -> Path:
    """Put a database into the mirror atomically, newer (by mtime) than the one it replaces."""
    if "/" in filename or not filename.endswith(CONTAINER_SUFFIXES):
        raise DatabaseError("publish a .cud/.cvd container by its bare file name")
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / filename
    # Same suffix as the target, so the header check below reads it as a container.
    staged = directory / f".staged-{filename}"
    staged.write_bytes(data)
    try:
        read_header(staged)  # refuse to serve a file freshclam would reject
    except DatabaseError:
        staged.unlink()
        raise
    try:
        previous = target.stat().st_mtime
    except FileNotFoundError:
        previous = 0.0
    # HTTP dates have whole seconds: a copy fetched earlier in this same second must still look
    # older than this file, so the new time is the next whole second (or later).
    stamp = max(float(int(time.time()) + 1), previous + 1.0)
    os.utime(staged, (stamp, stamp))
    staged.replace(target)
    return target


def mirror_freshness(directory: Path, now: float | None = None) -> list[tuple[DatabaseInfo, float]]:
    """Each container database in the mirror with its age in hours (for the hub dashboard)."""
    moment = time.time() if now is None else now
    rows = []
    for path in sorted(directory.glob("*")):
        if path.suffix in CONTAINER_SUFFIXES and path.is_file():
            info = read_header(path)
            rows.append((info, (info.age(moment) or 0.0) / 3600.0))
    return rows


def serve_mirror(ctx: ServiceContext) -> None:
    settings = ctx.config.av_mirror
    settings.directory.mkdir(parents=True, exist_ok=True)
    mirror = DefinitionsMirror(settings.directory, settings.host, settings.port).start()
    log.info("definitions mirror serving %s at %s", settings.directory, mirror.url)
    ctx.on_stop(mirror.stop)
