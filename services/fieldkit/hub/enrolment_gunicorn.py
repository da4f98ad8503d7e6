"""gunicorn settings for the hub's EST enrolment server (``fieldkit hub enrol-server``):
TLS with the hub's server certificate from the kit CA, which the tablets pin."""

from __future__ import annotations

import ssl
import threading
import urllib.request
from typing import Any

from fieldkit.config import load_config
from fieldkit.watchdog import notify, watchdog_timeout

_config = load_config()

bind = f"{_config.enrol.listen_host}:{_config.enrol.listen_port}"
certfile = str(_config.hub.pki / "hub" / "server.crt")
keyfile = str(_config.hub.pki / "hub" / "server.key")
# One worker: the per-address throttle of wrong codes lives in its memory.
workers = 1
threads = 4
worker_class = "gthread"
timeout = 60
accesslog = None
errorlog = "-"
control_socket_disable = True


# Under systemd (the hub image's fieldkit-hub-enrol.service, Type=notify): the master says it is
# up once it listens, and beats the watchdog while the server answers its own CA request over
# TLS, so a hung server is killed and restarted like every other hub service.
_stop = threading.Event()


def _answers(timeout: float) -> bool:
    context = ssl.create_default_context(cafile=str(_config.hub.pki / "ca" / "ca.crt"))
    context.check_hostname = False  # the certificate's names are the site's; the CA is checked
    url = f"https://127.0.0.1:{_config.enrol.listen_port}/.well-known/est/cacerts"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:
            return int(answer.status) == 200
    except OSError:
        return False


def _heartbeat(server: Any, period: float) -> None:
    while not _stop.wait(period):
        if _answers(period):
            notify("WATCHDOG=1")
        else:
            server.log.error("enrolment server: no answer to its own request; no heartbeat")


def when_ready(server: Any) -> None:
    notify("READY=1", "STATUS=running")
    timeout = watchdog_timeout()
    if timeout is not None:
        threading.Thread(
            target=_heartbeat, args=(server, timeout / 2), name="watchdog", daemon=True
        ).start()


def on_exit(server: Any) -> None:
    _stop.set()
