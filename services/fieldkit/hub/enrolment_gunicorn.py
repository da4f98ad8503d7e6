"""gunicorn settings for the hub's EST enrolment server (``fieldkit hub enrol-server``):
TLS with the hub's server certificate from the kit CA, which the tablets pin."""

from __future__ import annotations

from fieldkit.config import load_config

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
