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


# Under systemd (the hub image's fieldkit-hub-enrol.service, Type=notify, NotifyAccess=all):
# gunicorn's arbiter says READY itself as soon as it listens, and systemd's watchdog counts from
# then, while a worker may still be loading the app (over 20 s in the booted hub under
# emulation: it was killed at every start). So before each fork the master gives the start a
# longer watchdog (STARTING_WATCHDOG_SECONDS), and the worker, once it answers its own CA request
# over TLS, sets the unit's own back and beats it while the server keeps answering: a hung
# server is killed and restarted like every other hub service.
STARTING_WATCHDOG_SECONDS = 300
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


def _heartbeat(worker: Any, timeout: float) -> None:
    period = timeout / 2
    answered = False
    while not _stop.is_set():
        started = time.monotonic()
        if _answers(period):
            if not answered:  # up: the unit's own watchdog again, and READY
                notify(f"WATCHDOG_USEC={int(timeout * 1_000_000)}", "READY=1", "STATUS=running")
                answered = True
            notify("WATCHDOG=1")
        else:
            worker.log.error("enrolment server: no answer to its own request; no heartbeat")
        _stop.wait(max(0.0, started + period - time.monotonic()))


def pre_fork(server: Any, worker: Any) -> None:
    if watchdog_timeout() is not None:
        notify(f"WATCHDOG_USEC={STARTING_WATCHDOG_SECONDS * 1_000_000}", "STATUS=starting")


def post_worker_init(worker: Any) -> None:
    timeout = watchdog_timeout()  # the unit's own (WatchdogSec=), from the environment
    if timeout is not None:
        threading.Thread(
            target=_heartbeat, args=(worker, timeout), name="watchdog", daemon=True
        ).start()


def worker_exit(server: Any, worker: Any) -> None:
    _stop.set()
