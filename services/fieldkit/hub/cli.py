"""``fieldkit hub …``: the hub's database, its packets for pick-up, its admins and web app.

Run on the hub, with its device config (``[hub]``). The ``fieldkit`` command is the same on a
tablet, which has no database libraries (the ``tablet`` extra): each command imports them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fieldkit.config import DeviceConfig
from fieldkit.pki import PkiError, check_municipality, write_private


def cmd_hub_migrate(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.db import upgrade

    upgrade(config.hub.database_url)
    print("hub database at the latest schema")
    return 0


def cmd_hub_export(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Write one municipality's sealed packets as files for ``fieldkit packet open``."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from fieldkit.hub.db import SealedPacketRow, make_engine

    args.out.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.hub.database_url)
    count = 0
    with Session(engine) as session:
        query = select(SealedPacketRow).where(SealedPacketRow.municipality == args.municipality)
        for row in session.scalars(query):
            packet = row.packet().model_dump_json().encode()
            write_private(args.out / f"{row.record_id}.json", packet)
            count += 1
    engine.dispose()
    print(f"{count} sealed packets for {args.municipality} in {args.out} (ciphertext only)")
    return 0


def cmd_create_admin(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_create_admin as create_admin

    return create_admin(args, config)


def cmd_web(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_web as web

    return web(args, config)


def _municipality(text: str) -> str:
    try:
        return check_municipality(text)
    except PkiError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_commands(sub: Any) -> None:
    """Add ``fieldkit hub`` and its subcommands to the ``fieldkit`` parser."""
    hub = sub.add_parser("hub", help="hub tools").add_subparsers(dest="hub_command", required=True)
    hub.add_parser("migrate", help="upgrade the hub database to the latest schema").set_defaults(
        func=cmd_hub_migrate
    )
    export = hub.add_parser("export-packets", help="one municipality's sealed packets as files")
    export.add_argument("municipality", type=_municipality)
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=cmd_hub_export)
    create = hub.add_parser("create-admin", help="create a hub web admin (password on stdin)")
    create.add_argument("username")
    create.set_defaults(func=cmd_create_admin)
    hub.add_parser("web", help="serve the hub web app with gunicorn").set_defaults(func=cmd_web)
