"""``python -m fieldkit.serve NAME [--config FILE] [-v]``: run one service, and only it.

How the supervisor and the image's units start a service. It is ``fieldkit service run NAME``
without the rest of the ``fieldkit`` command: that command's parser imports every tool (the
hub database, the image builder, the scanners), and a service process should hold only its
own service. Its memory is read by the wipe after every session (R6): what is not loaded is
neither read nor a place for an applicant's data to stay.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fieldkit.bus import BusError
from fieldkit.config import ConfigError, load_config
from fieldkit.logs import configure_logging
from fieldkit.messages import MessageError
from fieldkit.registry import RegistryError, specs_for_role
from fieldkit.runner import run_service


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``-v``, as every fieldkit command takes them."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="device config (default: $FIELDKIT_CONFIG or /etc/fieldkit/device.toml)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fieldkit.serve", description=__doc__)
    parser.add_argument("name", help="the service (see `fieldkit service list`)")
    add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    try:
        config = load_config(args.config)
        (spec,) = specs_for_role(config.device.role, [args.name])
        return run_service(spec, config)
    except ConfigError as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 2
    except (RegistryError, BusError, MessageError) as exc:
        print(f"fieldkit: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
