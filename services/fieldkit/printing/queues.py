"""The device's print queue: driverless (IPP Everywhere), made by provisioning or on plug-in (R9).

A tablet prints to one queue (``[printing] queue``, default ``fieldkit``) on its own cupsd.
The queue points at either

- a network printer that speaks IPP Everywhere (``fieldkit printer add --uri
  ipp://ADDRESS/ipp/print``; the site's allowlist then needs the printer's address,
  docs/network.md), or
- a USB printer with the IPP-over-USB interface (class 07, subclass 01, protocol 04):
  ipp-usb serves it on loopback from port 60000, and a udev rule starts
  ``fieldkit-printer-usb.service`` (``fieldkit printer add --usb``) when one is plugged in.

CUPS asks the printer for its capabilities (``-m everywhere``), so no driver and no PPD file
is installed. Every queue is made with the settings the erasure policy needs: not shared, and
a job that fails is aborted (``printer-error-policy=abort-job``), never held in the spool for a
retry; the printing service retries from memory itself and purges what CUPS kept (R6, R12).
The development kit's simulated printer (``localprinter``) is made by the same function.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from fieldkit.config import DeviceConfig

# What every fieldkit queue is made with, whichever printer it drives.
QUEUE_OPTIONS = {"printer-error-policy": "abort-job", "printer-is-shared": "false"}
# ipp-usb's first device (ipp-usb.conf: http-min-port, interface loopback).
IPP_USB_PORT = 60000
IPP_USB_URI = f"ipp://localhost:{IPP_USB_PORT}/ipp/print"


class QueueError(Exception):
    """The queue could not be made or removed; the message says why."""


def check_printer_uri(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in {"ipp", "ipps"} or not parts.hostname:
        raise QueueError(
            f"printer URI {uri!r} is not an IPP address (ipp://HOST[:PORT]/ipp/print or ipps://…)"
        )
    if parts.username or parts.password or parts.query or parts.fragment:
        raise QueueError(f"printer URI {uri!r} may not carry a user, a query or a fragment")
    return uri


def lpadmin(server: str, *args: str, timeout: float = 60.0) -> None:
    """Run lpadmin against ``server`` (``HOST:PORT``, the device's own cupsd)."""
    cmd = ["lpadmin", "-h", server, *args]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise QueueError("lpadmin is not installed (Debian package cups-client)") from None
    except subprocess.TimeoutExpired:
        raise QueueError(f"lpadmin {' '.join(args[:2])} did not finish in {timeout:g} s") from None
    if done.returncode != 0:
        raise QueueError(f"lpadmin {' '.join(args[:2])} failed: {done.stderr.strip()}")


# ipptool's test: an IPP printer answers Get-Printer-Attributes at this address. Only what
# every printer has is asked for: ipptool validates each returned attribute strictly, and a
# quirk in an attribute we do not need must not refuse a printer CUPS can drive. Whether it
# is driverless, CUPS itself finds out (``-m everywhere``).
EVERYWHERE_PROBE = """{
  NAME "fieldkit: an IPP printer answers"
  OPERATION Get-Printer-Attributes
  GROUP operation-attributes-tag
  ATTR charset attributes-charset utf-8
  ATTR naturalLanguage attributes-natural-language en
  ATTR uri printer-uri $uri
  ATTR keyword requested-attributes printer-state,printer-is-accepting-jobs
  STATUS successful-ok
  EXPECT printer-state OF-TYPE enum
}
"""


def probe_printer(uri: str, timeout: float = 10.0) -> None:
    """Ask the printer itself before a queue points at it: a wrong address or a printer
    that is not driverless is refused here, not at the first applicant's print."""
    check_printer_uri(uri)
    with tempfile.NamedTemporaryFile("w", suffix=".test", encoding="utf-8") as test:
        test.write(EVERYWHERE_PROBE)
        test.flush()
        try:
            done = subprocess.run(
                ["ipptool", "-q", "-T", f"{timeout:g}", uri, test.name],
                capture_output=True,
                text=True,
                timeout=timeout * 3,
                check=False,
            )
        except FileNotFoundError:
            raise QueueError("ipptool is not installed (Debian package cups-ipp-utils)") from None
        except subprocess.TimeoutExpired:
            raise QueueError(f"the printer at {uri} did not answer in {timeout:g} s") from None
    if done.returncode != 0:
        raise QueueError(
            f"no IPP printer answers at {uri} (wrong address, switched off, or not an IPP printer)"
        )


def add_everywhere_queue(server: str, name: str, uri: str, *, probe: bool = True) -> None:
    """Make (or remake) queue ``name`` for the IPP Everywhere printer at ``uri``, enabled."""
    if probe:
        probe_printer(uri)
    else:
        check_printer_uri(uri)
    options = [arg for key, value in QUEUE_OPTIONS.items() for arg in ("-o", f"{key}={value}")]
    lpadmin(server, "-p", name, "-E", "-v", uri, "-m", "everywhere", *options)


def remove_queue(server: str, name: str) -> None:
    lpadmin(server, "-x", name)


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until something accepts on ``host:port`` (ipp-usb after a plug-in)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise QueueError(
                    f"no printer answers on {host}:{port} after {timeout:g} s "
                    "(is ipp-usb running, and the printer switched on?)"
                ) from None
            time.sleep(0.5)


def _server(config: DeviceConfig) -> str:
    printing = config.printing
    return f"{printing.cups_host}:{printing.cups_port}"


def cmd_printer_add(args: argparse.Namespace, config: DeviceConfig) -> int:
    name = args.queue or config.printing.queue
    try:
        if args.usb:
            wait_for_port("localhost", IPP_USB_PORT, args.wait)
            uri = IPP_USB_URI
        else:
            uri = check_printer_uri(args.uri)
        add_everywhere_queue(_server(config), name, uri)
    except QueueError as exc:
        print(f"fieldkit: printer queue {name} not made: {exc}")
        return 2
    print(f"printer queue {name}: {uri} (IPP Everywhere, not shared, failed jobs aborted)")
    return 0


def cmd_printer_remove(args: argparse.Namespace, config: DeviceConfig) -> int:
    name = args.queue or config.printing.queue
    try:
        remove_queue(_server(config), name)
    except QueueError as exc:
        print(f"fieldkit: printer queue {name} not removed: {exc}")
        return 2
    print(f"printer queue {name} removed")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``fieldkit printer add|remove``: the device's queue (root or lpadmin group)."""
    printer = sub.add_parser("printer", help="the device's print queue (R9)")
    psub = printer.add_subparsers(dest="printer_command", required=True)
    add = psub.add_parser("add", help="make the driverless queue for a network or USB printer")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--uri", help="a network printer: ipp://ADDRESS/ipp/print")
    target.add_argument("--usb", action="store_true", help="the USB printer ipp-usb serves")
    add.add_argument("--queue", default=None, help="queue name (default: [printing] queue)")
    add.add_argument("--wait", type=float, default=30.0, help="seconds to wait for ipp-usb")
    add.set_defaults(func=cmd_printer_add)
    remove = psub.add_parser("remove", help="remove the queue")
    remove.add_argument("--queue", default=None)
    remove.set_defaults(func=cmd_printer_remove)
