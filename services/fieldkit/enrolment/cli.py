"""``fieldkit enrol --hub HOST:PORT --code CODE``: enrol this tablet with the hub."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from fieldkit.config import DeviceConfig
from fieldkit.enrolment.device import EnrolmentRefused, enrol, is_enrolled
from fieldkit.models import SITE_NETWORK_FILE


def cmd_enrol(args: argparse.Namespace, config: DeviceConfig) -> int:
    target = args.dir or config.sync.bundle
    if args.local_pki is not None:
        return enrol_development(args, config, target)
    if not args.hub:
        print("fieldkit: give --hub HOST:PORT (the hub's enrolment address)", file=sys.stderr)
        return 2
    code = args.code or getpass.getpass("登録コード / enrolment code: ")
    try:
        settings = enrol(
            args.hub,
            code,
            args.ca or config.enrol.ca_cert,
            target,
            config.sync.roster_path(),
            replace=args.replace,
            prior_key=config.wipe.device_key,
        )
    except EnrolmentRefused as exc:
        print(f"fieldkit: 登録できませんでした / not enrolled: {exc}", file=sys.stderr)
        if exc.detail:
            print(f"fieldkit: ({exc.detail})", file=sys.stderr)
        return 1
    print(f"登録しました / enrolled: {settings.device_id} ({settings.site or '-'}) in {target}")
    if args.apply_network:
        if settings.network is None:
            print("fieldkit: the hub gave no site network; the firewall is as it was")
        else:
            from fieldkit.network import apply_site_file

            done = apply_site_file(target / SITE_NETWORK_FILE, args.policies, Path("/"))
            if done != 0:
                return done
    print("端末を再起動してください / restart the tablet's services to use the enrolment")
    return 0


def enrol_development(args: argparse.Namespace, config: DeviceConfig, target: Path) -> int:
    """``--local-pki DIR``: a development kit, hub and tablet on one machine."""
    from fieldkit.enrolment.local import enrol_locally
    from fieldkit.pki import KitPki, PkiError

    if is_enrolled(target) and not args.replace:
        print(f"fieldkit: {target} holds an enrolment already (--replace)", file=sys.stderr)
        return 1
    try:
        enrol_locally(KitPki(args.local_pki), config.device.id, target)
    except PkiError as exc:
        print(f"fieldkit: not enrolled: {exc}", file=sys.stderr)
        return 1
    print(f"enrolled {config.device.id} with the local kit CA in {target} (development only)")
    return 0


def add_commands(sub: Any) -> None:
    enrol_cmd = sub.add_parser("enrol", help="enrol this tablet with the hub (one-time code)")
    enrol_cmd.add_argument("--hub", default="", help="the hub's enrolment address, HOST:PORT")
    enrol_cmd.add_argument("--code", default="", help="the one-time code (asked for if omitted)")
    enrol_cmd.add_argument("--ca", type=Path, help="kit CA certificate (default [enrol] ca_cert)")
    enrol_cmd.add_argument("--dir", type=Path, help="enrolment directory (default [sync] bundle)")
    enrol_cmd.add_argument(
        "--replace", action="store_true", help="replace this tablet's enrolment (after a revoke)"
    )
    enrol_cmd.add_argument(
        "--local-pki",
        type=Path,
        help="development only: sign with the kit CA in this directory on this machine",
    )
    enrol_cmd.add_argument(
        "--apply-network",
        action="store_true",
        help="then apply the site network the hub gave (firewall, DNS, time, Wi-Fi; as root)",
    )
    enrol_cmd.add_argument("--policies", type=Path, default=None, help="policy directory")
    enrol_cmd.set_defaults(func=cmd_enrol)
