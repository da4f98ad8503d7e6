"""The hub's definitions mirror: a directory of ClamAV databases served over HTTPS only.

On the hub, Cisco-Talos' ``cvdupdate`` fills the directory with the official databases when the
hub is online (``cvd config set --dbdir DIR; cvd update``), and the kit publishes its own
signature database next to them (``publish_database``). Tablets' freshclam fetches the official
ones through ``PrivateMirror`` and the kit's through ``DatabaseCustomURL``.

Only database files are served: no directory listings, nothing else in the directory.
freshclam asks with ``If-Modified-Since`` (the time its local copy was written), which the
standard handler answers from the file's modification time, so a published database always gets
a modification time later than any earlier one.

TLS only (1.2 or later), with the hub's server certificate from the kit PKI: the kit's own
database (``.cud``) is not signed, so the channel is what vouches for it. A plain-HTTP request
on the port gets no answer but a closed connection. The tablets' freshclam trusts the kit CA
alone for it (``CURL_CA_BUNDLE``, fieldkit.antivirus.engine).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import ssl
import threading
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fieldkit.antivirus.database import (
    CONTAINER_SUFFIXES,
    DATABASE_SUFFIXES,
    DatabaseError,
    DatabaseInfo,
    read_header,
)
from fieldkit.runner import ServiceContext

if TYPE_CHECKING:
    from fieldkit.config import DeviceConfig

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


# A client gets this long to complete its TLS handshake.
HANDSHAKE_TIMEOUT = 30.0


class MirrorTlsError(Exception):
    """The mirror's certificate or key cannot be used (missing, unreadable, not a pair)."""


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 or later, the hub's certificate; no client certificate is asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError:
        raise MirrorTlsError(
            f"the mirror's certificate {cert} or key {key} does not exist"
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise MirrorTlsError(f"the mirror's certificate {cert} and key {key}: {exc}") from None
    return context


class TlsMirrorServer(ThreadingHTTPServer):
    """Each connection's TLS handshake runs in its own thread (``process_request_thread``), so
    a client that never completes one (or speaks plain HTTP) holds up nobody else."""

    def __init__(self, address: tuple[str, int], handler: Any, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            # A plain-HTTP request, a client that trusts another CA, or one too old for TLS 1.2:
            # the connection is closed without an answer.
            log.debug("mirror: TLS handshake with a client failed: %s", exc)
            return
        tls.settimeout(None)
        try:
            super().finish_request(tls, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class DefinitionsMirror:
    """A running mirror; ``with DefinitionsMirror(dir, cert, key) as m: m.url``."""

    def __init__(
        self, directory: Path, cert: Path, key: Path, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.directory = directory.absolute()
        handler = functools.partial(MirrorHandler, directory=str(self.directory))
        self.server = TlsMirrorServer((host, port), handler, server_context(cert, key))
        # (path, HTTP status) of every request served, in order.
        self.fetches: list[tuple[str, int]] = []
        self.server.fetches = self.fetches  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="av-mirror", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"https://{host!s}:{port}"

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


def mirror_tls_files(config: DeviceConfig) -> tuple[Path, Path]:
    """The mirror's certificate and key: ``[av_mirror] tls_cert/tls_key``, or else the hub's
    server certificate in its kit PKI (the one the broker and the enrolment server use)."""
    settings = config.av_mirror
    hub = config.hub.pki / "hub"
    return settings.tls_cert or hub / "server.crt", settings.tls_key or hub / "server.key"


def serve_mirror(ctx: ServiceContext) -> None:
    settings = ctx.config.av_mirror
    settings.directory.mkdir(parents=True, exist_ok=True)
    cert, key = mirror_tls_files(ctx.config)
    mirror = DefinitionsMirror(settings.directory, cert, key, settings.host, settings.port).start()
    log.info("definitions mirror serving %s at %s", settings.directory, mirror.url)
    ctx.on_stop(mirror.stop)
