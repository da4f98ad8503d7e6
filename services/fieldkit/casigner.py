"""The kit CA's key in a process of its own (issue 17 item 2).

On a hub the CA key signs device certificates (enrolment), the revocation list (a revoke, the
daily renewal) and nothing else. The services that need a signature — the EST enrolment
server, the hub broker's CRL renewal, the web app's revoke — run as the hub services' user and
cannot read the key: they ask this signer over a Unix socket, and it signs as
:class:`fieldkit.pki.KitPki` does locally. The signer runs as a user of its own
(``fieldkit-ca`` in the hub image), the only one that can read ``ca/ca.key``; the socket's
mode and group say who may ask (0660, the services' group). Every request is logged with the
asking process's uid and pid (``SO_PEERCRED``) and the device it concerns, never a key.

Protocol: one JSON object per line each way. A request ``{"op": ..., ...}``; a reply
``{"ok": {...}}`` or ``{"error": "what was wrong"}``. The operations are the CA's whole
job on a running hub and no more: ``issue-device``, ``revoke``, ``renew-crl-if-due``,
``write-crl``, ``ping``. Issuing a hub or evidence-signer certificate stays with the
provisioning admin's ``fieldkit pki`` on the PKI directory (as the signer's user or root).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import logging
import os
import socket
import socketserver
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

log = logging.getLogger(__name__)

MAX_LINE = 64 * 1024
TIMEOUT_SECONDS = 30.0


class SignerError(Exception):
    """The signer refused a request, or could not be reached (the message says which)."""


# --- the client (used by fieldkit.pki.KitPki when a signer socket is configured) -----------


def call(socket_path: Path, op: str, **fields: Any) -> dict[str, Any]:
    """One request to the signer at ``socket_path``; its ``ok`` payload, or SignerError."""
    request = json.dumps({"op": op, **fields}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(TIMEOUT_SECONDS)
            conn.connect(str(socket_path))
            conn.sendall(request)
            reply = conn.makefile("rb").readline(MAX_LINE + 1)
    except OSError as exc:
        raise SignerError(f"the CA signer at {socket_path} did not answer: {exc}") from None
    try:
        answer = json.loads(reply)
    except ValueError:
        raise SignerError(f"the CA signer at {socket_path} sent no readable answer") from None
    if not isinstance(answer, dict):
        raise SignerError(f"the CA signer at {socket_path} sent no readable answer")
    if "error" in answer:
        raise SignerError(str(answer["error"]))
    ok = answer.get("ok")
    if not isinstance(ok, dict):
        raise SignerError(f"the CA signer at {socket_path} sent no readable answer")
    return ok


# --- the server ------------------------------------------------------------------------------


def _text(request: dict[str, Any], field: str) -> str:
    value = request.get(field)
    if not isinstance(value, str) or not value:
        raise SignerError(f"{field}: a non-empty string is required")
    return value


def _dispatch(pki: Any, request: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Carry out one request on the local PKI: (its reply payload, what the log says)."""
    op = request.get("op")
    if op == "ping":
        return {}, "ping"
    if op == "issue-device":
        device = _text(request, "device")
        try:
            csr = x509.load_pem_x509_csr(_text(request, "csr").encode())
            signing_public = base64.b64decode(_text(request, "signing_public"), validate=True)
            prior_text = request.get("prior_signing") or ""
            if not isinstance(prior_text, str):
                raise ValueError("prior_signing")
            prior = base64.b64decode(prior_text, validate=True) if prior_text else None
        except ValueError:
            raise SignerError("csr, signing_public or prior_signing is not readable") from None
        cert = pki.issue_device(device, csr, signing_public, prior_signing=prior)
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return {
            "certificate": pem
        }, f"issued a certificate for {device} (serial {cert.serial_number:x})"
    if op == "revoke":
        device = _text(request, "device")
        serial = pki.revoke(device)
        return {"serial": serial}, f"revoked {device} (serial {serial:x})"
    if op == "renew-crl-if-due":
        margin = request.get("margin_seconds")
        if not isinstance(margin, (int, float)) or margin < 0:
            raise SignerError("margin_seconds: a number of seconds is required")
        renewed = pki.renew_crl_if_due(dt.timedelta(seconds=margin))
        return {"renewed": renewed}, "renewed the CRL" if renewed else "CRL not due"
    if op == "write-crl":
        days = request.get("valid_days")
        if not isinstance(days, (int, float)) or not 0 < days <= 366:
            raise SignerError("valid_days: a number of days (at most 366) is required")
        pki.write_crl(dt.timedelta(days=days))
        return {}, "wrote the CRL"
    raise SignerError(f"unknown operation {op!r}")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    pki: Any
    lock: threading.Lock


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        from fieldkit.pki import PkiError

        raw = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
        self.request.settimeout(TIMEOUT_SECONDS)
        try:
            line = self.rfile.readline(MAX_LINE + 1)
        except OSError:
            return
        op = "?"
        try:
            if len(line) > MAX_LINE:
                raise SignerError(f"request longer than {MAX_LINE} bytes")
            try:
                request = json.loads(line)
            except ValueError:
                raise SignerError("the request is not JSON") from None
            if not isinstance(request, dict):
                raise SignerError("the request is not a JSON object")
            op = str(request.get("op"))[:40]
            with self.server.lock:  # one signature at a time: the roster and CRL stay whole
                payload, done = _dispatch(self.server.pki, request)
            reply: dict[str, Any] = {"ok": payload}
            log.info("CA signer: %s, for uid %d (pid %d)", done, uid, pid)
        except (SignerError, PkiError) as exc:
            reply = {"error": str(exc)}
            log.warning("CA signer: refused %s for uid %d (pid %d): %s", op, uid, pid, exc)
        except Exception as exc:  # one bad request must not end the signer
            reply = {"error": "internal error"}
            log.error("CA signer: %s for uid %d failed: %s", op, uid, type(exc).__name__)
        with contextlib.suppress(OSError):  # the asker gave up: nothing to tell it
            self.wfile.write(json.dumps(reply).encode() + b"\n")


def serve(
    pki_root: Path,
    socket_path: Path,
    stop: threading.Event,
    *,
    mode: int = 0o660,
    ready: Callable[[], object] | None = None,
) -> None:
    """Serve the CA at ``pki_root`` on ``socket_path`` until ``stop`` is set.

    The socket is made ``mode`` (default 0660: the signer's user and group may ask), in the
    signer's primary group (the hub services' group in the image's unit)."""
    from fieldkit.pki import KitPki

    pki = KitPki(pki_root)
    pki.ca_key.stat()  # refuse at once, with the path, if this user cannot see the key
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # no moment in which the socket is open to others
    try:
        server = _Server(str(socket_path), _Handler)
    finally:
        os.umask(old_umask)
    server.pki = pki
    server.lock = threading.Lock()
    os.chmod(socket_path, mode)
    worker = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2})
    worker.start()
    log.info("CA signer: serving %s on %s", pki_root, socket_path)
    try:
        if ready is not None:
            ready()
        stop.wait()
    finally:
        server.shutdown()
        worker.join()
        server.server_close()
        socket_path.unlink(missing_ok=True)
        log.info("CA signer: stopped")
