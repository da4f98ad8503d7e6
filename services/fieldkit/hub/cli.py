"""``fieldkit hub …``: the hub's database, its packets for pick-up, its admins and web app.

Run on the hub, with its device config (``[hub]``). The ``fieldkit`` command is the same on a
tablet, which has no database libraries (the ``tablet`` extra): each command imports them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from fieldkit.config import DeviceConfig
from fieldkit.hub.crl import crl_status
from fieldkit.pki import KitPki, PkiError, check_municipality, write_private

JST = dt.timezone(dt.timedelta(hours=9))


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


def cmd_hub_crl(args: argparse.Namespace, config: DeviceConfig) -> int:
    """The CRL's validity; renewed when half its life is gone. Exit 1 while in alarm (the
    daily timer's unit then fails, and the hub's monitoring sees it)."""
    pki = KitPki(config.hub.pki)
    try:
        if args.renew_if_due and pki.renew_crl_if_due():
            print("CRL renewed")
    except (PkiError, OSError, ValueError) as exc:
        print(f"fieldkit: the CRL was not renewed: {exc.__class__.__name__}: {exc}")
    status = crl_status(pki)
    print(status.message)
    return 1 if status.alarm else 0


def cmd_pki_code(args: argparse.Namespace, config: DeviceConfig) -> int:
    """A one-time enrolment code for a device id, shown once (only its hash is kept)."""
    from sqlalchemy.orm import Session

    from fieldkit.hub.db import make_engine, upgrade
    from fieldkit.hub.enrolment import CodeError, create_code, parse_hours

    upgrade(config.hub.database_url)
    engine = make_engine(config.hub.database_url)
    try:
        with Session(engine) as session:
            hours = parse_hours(args.valid) if args.valid else config.enrol.code_hours
            code, expires = create_code(
                session, args.device, actor="cli", hours=hours, site=args.site
            )
            session.commit()
    except CodeError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    until = dt.datetime.fromtimestamp(expires, JST).strftime("%Y-%m-%d %H:%M")
    print(f"enrolment code for {args.device}: {code}")
    print(f"valid once, until {until} JST; type it on the tablet with the hub address")
    return 0


def add_pki_code(pki_sub: Any) -> None:
    """``fieldkit pki code DEVICE [--valid 24h] [--site NAME]`` (runs with the hub's config)."""
    code = pki_sub.add_parser("code", help="a one-time enrolment code for a device id")
    code.add_argument("device")
    code.add_argument("--valid", default="", help="how long it works: 24h (default), 90m, 2d")
    code.add_argument("--site", default="", help="the site the tablet is set up for")
    code.set_defaults(func=cmd_pki_code)


def cmd_create_admin(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_create_admin as create_admin

    return create_admin(args, config)


def cmd_web(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_web as web

    return web(args, config)


def cmd_enrol_server(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_enrol_server as enrol_server

    return enrol_server(args, config)


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
    crl = hub.add_parser("crl", help="the revocation list's validity (exit 1 in alarm)")
    crl.add_argument("--renew-if-due", action="store_true", help="sign it again if due")
    crl.set_defaults(func=cmd_hub_crl)
    hub.add_parser(
        "enrol-server", help="serve EST enrolment for tablets over TLS with gunicorn"
    ).set_defaults(func=cmd_enrol_server)
