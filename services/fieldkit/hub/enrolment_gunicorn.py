"""gunicorn settings for the hub's EST enrolment server (``fieldkit hub enrol-server``):
TLS with the hub's server certificate from the kit CA, which the tablets pin."""

from __future__ import annotations

import ssl
import threading
import time
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


# Under systemd (the hub image's fieldkit-hub-enrol.service, Type=notify, NotifyAccess=all): the
# worker, once it has loaded the app, says the server is up, and beats the watchdog while the
# server answers its own CA request over TLS, so a hung server is killed and restarted like
# every other hub service. (The master's when_ready came before the worker could answer: the
# booted hub, under emulation, killed it at every start.)
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


def _heartbeat(worker: Any, period: float) -> None:
    while not _stop.is_set():
        started = time.monotonic()
        if _answers(period):
            notify("WATCHDOG=1")
        else:
            worker.log.error("enrolment server: no answer to its own request; no heartbeat")
        _stop.wait(max(0.0, started + period - time.monotonic()))


def post_worker_init(worker: Any) -> None:
    notify("READY=1", "STATUS=running")
    timeout = watchdog_timeout()
    if timeout is not None:
        threading.Thread(
            target=_heartbeat, args=(worker, timeout / 2), name="watchdog", daemon=True
        ).start()


def worker_exit(server: Any, worker: Any) -> None:
    _stop.set()
