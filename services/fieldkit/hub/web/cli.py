"""``fieldkit hub create-admin`` and ``fieldkit hub web`` (gunicorn serving the hub web app)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from sqlalchemy.orm import Session

from fieldkit.config import DeviceConfig, config_path
from fieldkit.hub.db import make_engine, upgrade
from fieldkit.hub.web.service import gunicorn_command


def cmd_create_admin(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.auth import create_account

    password = os.environ.get("FIELDKIT_ADMIN_PASSWORD") or getpass.getpass("password: ")
    upgrade(config.hub.database_url)
    engine = make_engine(config.hub.database_url)
    try:
        with Session(engine) as session:
            create_account(session, args.username, password, "admin", actor="cli")
            session.commit()
    except ValueError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"admin {args.username} created")
    return 0


def cmd_web(args: argparse.Namespace, config: DeviceConfig) -> int:
    # gunicorn reads the same config file through $FIELDKIT_CONFIG in its config module.
    os.environ["FIELDKIT_CONFIG"] = str(config_path(args.config).absolute())
    command = gunicorn_command()
    os.execv(command[0], command)  # noqa: S606 (our own interpreter, fixed arguments)


def enrol_server_command() -> list[str]:
    """The enrolment server's command line (also the hub image's unit, fieldkit.policies)."""
    return [
        sys.executable, "-m", "gunicorn",
        "--config", "python:fieldkit.hub.enrolment_gunicorn",
        "fieldkit.hub.enrolment:create_app()",
    ]  # fmt: skip


def cmd_enrol_server(args: argparse.Namespace, config: DeviceConfig) -> int:
    os.environ["FIELDKIT_CONFIG"] = str(config_path(args.config).absolute())
    command = enrol_server_command()
    os.execv(command[0], command)  # noqa: S606 (our own interpreter, fixed arguments)
