"""The ``fieldkit`` command."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from fieldkit import __version__
from fieldkit.antivirus.cli import add_commands as add_av_commands
from fieldkit.broker import BrokerError, LocalBroker, render_acl
from fieldkit.bus import BusError, collect_retained, retained_violations
from fieldkit.config import BusSection, ConfigError, DeviceConfig, config_path, load_config
from fieldkit.enrolment.cli import add_commands as add_enrol_commands
from fieldkit.hub.cli import add_commands as add_hub_commands
from fieldkit.hub.cli import add_pki_code
from fieldkit.integrity import add_integrity_commands
from fieldkit.logs import configure_logging
from fieldkit.messages import Health, MessageError
from fieldkit.network import add_commands as add_network_commands
from fieldkit.policies import PolicyError
from fieldkit.printing.queues import add_commands as add_printer_commands
from fieldkit.provision.cli import add_commands as add_provision_commands
from fieldkit.provision.image import ImageBuildError
from fieldkit.registry import AUDIT, RegistryError, identities_for, specs_for_role
from fieldkit.runner import (
    Supervisor,
    configured_endpoint,
    connect_bus,
    install_stop_signals,
    run_service,
)
from fieldkit.serve import add_common_arguments
from fieldkit.signed_pdf import add_commands as add_evidence_commands
from fieldkit.sync.cli import add_commands as add_sync_commands
from fieldkit.wipe.cli import add_commands as add_wipe_commands

log = logging.getLogger("fieldkit")


def _specs(config: DeviceConfig) -> list[Any]:
    return specs_for_role(config.device.role, config.runner.services)


def cmd_up(args: argparse.Namespace, config: DeviceConfig) -> int:
    specs = _specs(config)
    log.info(
        "fieldkit %s: %s %s starting %s",
        __version__,
        config.device.role,
        config.device.id,
        ", ".join(s.name for s in specs),
    )
    return Supervisor(config, config_path(args.config), specs).run()


def read_health(config: DeviceConfig, wait: float) -> dict[str, Health]:
    """The retained health of every service, as the broker holds it."""
    bus = connect_bus(config, "ctl", announce_health=False)
    seen: dict[str, Health] = {}
    lock = threading.Lock()

    def keep(health: Health, meta: Any) -> None:
        with lock:
            seen[meta.topic.removeprefix("health/")] = health

    bus.handle_event("health/+", Health, keep)
    bus.connect()
    threading.Event().wait(wait)
    bus.close()
    return seen


def cmd_status(args: argparse.Namespace, config: DeviceConfig) -> int:
    expected = [s.name for s in _specs(config)]
    health = read_health(config, args.wait)
    names = sorted(set(expected) | set(health))
    if args.json:
        print(json.dumps({n: health[n].model_dump() if n in health else None for n in names}))
    else:
        table = Table(title=f"fieldkit {config.device.role} {config.device.id}")
        for column in ("service", "state", "pid", "version"):
            table.add_column(column)
        for name in names:
            h = health.get(name)
            state = h.state if h else "unknown"
            colour = {"online": "green", "offline": "red"}.get(state, "yellow")
            table.add_row(
                name,
                f"[{colour}]{state}[/]",
                str(h.pid if h else ""),
                (h.version or "") if h else "",
            )
        Console().print(table)
    all_online = all(health.get(n) is not None and health[n].state == "online" for n in expected)
    return 0 if all_online else 1


def cmd_service_run(args: argparse.Namespace, config: DeviceConfig) -> int:
    (spec,) = specs_for_role(config.device.role, [args.name])
    return run_service(spec, config)


def cmd_service_list(args: argparse.Namespace, config: DeviceConfig) -> int:
    for spec in _specs(config):
        print(f"{spec.name:12} {spec.summary}")
    return 0


def cmd_bus_acl(args: argparse.Namespace, config: DeviceConfig) -> int:
    print(render_acl(identities_for(_specs(config))))
    return 0


def cmd_bus_credentials(args: argparse.Namespace) -> int:
    """On a device, as root, at every boot: new bus passwords, in memory only (docs/images.md).
    Every identity of the role but the compliance run's ``audit``, which exists only while a
    run needs it (``fieldkit bus retained``)."""
    import grp

    from fieldkit.broker import install_device_credentials
    from fieldkit.policies import BROKER_PASSWORD_PATH

    try:
        broker_gid = grp.getgrnam(args.broker_group).gr_gid
    except KeyError:
        print(f"fieldkit: bus credentials not made: no group {args.broker_group}", file=sys.stderr)
        return 2
    standing = [i for i in identities_for(specs_for_role(args.role)) if i.name != AUDIT.name]
    written = install_device_credentials(
        standing,
        args.password_file or Path(str(BROKER_PASSWORD_PATH)),
        args.runtime_dir,
        broker_gid,
    )
    print(f"bus credentials: {len(written) - 1} identities, password file {written[-1]}")
    return 0


def cmd_bus_retained(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Compliance check: only ``health/<service>`` may be retained, and never a session id.

    It reads every topic as ``audit``. On a device (mosquitto.service: ``launch_broker`` off)
    that identity has no password but for the length of this check (root only)."""
    if config.bus.launch_broker:
        retained = collect_retained(
            connect_bus(config, AUDIT.name, announce_health=False), args.wait
        )
    else:
        retained = _retained_as_temporary_audit(args, config)
    bad = retained_violations(retained)
    for topic in sorted(retained):
        print(f"{'FAIL' if topic in bad else 'ok  '} {topic}")
    print(f"{len(retained)} retained, {len(bad)} not allowed")
    return 1 if bad else 0


def _retained_as_temporary_audit(
    args: argparse.Namespace, config: DeviceConfig
) -> dict[str, bytes]:
    from fieldkit.broker import temporary_identity
    from fieldkit.policies import BROKER_PASSWORD_PATH

    password_file = args.password_file or Path(str(BROKER_PASSWORD_PATH))

    def reload() -> None:
        subprocess.run(args.reload_command.split(), check=True, timeout=30)

    with temporary_identity(AUDIT, password_file, config.bus.runtime_dir, reload):
        # The broker rereads its password file on the reload signal, a moment after it.
        deadline = time.monotonic() + 10
        while True:
            try:
                return collect_retained(
                    connect_bus(config, AUDIT.name, announce_health=False), args.wait
                )
            except BusError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def cmd_broker_run(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Run only the local broker (for a split deployment, e.g. docker-compose)."""
    stop = threading.Event()
    install_stop_signals(stop)
    config.bus.runtime_dir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(
        config.bus.runtime_dir,
        identities_for(_specs(config)),
        configured_endpoint(config),
        max_message_bytes=config.bus.max_message_bytes,
    )
    with broker:
        while not stop.wait(0.5):
            if broker.process is not None and broker.process.poll() is not None:
                log.error("mosquitto exited with status %s", broker.process.returncode)
                return 1
    return 0


def cmd_audit_verify(args: argparse.Namespace, config: DeviceConfig) -> int:
    """Check the kiosk's hash-chained audit trail (R14)."""
    from fieldkit.audit import verify
    from fieldkit.kiosk.app import kiosk_audit_path

    path = args.file or kiosk_audit_path(config)
    if not path.exists():
        print(f"fieldkit: no audit trail at {path}", file=sys.stderr)
        return 1
    check = verify(path)
    print(
        f"{path}: {check.entries} entries, " + ("chain whole" if check.ok else str(check.problem))
    )
    return 0 if check.ok else 1


def cmd_config_check(args: argparse.Namespace, config: DeviceConfig) -> int:
    print(f"{config_path(args.config)}: ok ({config.device.role} {config.device.id})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fieldkit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"fieldkit {__version__}")
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the broker and every service; Ctrl-C stops")
    up.set_defaults(func=cmd_up)

    status = sub.add_parser("status", help="show each service's health (exit 1 if any is down)")
    status.add_argument("--json", action="store_true")
    status.add_argument("--wait", type=float, default=1.0, help="seconds to collect health")
    status.set_defaults(func=cmd_status)

    service = sub.add_parser("service", help="run or list services").add_subparsers(
        dest="service_command", required=True
    )
    run = service.add_parser("run", help="run one service in the foreground")
    run.add_argument("name")
    run.set_defaults(func=cmd_service_run)
    service.add_parser("list", help="list this device's services").set_defaults(
        func=cmd_service_list
    )

    bus = sub.add_parser("bus", help="local bus tools").add_subparsers(
        dest="bus_command", required=True
    )
    bus.add_parser("acl", help="print the broker ACL derived from the services").set_defaults(
        func=cmd_bus_acl
    )

    creds = bus.add_parser(
        "credentials", help="on a device, as root: new bus passwords for every identity (boot)"
    )
    creds.add_argument("--role", choices=("tablet", "hub"), required=True)
    creds.add_argument("--runtime-dir", type=Path, default=BusSection().runtime_dir)
    creds.add_argument("--broker-group", default="mosquitto")
    creds.add_argument("--password-file", type=Path, default=None, help="default: the image's")
    creds.set_defaults(standalone=cmd_bus_credentials)

    retained = bus.add_parser("retained", help="list retained messages; fail on any but health")
    retained.add_argument("--wait", type=float, default=1.0)
    retained.add_argument(
        "--password-file", type=Path, default=None, help="on a device; default: the image's"
    )
    retained.add_argument(
        "--reload-command",
        default="systemctl reload mosquitto.service",
        help="on a device: how the broker is told to reread its password file",
    )
    retained.set_defaults(func=cmd_bus_retained)

    broker = sub.add_parser("broker", help="the local broker").add_subparsers(
        dest="broker_command", required=True
    )
    broker.add_parser("run", help="run only the broker, until Ctrl-C").set_defaults(
        func=cmd_broker_run
    )

    audit = sub.add_parser("audit", help="the device's audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify_audit = audit.add_parser("verify", help="check the hash chain (exit 1 if broken)")
    verify_audit.add_argument("file", type=Path, nargs="?", default=None)
    verify_audit.set_defaults(func=cmd_audit_verify)

    config = sub.add_parser("config", help="device config tools").add_subparsers(
        dest="config_command", required=True
    )
    config.add_parser("check", help="validate the device config").set_defaults(
        func=cmd_config_check
    )
    add_av_commands(sub)
    add_wipe_commands(sub)
    add_sync_commands(sub, add_pki_code)
    add_enrol_commands(sub)
    add_hub_commands(sub)
    add_provision_commands(sub)
    add_network_commands(sub)
    add_printer_commands(sub)
    add_evidence_commands(sub)
    add_integrity_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        if getattr(args, "standalone", None) is not None:
            # Commands that run where no device config exists: pki, packet, policy, image.
            done: int = args.standalone(args)
            return done
        config = load_config(args.config)
        result: int = args.func(args, config)
        return result
    except ConfigError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 2
    except (
        RegistryError,
        BrokerError,
        BusError,
        MessageError,
        PolicyError,
        ImageBuildError,
    ) as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1
