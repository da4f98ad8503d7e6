"""A printer that needs no hardware: cupsd in a directory, with a queue on ippeveprinter.

Used by the tests (a real cupsd on a free loopback port) and by ``fieldkit up`` when
``[printing.local] enabled = true``, so the demo produces real PDFs. Everything lives under
one directory: cupsd's config, spool (RequestRoot), cache and state, the simulator's received
files, and a private D-Bus socket (ippeveprinter will not start without a reachable bus, even
with DNS-SD advertising off; the bus is a unix socket in the directory, nothing on the network).

The simulated printer runs a small command for each job (``printer-command`` in the
directory): it reports ``media-empty`` while a ``paper-out`` file exists, the way a real
printer reports an empty tray, so tests can take the paper out and put it back.
"""

from __future__ import annotations

import grp
import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fieldkit.broker import free_loopback_port
from fieldkit.printing.photosheet import IPP_MEDIA, PAGE_SIZES
from fieldkit.printing.queues import QueueError, add_everywhere_queue, remove_queue
from fieldkit.processes import KIT_ENV

log = logging.getLogger(__name__)


class LocalPrinterError(Exception):
    """The local cupsd or printer simulator could not be configured or started."""


@dataclass(frozen=True)
class SpoolPolicy:
    """cupsd's job-retention settings. Both ``False`` is the project's policy (R12)."""

    preserve_job_files: bool = False
    preserve_job_history: bool = False


# The project's policy (R12): cupsd keeps neither job files nor job history.
PROJECT_POLICY = SpoolPolicy()

PRINTER_COMMAND = """#!/bin/sh
# Run by ippeveprinter for each job ($1 is the received file). Reports an empty paper tray
# while the paper-out file exists, then prints (keeps the file) once paper is back.
flag="$(dirname "$0")/paper-out"
while [ -e "$flag" ]; do
  echo "STATE: +media-empty-error" >&2
  sleep 0.2
done
echo "STATE: -media-empty-error" >&2
exit 0
"""


def _hundredths(points: float) -> int:
    return round(points / 72 * 2540)


def ippeveprinter_attributes() -> str:
    """The simulator's IPP attributes: PDF in, A4 and L-size media, print-scaling none."""
    sizes = [(IPP_MEDIA[p], _hundredths(w), _hundredths(h)) for p, (w, h) in PAGE_SIZES.items()]

    def col(name: str, x: int, y: int, margin: int) -> str:
        members = [
            f"MEMBER collection media-size {{ MEMBER integer x-dimension {x} "
            f"MEMBER integer y-dimension {y} }}",
            f"MEMBER keyword media-size-name {name}",
            *(
                f"MEMBER integer media-{side}-margin {margin}"
                for side in ("bottom", "left", "right", "top")
            ),
            "MEMBER keyword media-source main",
            "MEMBER keyword media-type stationery",
        ]
        return "{ " + " ".join(members) + " }"

    names = ",".join(name for name, _, _ in sizes)
    lines = [
        "ATTR mimeMediaType document-format-supported application/pdf,image/jpeg",
        "ATTR mimeMediaType document-format-default application/pdf",
        f"ATTR keyword media-supported {names}",
        f"ATTR keyword media-ready {names}",
        f"ATTR keyword media-default {IPP_MEDIA['a4']}",
        "ATTR collection media-size-supported "
        + ",".join(
            f"{{ MEMBER integer x-dimension {x} MEMBER integer y-dimension {y} }}"
            for _, x, y in sizes
        ),
        "ATTR collection media-col-database "
        + ",".join(col(n, x, y, m) for n, x, y in sizes for m in (0, 300)),
        "ATTR collection media-col-default " + col(IPP_MEDIA["a4"], 21000, 29700, 300),
        "ATTR collection media-col-ready " + ",".join(col(n, x, y, 300) for n, x, y in sizes),
        "ATTR keyword media-col-supported media-bottom-margin,media-left-margin,"
        "media-right-margin,media-size,media-size-name,media-source,media-top-margin,media-type",
        "ATTR keyword media-source-supported main",
        "ATTR keyword media-type-supported stationery",
        *(
            f"ATTR integer media-{s}-margin-supported 0,300"
            for s in ("bottom", "left", "right", "top")
        ),
        "ATTR keyword print-scaling-supported auto,auto-fit,fill,fit,none",
        "ATTR keyword print-scaling-default auto",
        "ATTR keyword sides-supported one-sided",
        "ATTR keyword sides-default one-sided",
        "ATTR keyword print-color-mode-supported color,monochrome",
        "ATTR keyword print-color-mode-default color",
        "ATTR enum print-quality-supported 3,4,5",
        "ATTR enum print-quality-default 4",
        "ATTR resolution printer-resolution-supported 600dpi",
        "ATTR resolution printer-resolution-default 600dpi",
    ]
    return "\n".join(lines) + "\n"


class LocalPrinter:
    """cupsd + ippeveprinter under ``directory``, each on its own free loopback port."""

    def __init__(
        self,
        directory: Path,
        queue: str = "fieldkit",
        *,
        policy: SpoolPolicy = PROJECT_POLICY,
        keep_received: bool = True,
    ) -> None:
        self.directory = directory.absolute()
        self.queue = queue
        self.policy = policy
        self.keep_received = keep_received
        self.cups_port = 0
        self.printer_port = 0
        self._cupsd: subprocess.Popen[bytes] | None = None
        self._printer: subprocess.Popen[bytes] | None = None
        self._dbus: subprocess.Popen[bytes] | None = None

    # -- paths -------------------------------------------------------------------------------

    @property
    def conf_dir(self) -> Path:
        return self.directory / "conf"

    @property
    def spool_dir(self) -> Path:
        """cupsd's RequestRoot: control files ``cNNNNN`` and documents ``dNNNNN-NNN``."""
        return self.directory / "spool"

    @property
    def cache_dir(self) -> Path:
        return self.directory / "cache"

    @property
    def received_dir(self) -> Path:
        """What the simulated printer received (kept only with ``keep_received``)."""
        return self.directory / "received"

    @property
    def printer_dir(self) -> Path:
        return self.directory / "printer"

    @property
    def log_dir(self) -> Path:
        return self.directory / "log"

    @property
    def device_uri(self) -> str:
        return f"ipp://localhost:{self.printer_port}/ipp/print"

    # -- configuration -----------------------------------------------------------------------

    def render_cupsd_conf(self) -> str:
        def yes_no(flag: bool) -> str:
            return "Yes" if flag else "No"

        return "\n".join(
            [
                "# Generated by fieldkit. Do not edit.",
                f"Listen 127.0.0.1:{self.cups_port}",
                "Browsing No",
                "BrowseLocalProtocols none",
                "WebInterface No",
                "DefaultAuthType None",
                "LogLevel warn",
                # Nothing of a job outlives it (R12): no document, no control file, no history.
                f"PreserveJobFiles {yes_no(self.policy.preserve_job_files)}",
                f"PreserveJobHistory {yes_no(self.policy.preserve_job_history)}",
                # Write job.cache at once rather than up to 30 s later, so checks see the truth.
                "DirtyCleanInterval 0",
                # The page log would name each job; there is nothing in it we need.
                'PageLogFormat ""',
                "MaxJobTime 600",
                "<Location />",
                "  Order allow,deny",
                "  Allow from 127.0.0.1",
                "</Location>",
                "<Location /admin>",
                "  Order allow,deny",
                "  Allow from 127.0.0.1",
                "</Location>",
                "",
            ]
        )

    def render_cups_files_conf(self) -> str:
        lines = [
            "# Generated by fieldkit. Do not edit.",
            f"ServerRoot {self.conf_dir}",
            f"RequestRoot {self.spool_dir}",
            f"TempDir {self.spool_dir / 'tmp'}",
            f"CacheDir {self.cache_dir}",
            f"StateDir {self.directory / 'state'}",
            f"ErrorLog {self.log_dir / 'error_log'}",
            f"AccessLog {self.log_dir / 'access_log'}",
            f"PageLog {self.log_dir / 'page_log'}",
            f"Printcap {self.directory / 'state' / 'printcap'}",
            "ServerBin /usr/lib/cups",
            "DataDir /usr/share/cups",
        ]
        if os.geteuid() == 0:
            # As root cupsd runs filters and backends as lp, never as root.
            lines += ["User lp", "Group lp", "SystemGroup root"]
        else:
            lines += [f"SystemGroup {grp.getgrgid(os.getegid()).gr_name}"]
        return "\n".join(lines) + "\n"

    def _check_reachable_by_lp(self) -> None:
        """As root, cupsd's filters run as lp and must traverse every parent of the spool."""
        if os.geteuid() != 0:
            return
        for parent in self.directory.parents:
            if parent.exists() and not parent.stat().st_mode & 0o001:
                raise LocalPrinterError(
                    f"{parent} is not traversable by other users (mode "
                    f"{parent.stat().st_mode & 0o777:o}); cupsd's filters run as lp and could "
                    f"not read the spool under {self.directory}: choose another directory"
                )

    def write_files(self) -> None:
        self._check_reachable_by_lp()
        # Every start is a fresh cupsd: jobs left by a crashed run are not printed later,
        # and their files do not linger (R12). Only what the simulator received is kept.
        for stale in (self.conf_dir, self.spool_dir, self.cache_dir, self.directory / "state"):
            shutil.rmtree(stale, ignore_errors=True)
        for path in (
            self.conf_dir,
            self.spool_dir / "tmp",
            self.cache_dir,
            self.directory / "state",
            self.log_dir,
            self.received_dir,
            self.printer_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)
        # Filters run as lp must reach the spooled document, so the directory is traversable.
        os.chmod(self.directory, 0o755)  # noqa: S103 -- holds no secret; the spool is 0710
        (self.conf_dir / "cupsd.conf").write_text(self.render_cupsd_conf())
        (self.conf_dir / "cups-files.conf").write_text(self.render_cups_files_conf())
        (self.printer_dir / "attributes.conf").write_text(ippeveprinter_attributes())
        command = self.printer_dir / "printer-command"
        command.write_text(PRINTER_COMMAND)
        command.chmod(0o755)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        for program in ("cupsd", "ippeveprinter", "dbus-daemon", "lpadmin"):
            if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
                raise LocalPrinterError(
                    f"{program} is not installed (Debian packages cups, cups-ipp-utils, "
                    "cups-client, dbus-daemon); run the README's set-up command"
                )
        self.cups_port = self.cups_port or free_loopback_port()
        self.printer_port = self.printer_port or free_loopback_port()
        self.write_files()
        self._start_dbus(timeout)
        self.start_printer(timeout)
        self._start_cupsd(timeout)
        self.add_queue()
        log.info(
            "local printer: cupsd on 127.0.0.1:%d, queue %s on ippeveprinter :%d",
            self.cups_port,
            self.queue,
            self.printer_port,
        )

    def _start_dbus(self, timeout: float) -> None:
        bus_socket = self.printer_dir / "dbus.sock"
        bus_socket.unlink(missing_ok=True)
        self._dbus = subprocess.Popen(
            [
                "dbus-daemon",
                "--session",
                "--nofork",
                "--nopidfile",
                f"--address=unix:path={bus_socket}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for(lambda: bus_socket.exists(), self._dbus, "dbus-daemon", timeout)

    def start_printer(self, timeout: float = 15.0) -> None:
        """Start (or restart) the simulated printer: the printer is switched on."""
        cmd = ["ippeveprinter", "-a", str(self.printer_dir / "attributes.conf")]
        cmd += ["-c", str(self.printer_dir / "printer-command")]
        cmd += ["-d", str(self.received_dir), "-p", str(self.printer_port)]
        cmd += ["-r", "off", "-n", "localhost"]
        if self.keep_received:
            cmd.append("-k")
        cmd.append(f"fieldkit-{self.queue}")
        env = {
            # The simulator stands for the printer, a device outside the tablet whose memory
            # the session wipe cannot reach on a real kit: it is not marked as one of the kit's
            # processes (FIELDKIT_KIT), so the wipe's memory scan passes it by as it passes by
            # the paper. (Under load, a CI run found a session's canary in its buffers.) cupsd
            # and every kit service stay marked and scanned.
            **{k: v for k, v in os.environ.items() if k != KIT_ENV},
            "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.printer_dir / 'dbus.sock'}",
        }
        log_file = (self.log_dir / "printer.log").open("ab")
        self._printer = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env
        )
        log_file.close()
        _wait_for(lambda: _accepting(self.printer_port), self._printer, "ippeveprinter", timeout)

    def stop_printer(self) -> None:
        """Switch the simulated printer off (CUPS then sees it offline)."""
        _terminate(self._printer)
        self._printer = None

    def _start_cupsd(self, timeout: float) -> None:
        cmd = ["cupsd", "-f", "-c", str(self.conf_dir / "cupsd.conf")]
        cmd += ["-s", str(self.conf_dir / "cups-files.conf")]
        log_file = (self.log_dir / "cupsd.out").open("ab")
        self._cupsd = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
        log_file.close()
        _wait_for(lambda: _accepting(self.cups_port), self._cupsd, "cupsd", timeout)

    def restart_cupsd(self, timeout: float = 15.0) -> None:
        """Stop cupsd and start it again on the same files (the queue stays): a session's
        documents passed through its memory, which a new process does not have."""
        _terminate(self._cupsd)
        self._start_cupsd(timeout)

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.cups_port}"

    def add_queue(self, name: str | None = None) -> None:
        """Create the IPP Everywhere queue on the simulator (CUPS asks it for its attributes),
        with the settings a device's queue has (``fieldkit.printing.queues``)."""
        for attempt in range(3):
            try:
                add_everywhere_queue(self.server, name or self.queue, self.device_uri)
                return
            except QueueError as exc:
                # lpadmin asks the simulator for its attributes itself; on a loaded machine
                # (CI, load 9) it once said "printer-uri … not found" a moment after the
                # simulator had answered the probe. Asked again, it answers.
                if attempt == 2 or "not found" not in str(exc):
                    raise LocalPrinterError(str(exc)) from None
                log.warning("local printer: %s; asking again", exc)
                time.sleep(2.0)

    def delete_queue(self, name: str | None = None) -> None:
        try:
            remove_queue(self.server, name or self.queue)
        except QueueError as exc:
            raise LocalPrinterError(str(exc)) from None

    def paper_out(self, empty: bool) -> None:
        """Take the paper out of the simulated tray, or put it back."""
        flag = self.printer_dir / "paper-out"
        if empty:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)

    def stop(self) -> None:
        for process in (self._cupsd, self._printer, self._dbus):
            _terminate(process)
        self._cupsd = self._printer = self._dbus = None

    def __enter__(self) -> LocalPrinter:
        try:
            self.start()
        except Exception:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _accepting(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_for(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], name: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LocalPrinterError(f"{name} exited with status {process.returncode} at start")
        if ready():
            return
        time.sleep(0.05)
    _terminate(process)
    raise LocalPrinterError(f"{name} did not come up in {timeout}s")


def _terminate(process: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
