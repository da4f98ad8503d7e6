"""``fieldkit av ...``: the hub's mirror and signature publishing, and a device's definitions."""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fieldkit.antivirus.database import (
    DatabaseError,
    build_unsigned_database,
    list_databases,
    read_header,
)
from fieldkit.antivirus.engine import EngineError, render_freshclam_conf
from fieldkit.antivirus.gate import assess
from fieldkit.antivirus.mirror import (
    DefinitionsMirror,
    MirrorTlsError,
    mirror_freshness,
    mirror_tls_files,
    publish_database,
)
from fieldkit.antivirus.official import (
    OfficialUpdateError,
    last_official_update,
    update_official,
)

if TYPE_CHECKING:
    from fieldkit.config import DeviceConfig


def cmd_mirror_serve(args: argparse.Namespace, config: DeviceConfig) -> int:
    cert, key = mirror_tls_files(config)
    try:
        mirror = DefinitionsMirror(
            args.directory, args.cert or cert, args.key or key, args.host, args.port
        )
    except MirrorTlsError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    with mirror:
        print(f"serving {args.directory} at {mirror.url} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def cmd_mirror_status(args: argparse.Namespace, config: DeviceConfig) -> int:
    directory = args.directory or config.av_mirror.directory
    rows = mirror_freshness(directory)
    for info, age_hours in rows:
        print(f"{info.file:20} version {info.version:>8} built {age_hours:8.1f} h ago")
    if not rows:
        print(f"no databases in {directory}")
    last = last_official_update(config.av_mirror)
    if last is None:
        print("official databases: never updated (cvd update has not run)")
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.finished_at))
        outcome = "ok" if last.ok else "FAILED: " + "; ".join(last.errors)
        print(f"official databases: last cvd update {when}: {outcome}")
    return 0 if rows else 1


def cmd_mirror_update(args: argparse.Namespace, config: DeviceConfig) -> int:
    """One ``cvd update`` into the mirror's folder; fails (exit 1) while the update does."""
    try:
        outcome = update_official(config.av_mirror, timeout=args.timeout)
    except OfficialUpdateError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    if outcome.ok:
        print(f"official databases updated into {config.av_mirror.directory}")
        return 0
    print(f"fieldkit: official databases not updated: {'; '.join(outcome.errors)}", file=sys.stderr)
    return 1


def cmd_publish(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Build the kit's unsigned container from signature files and put it in the mirror."""
    target = args.directory / args.name
    version = args.version
    if version is None:
        try:
            version = (read_header(target).version or 0) + 1
        except DatabaseError:
            version = 1
    files = {path.name: path.read_bytes() for path in args.signatures}
    try:
        data = build_unsigned_database(target.stem, files, version=version)
        publish_database(args.directory, args.name, data)
    except DatabaseError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    print(f"published {target} version {version}")
    return 0


def cmd_render_freshclam(args: argparse.Namespace, config: DeviceConfig) -> int:
    from fieldkit.antivirus.service import AntivirusPaths

    paths = AntivirusPaths.for_config(config)
    try:
        print(render_freshclam_conf(config.antivirus, paths.database_dir), end="")
    except EngineError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_definitions(args: argparse.Namespace, config: DeviceConfig) -> int:
    """This device's databases and the gate's answer (read from the files, no bus needed)."""
    from fieldkit.antivirus.service import AntivirusPaths

    paths = AntivirusPaths.for_config(config)
    databases = list_databases(paths.database_dir)
    now = time.time()
    for db in databases:
        age = db.age(now)
        when = f"built {age / 3600:8.1f} h ago" if age is not None else "undated"
        print(f"{db.file:20} version {db.version!s:>8} {when}")
    verdict = assess(config.antivirus, databases, None, now)
    print(f"gate: {'allowed' if verdict.allowed else 'refused'} ({verdict.reason})")
    print(verdict.message_ja)
    print(verdict.message_en)
    return 0 if verdict.allowed else 1


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    av = sub.add_parser("av", help="antivirus: hub mirror, signatures, definitions").add_subparsers(
        dest="av_command", required=True
    )
    mirror = av.add_parser("mirror", help="the hub's definitions mirror").add_subparsers(
        dest="mirror_command", required=True
    )
    serve = mirror.add_parser("serve", help="serve DIR's databases over HTTPS")
    serve.add_argument("directory", type=Path)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8081)
    serve.add_argument(
        "--cert", type=Path, help="TLS certificate (default: the hub's, <[hub] pki>/hub/server.crt)"
    )
    serve.add_argument("--key", type=Path, help="its key (default <[hub] pki>/hub/server.key)")
    serve.set_defaults(func=cmd_mirror_serve)
    status = mirror.add_parser(
        "status", help="each database's version and age, and the last official update"
    )
    status.add_argument("directory", type=Path, nargs="?", help="default: [av_mirror] directory")
    status.set_defaults(func=cmd_mirror_status)
    update = mirror.add_parser(
        "update", help="fetch the official databases into the mirror (cvdupdate's `cvd update`)"
    )
    update.add_argument("--timeout", type=float, default=3600.0)
    update.set_defaults(func=cmd_mirror_update)

    publish = av.add_parser("publish", help="build the kit's signature database into a mirror")
    publish.add_argument("directory", type=Path)
    publish.add_argument("signatures", type=Path, nargs="+", help=".ndb/.hdb/... files")
    publish.add_argument("--name", default="fieldkit.cud")
    publish.add_argument("--version", type=int, default=None, help="default: current + 1")
    publish.set_defaults(func=cmd_publish)

    av.add_parser("freshclam-conf", help="print the freshclam.conf this device uses").set_defaults(
        func=cmd_render_freshclam
    )
    av.add_parser("definitions", help="this device's databases and the gate").set_defaults(
        func=cmd_definitions
    )
