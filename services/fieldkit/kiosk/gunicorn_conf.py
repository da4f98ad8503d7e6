"""gunicorn settings for the kiosk. The MQTT loop starts in the worker, never at import."""

from __future__ import annotations

from typing import Any

from fieldkit.config import load_config
from fieldkit.logs import configure_logging

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


def post_worker_init(worker: Any) -> None:
    from fieldkit.kiosk.app import attach_service
    from fieldkit.kiosk.service import SERVICE
    from fieldkit.runner import start_service

    configure_logging()
    attach_service(worker.wsgi, start_service(SERVICE, load_config()))


def worker_exit(server: Any, worker: Any) -> None:
    from fieldkit.kiosk.app import detach_service

    detach_service(worker.wsgi)
