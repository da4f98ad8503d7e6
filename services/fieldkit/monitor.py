"""The health monitor: watches every service's retained health and answers status requests."""

from __future__ import annotations

import logging
import threading
from typing import Literal

from pydantic import Field

from fieldkit.bus import Incoming
from fieldkit.messages import Health, Message
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)


class StatusRequest(Message):
    type: Literal["status"] = "status"
    service: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9-]{0,30}$")


class StatusReply(Message):
    type: Literal["status-reply"] = "status-reply"
    services: list[Health]


class HealthBoard:
    """The latest health of each service, and a log line whenever one changes state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Health] = {}

    def observe(self, health: Health, meta: Incoming) -> None:
        name = meta.topic.removeprefix("health/")
        if health.service != name:
            log.warning("health on %s names another service; ignored", meta.topic)
            return
        with self._lock:
            previous = self._latest.get(name)
            self._latest[name] = health
        if previous is None or previous.state != health.state:
            log.info("%s is %s", name, health.state)

    def status(self, request: StatusRequest, meta: Incoming) -> StatusReply:
        with self._lock:
            items = sorted(self._latest.values(), key=lambda h: h.service)
        if request.service is not None:
            items = [h for h in items if h.service == request.service]
        return StatusReply(services=items)


def setup(ctx: ServiceContext) -> None:
    board = HealthBoard()
    ctx.bus.handle_event("health/+", Health, board.observe)
    ctx.bus.handle_request("status", StatusRequest, board.status)


SERVICE = ServiceSpec(
    name="monitor",
    summary="health monitor: watches every service's health",
    setup=setup,
    roles=frozenset({"tablet", "hub"}),
    listens=("health/+",),
)
