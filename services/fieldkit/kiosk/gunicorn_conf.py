"""gunicorn settings for the kiosk. The MQTT loop starts in the worker, never at import."""

from __future__ import annotations

import os
from typing import Any

from fieldkit.config import load_config
from fieldkit.logs import configure_logging
from fieldkit.watchdog import NOTIFY_SOCKET

_config = load_config()

bind = f"{_config.kiosk.listen_host}:{_config.kiosk.listen_port}"
# One worker: the applicant session lives in this process's memory and nowhere else.
workers = 1
threads = 4
worker_class = "gthread"
timeout = 30
graceful_timeout = 5
accesslog = None  # URLs could carry session references; the audit log records what matters.
errorlog = "-"
# gunicorn 27 would open a control socket in $HOME; the kiosk is managed by its supervisor.
control_socket_disable = True


# The service manager's notify socket, kept from gunicorn's master for its worker. gunicorn
# tells systemd READY=1 itself as soon as its master is up, which starts the unit's watchdog
# before the worker has loaded the app and joined the bus (on the booted image under
# emulation that took longer than the 20 s watchdog: the kiosk was killed at every start). The
# worker says READY=1 and beats once its work thread answers (fieldkit.runner).
_notify_socket: str | None = None


def on_starting(server: Any) -> None:
    global _notify_socket
    _notify_socket = os.environ.pop(NOTIFY_SOCKET, None)


def post_worker_init(worker: Any) -> None:
    from fieldkit.kiosk.app import attach_service
    from fieldkit.kiosk.service import SERVICE
    from fieldkit.runner import start_service

    if _notify_socket is not None:
        os.environ[NOTIFY_SOCKET] = _notify_socket
    configure_logging()
    attach_service(worker.wsgi, start_service(SERVICE, load_config()))


def worker_exit(server: Any, worker: Any) -> None:
    from fieldkit.kiosk.app import detach_service

    detach_service(worker.wsgi)
