"""``fieldkit hub …``: the hub's database, its packets for pick-up, its admins and web app.

Run on the hub, with its device config (``[hub]``). The ``fieldkit`` command is the same on a
tablet, which has no database libraries (the ``tablet`` extra): each command imports them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
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


def cmd_broker_config(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Print the files the hub-broker service runs mosquitto on, rendered by the service's
    own code from this config (issue 18: the hub image's tests compare the image's with the
    tested development hub's)."""
    from fieldkit.hub.broker import HubBroker

    broker = HubBroker.from_settings(config.hub, user=args.user)
    for path, body in broker.rendered_files().items():
        print(f"# ==> {path} <==")
        sys.stdout.write(body)
    return 0


def cmd_hub_crl(args: argparse.Namespace, config: DeviceConfig) -> int:
    """The CRL's validity; renewed when half its life is gone. Exit 1 while in alarm (the
    daily timer's unit then fails, and the hub's monitoring sees it)."""
    pki = KitPki(config.hub.pki, signer=config.hub.ca_signer)
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


def cmd_hub_backup(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Dump the hub database, encrypted to the admin's backup key; keep the newest N."""
    from fieldkit.hub.backup import describe, make_backup
    from fieldkit.hub.backup_file import BackupError

    try:
        made = make_backup(
            config.hub.database_url,
            folder=args.dir,
            public_key=args.public_key,
            keep=args.keep,
            hub=config.device.id,
            roster_path=KitPki(config.hub.pki).roster,
            pg_bin=args.pg_bin,
        )
    except BackupError as exc:
        print(f"fieldkit: no backup made: {exc}", file=sys.stderr)
        return 1
    state = made.manifest.state
    print(f"backup {made.path}: {made.size} bytes, encrypted to backup key {made.header.recipient}")
    print(f"{len(state.tables)} tables, {state.rows()} rows, {len(state.chains)} erasure chains")
    print("\n".join(describe(state)))
    removed = ", ".join(p.name for p in made.removed) or "none"
    print(f"kept the newest {args.keep} backups; removed: {removed}")
    return 0


def _backup_key(args: argparse.Namespace) -> Any:
    from fieldkit.sealing_keys import load_private, read_passphrase

    passphrase = None
    if b"ENCRYPTED" in args.key.read_bytes():
        passphrase = read_passphrase(args.passphrase_file, twice=False, what="the backup key")
    return load_private(args.key, passphrase)


def cmd_hub_restore(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Check a backup whole, load it into an empty database, and compare with its manifest."""
    from fieldkit.hub.backup import describe, restore_backup
    from fieldkit.hub.backup_file import BackupError
    from fieldkit.sealing_keys import SealingKeyError

    try:
        key = _backup_key(args)
        url = args.database_url or config.hub.database_url
        restored = restore_backup(args.file, key, url, args.pg_bin)
    except (BackupError, SealingKeyError, OSError) as exc:
        print(f"fieldkit: not restored: {exc}", file=sys.stderr)
        return 1
    manifest = restored.checked.manifest
    print(f"restored {args.file} (hub {manifest.hub}, made {manifest.created_at})")
    print("\n".join(describe(restored.state)))
    if restored.problems:
        print("the restored database DIFFERS from the backup; do not start the hub on it:")
        print("\n".join(f"  {problem}" for problem in restored.problems))
        return 1
    print(
        f"verified: {len(restored.state.tables)} tables, {restored.state.rows()} rows and "
        f"{len(restored.state.chains)} erasure chains as in the backup"
    )
    return 0


def cmd_backup_check(args: argparse.Namespace) -> int:
    """Decrypt and check a backup on the admin's machine, without a database."""
    from fieldkit.hub.backup import check_backup, describe
    from fieldkit.hub.backup_file import BackupError
    from fieldkit.sealing_keys import SealingKeyError

    try:
        key = _backup_key(args)
        with args.file.open("rb") as source:
            checked = check_backup(source, key, str(args.file))
    except (BackupError, SealingKeyError, OSError) as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    manifest = checked.manifest
    print(f"{args.file}: whole and readable with this key")
    print(f"hub {manifest.hub}, made {manifest.created_at}, database {manifest.database}")
    print(f"dump {manifest.dump.bytes} bytes, SHA-256 {manifest.dump.sha256}")
    print("\n".join(describe(manifest.state)))
    return 0


def cmd_backup_keygen(args: argparse.Namespace) -> int:
    """The admin's backup key pair, made on the admin's own machine (never on the hub)."""
    from fieldkit.hub.backup import PRIVATE_NAME, PUBLIC_NAME
    from fieldkit.sealing_keys import SealingKeyError, generate, read_passphrase

    try:
        passphrase = read_passphrase(args.passphrase_file, twice=True, what="the backup key")
        made = generate(args.out, passphrase, private_name=PRIVATE_NAME, public_name=PUBLIC_NAME)
    except (SealingKeyError, OSError) as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    print(f"private key (encrypted; keep it offline, with a second copy): {made.private}")
    print(f"public key (install it on the hub as /etc/fieldkit/{PUBLIC_NAME}): {made.public}")
    print(f"fingerprint (each backup names it): {made.fingerprint}")
    return 0


def cmd_create_admin(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_create_admin as create_admin

    return create_admin(args, config)


def cmd_web(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_web as web

    return web(args, config)


def cmd_enrol_server(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.hub.web.cli import cmd_enrol_server as enrol_server

    return enrol_server(args, config)


def cmd_hub_site(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Show or set what the enrolment server tells each tablet of the site (fieldkit.hub.site)."""
    from pydantic import ValidationError

    from fieldkit.hub.site import SiteError, SiteHandout, handout_toml, read_handout, write_handout
    from fieldkit.models import describe_validation_error

    path = config.enrol.site_file
    if path is None:
        print("fieldkit: this hub's config names no [enrol] site_file", file=sys.stderr)
        return 2
    if args.hub is None:
        try:
            current = read_handout(path)
        except SiteError as exc:
            print(f"fieldkit: {exc}", file=sys.stderr)
            return 1
        if current is None:
            print(f"no site set yet ({path}): tablets are given no site network")
            return 0
        text = handout_toml(current)
        passphrase = current.site_network.wifi.passphrase if current.site_network.wifi else ""
        sys.stdout.write(text.replace(json.dumps(passphrase), '"(hidden)"') if passphrase else text)
        return 0
    network: dict[str, Any] = {
        "hub": args.hub,
        "dns": args.dns,
        "time": args.time,
        "official_application_host": args.official_host,
        "printer": args.printer,
    }
    if args.wifi_ssid:
        if args.wifi_passphrase_file is None:
            print("fieldkit: --wifi-ssid needs --wifi-passphrase-file", file=sys.stderr)
            return 2
        passphrase = args.wifi_passphrase_file.read_text(encoding="utf-8").splitlines()[0]
        network["wifi"] = {"ssid": args.wifi_ssid, "passphrase": passphrase}
    handout: dict[str, Any] = {"site_network": network}
    if args.broker_host:
        handout["broker_host"] = args.broker_host
    if args.broker_port:
        handout["broker_port"] = args.broker_port
    try:
        site = SiteHandout.model_validate(handout)
    except ValidationError as exc:
        print(
            f"fieldkit: site not set, nothing changed: {describe_validation_error(exc)}",
            file=sys.stderr,
        )
        return 2
    write_handout(path, site)
    print(f"site set in {path}: the next tablet enrolled is given hub {site.site_network.hub}")
    return 0


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
    site = hub.add_parser(
        "site",
        help="show, or set, the site network the enrolment hands each tablet",
        description="Without --hub: show the site file. With it: set the site, checked first.",
    )
    site.add_argument("--hub", help="the hub's address on the site's network (IP)")
    site.add_argument("--dns", action="append", default=[], help="DNS server (IP; repeat)")
    site.add_argument("--time", action="append", default=[], help="NTP server (IP; repeat)")
    site.add_argument(
        "--official-host",
        action="append",
        default=[],
        help="the official application host's network (IP or CIDR; repeat)",
    )
    site.add_argument("--printer", action="append", default=[], help="network printer (IP)")
    site.add_argument("--wifi-ssid", help="the site's Wi-Fi (WPA2/3-Personal)")
    site.add_argument("--wifi-passphrase-file", type=Path, help="its passphrase (first line)")
    site.add_argument("--broker-host", help="the name tablets are given for the broker")
    site.add_argument("--broker-port", type=int, help="the broker's port, if not the policy's")
    site.set_defaults(func=cmd_hub_site)
    from fieldkit.office import add_hub_network

    add_hub_network(hub)
    shown = hub.add_parser(
        "broker-config", help="the config and ACL the hub-broker service runs mosquitto on"
    )
    shown.add_argument("--user", default=None, help="mosquitto's user (default: this one)")
    shown.set_defaults(func=cmd_broker_config)
    crl = hub.add_parser("crl", help="the revocation list's validity (exit 1 in alarm)")
    crl.add_argument("--renew-if-due", action="store_true", help="sign it again if due")
    crl.set_defaults(func=cmd_hub_crl)
    hub.add_parser(
        "enrol-server", help="serve EST enrolment for tablets over TLS with gunicorn"
    ).set_defaults(func=cmd_enrol_server)
    add_backup_commands(hub)


def add_backup_commands(hub: Any) -> None:
    """``hub backup``, ``hub restore`` (on the hub), ``hub backup-check`` and
    ``hub backup-keygen`` (on the admin's machine: no device config)."""
    from fieldkit.hub.backup_file import DEFAULT_DIR, DEFAULT_KEEP, DEFAULT_PUBLIC_KEY

    backup = hub.add_parser("backup", help="encrypted backup of the hub database (pg_dump)")
    backup.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"default {DEFAULT_DIR}")
    backup.add_argument(
        "--public-key", type=Path, default=DEFAULT_PUBLIC_KEY, help="the admin's backup key"
    )
    backup.add_argument("--keep", type=int, default=DEFAULT_KEEP, help="newest backups kept")
    backup.add_argument("--pg-bin", type=Path, help="folder of pg_dump (default: the PATH)")
    backup.set_defaults(func=cmd_hub_backup)
    # No abbreviations: ``--passphrase SECRET`` must not pass as ``--passphrase-file``.
    restore = hub.add_parser(
        "restore",
        help="restore a backup into an empty database, then verify it",
        allow_abbrev=False,
    )
    restore.add_argument("file", type=Path)
    _key_arguments(restore)
    restore.add_argument("--database-url", help="default: [hub] database_url")
    restore.add_argument("--pg-bin", type=Path, help="folder of pg_restore (default: the PATH)")
    restore.set_defaults(func=cmd_hub_restore)
    check = hub.add_parser(
        "backup-check", help="decrypt and check a backup (no database)", allow_abbrev=False
    )
    check.add_argument("file", type=Path)
    _key_arguments(check)
    check.set_defaults(standalone=cmd_backup_check)
    keygen = hub.add_parser(
        "backup-keygen",
        help="the admin's backup key pair (run on your own machine)",
        allow_abbrev=False,
    )
    keygen.add_argument("--out", type=Path, required=True, help="folder for the two key files")
    keygen.add_argument("--passphrase-file", type=Path, help="first line (default: prompt)")
    keygen.set_defaults(standalone=cmd_backup_keygen)


def _key_arguments(parser: Any) -> None:
    parser.add_argument("--key", type=Path, required=True, help="backup-private.pem")
    parser.add_argument("--passphrase-file", type=Path, help="first line (default: prompt)")
