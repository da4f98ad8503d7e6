"""gunicorn settings for the hub web app (``fieldkit hub web``)."""

from __future__ import annotations

from typing import Any

from fieldkit.config import load_config

_config = load_config()

bind = f"{_config.hubweb.listen_host}:{_config.hubweb.listen_port}"
# TLS here (the hub image), or in a proxy in front (then both are unset).
if _config.hubweb.tls_cert is not None:
    certfile = str(_config.hubweb.tls_cert)
if _config.hubweb.tls_key is not None:
    keyfile = str(_config.hubweb.tls_key)
# Logins, lockouts and the audit chain live in the database, so workers share nothing else.
workers = _config.hubweb.workers
threads = 2
worker_class = "gthread"
timeout = 60
graceful_timeout = 10
# Query strings name municipalities and dates only, but the audit log is the record that counts.
accesslog = None
errorlog = "-"
control_socket_disable = True
# One migration run before the workers fork, not one per worker.
preload_app = True


def post_fork(server: Any, worker: Any) -> None:
    # The app (and its engine) was built before the fork: give each worker its own connections.
    from fieldkit.hub.web.extensions import hubweb

    hubweb(worker.app.wsgi()).engine.dispose(close=False)


# The master joins the hub's local bus for health only (workers come and go under it), so
# `fieldkit status` on the hub shows the web app like any other service.
_service: Any = None


def when_ready(server: Any) -> None:
    global _service
    from fieldkit.bus import BusError
    from fieldkit.hub.web.service import SERVICE
    from fieldkit.runner import start_service

    try:
        _service = start_service(SERVICE, _config)
    except BusError as exc:  # `fieldkit hub web` run alone, with no local broker
        server.log.warning("hub web: no local bus, health not announced (%s)", exc)


def on_exit(server: Any) -> None:
    from fieldkit.runner import stop_service

    if _service is not None:
        stop_service(_service)
