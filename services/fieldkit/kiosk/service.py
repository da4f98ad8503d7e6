"""The kiosk as a service: gunicorn runs the Flask app; its worker joins the bus."""

from __future__ import annotations

import sys
from pathlib import Path

from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext


def setup(ctx: ServiceContext) -> None:
    """Called in the gunicorn worker (never at import); the app registers its handlers when
    the worker attaches the service to it (``fieldkit.kiosk.app.attach_service``)."""


def gunicorn_command(config_path: Path) -> list[str]:
    return [
        sys.executable, "-m", "gunicorn",
        "--config", "python:fieldkit.kiosk.gunicorn_conf",
        "fieldkit.kiosk.app:create_app()",
    ]  # fmt: skip


SERVICE = ServiceSpec(
    name="kiosk",
    summary="kiosk: operator login and the applicant session",
    setup=setup,
    roles=frozenset({"tablet"}),
    command=gunicorn_command,
    holds_personal_data=True,
    # The end of every applicant session asks the wipe service to erase it (issue 8).
    requests=("antivirus", "capture", "card", "printing", "sync", "wipe"),
    # The holders' answers to the wipe's forget handshake: staff watch the wipe (issue 21).
    listens=(
        "capture/evt/#",
        "printing/evt/#",
        "sync/evt/operators",
        "+/evt/session/+/forgotten",
    ),
)
