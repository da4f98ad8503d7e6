"""The hub web app as a hub service: gunicorn runs it; its master says it is alive."""

from __future__ import annotations

import sys

from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext


def gunicorn_command() -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "--config", "python:fieldkit.hub.web.gunicorn_conf",
        "fieldkit.hub.web.app:create_app()",
    ]  # fmt: skip


def setup(ctx: ServiceContext) -> None:
    """The web app handles no bus messages; its bus connection carries its health only."""


SERVICE = ServiceSpec(
    name="hub-web",
    summary="hub web: reports, pick-up, devices, registry for admins, municipalities, auditors",
    setup=setup,
    roles=frozenset({"hub"}),
    command=lambda config_path: gunicorn_command(),
)
