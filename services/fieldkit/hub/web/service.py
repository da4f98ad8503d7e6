"""The hub web app as a hub service: gunicorn runs it; its master says it is alive."""

from __future__ import annotations

from fieldkit.hub.web.cli import gunicorn_command
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext


def setup(ctx: ServiceContext) -> None:
    """The web app handles no bus messages; its bus connection carries its health only."""


SERVICE = ServiceSpec(
    name="hub-web",
    summary="hub web: reports, pick-up, devices, registry for admins, municipalities, auditors",
    setup=setup,
    roles=frozenset({"hub"}),
    command=lambda config_path: gunicorn_command(),
)
