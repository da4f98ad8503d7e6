"""A real pcscd with the virtual reader (vsmartcard-vpcd), and cards placed in it, for tests.

``VirtualReader`` runs Debian's pcscd in the foreground in a private mount namespace, where a
temporary folder is bind-mounted over /run/pcscd: pcsc-lite 1.9.9's daemon always makes its
socket at /run/pcscd/pcscd.comm (it does not read PCSCLITE_CSOCK_NAME; only the client library
does), so this is how a test's pcscd stays apart from the machine's and from another test's.
Clients find it through ``PCSCLITE_CSOCK_NAME`` (``[card] pcscd_socket``). Its reader.conf
loads the vpcd driver on a port of this project's test range (47100-47199); vpcd listens on
all interfaces there (its driver binds no address), and each vpcd entry gives two slots,
so two readers: ``<name> 00 00`` on the port and ``<name> 00 01`` on the next.

``VirtualReader.place`` starts ``tests/support/jpki_card.py`` (a card on virtualsmartcard's
VirtualICC, run by Debian's python3) in slot 0: pcscd sees a card inserted; ``take_out``
ends it: the card is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from tests.support.paths import REPO

PORTS = range(47100, 47200)
READER_NAME = "fieldkit test reader"
SLOT_0 = f"{READER_NAME} 00 00"
CARD_EMULATOR = REPO / "tests" / "support" / "jpki_card.py"
DEBIAN_PYTHON = "/usr/bin/python3"
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")


def missing_parts() -> str | None:
    """What this machine lacks for the virtual reader (``./dev.sh`` installs it), if anything."""
    if shutil.which("pcscd") is None:
        return "pcscd is not installed (Debian package pcscd)"
    if not VPCD_DRIVER.exists():
        return "the vpcd driver is not installed (Debian package vsmartcard-vpcd)"
    if not Path("/usr/lib/python3/site-packages/virtualsmartcard").is_dir():
        return "virtualsmartcard is not installed (Debian package python3-virtualsmartcard)"
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return "a private pcscd needs root and unshare (a mount namespace)"
    return None


def free_port_pair() -> int:
    """A port P of the test range with P and P+1 free on every interface (vpcd binds both)."""
    for port in PORTS[:-1]:
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 1):
                    s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                    s.bind(("", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port pair in 47100-47199 for the virtual reader")


class VirtualReader:
    """pcscd with one vpcd reader entry (or none: ``readers=False``) in ``directory``."""

    def __init__(self, directory: Path, readers: bool = True) -> None:
        self.directory = directory
        self.run_dir = directory / "run"
        self.conf_dir = directory / "reader.conf.d"
        self.socket = self.run_dir / "pcscd.comm"
        self.readers = readers
        self.port = free_port_pair() if readers else 0
        self.process: subprocess.Popen[bytes] | None = None
        self.card: subprocess.Popen[bytes] | None = None
        self.apdu_log = directory / "apdus.log"
        self.ready_file = directory / "card.ready"

    def start(self) -> VirtualReader:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        if self.readers:
            (self.conf_dir / "vpcd").write_text(
                f'FRIENDLYNAME "{READER_NAME}"\n'
                f"DEVICENAME   /dev/null:{self.port}\n"
                f"LIBPATH      {VPCD_DRIVER}\n"
                f"CHANNELID    {self.port}\n"
            )
        Path("/run/pcscd").mkdir(exist_ok=True)
        script = 'mount --bind "$1" /run/pcscd && exec pcscd --foreground --info -c "$2"'
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "pcscd",
             str(self.run_dir), str(self.conf_dir)],
            stdout=(self.directory / "pcscd.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while not self.socket.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = (self.directory / "pcscd.log").read_text(errors="replace")
                self.stop()
                raise RuntimeError(f"pcscd did not start:\n{log[-2000:]}")
            time.sleep(0.05)
        return self

    def place(
        self, kind: str = "jpki", certificate: bytes | None = None, remove_after: int | None = None
    ) -> None:
        """A card in slot 0 (pcscd notices within its 400 ms poll)."""
        self.take_out()
        args = [DEBIAN_PYTHON, str(CARD_EMULATOR), "--port", str(self.port), "--kind", kind]
        self.ready_file.unlink(missing_ok=True)
        args += ["--log", str(self.apdu_log), "--ready", str(self.ready_file)]
        if certificate is not None:
            der = self.directory / "card.der"
            der.write_bytes(certificate)
            args += ["--certificate", str(der)]
        if remove_after is not None:
            args += ["--remove-after", str(remove_after)]
        self.card = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=(self.directory / "card.log").open("ab")
        )

    def take_out(self) -> None:
        """The card out of the reader, once pcscd has seen it go (in this process's view)."""
        if self.card is not None:
            if self.card.poll() is None:
                self.card.terminate()
            self.card.wait(10)
            self.card = None
            if os.environ.get("PCSCLITE_CSOCK_NAME") == str(self.socket):
                self._wait_for_card(False, 10)

    def placed_at(self, timeout: float = 10) -> float:
        """When the placed card connected to the reader (Unix seconds, the card's own clock)."""
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if time.monotonic() > deadline or (self.card and self.card.poll() is not None):
                raise AssertionError("the virtual card never connected to the reader")
            time.sleep(0.005)
        return float(self.ready_file.read_text())

    def wait_present(self, timeout: float = 10) -> None:
        """Until pcscd says a card is in slot 0 (it polls every 400 ms); nothing is sent to it."""
        self._wait_for_card(True, timeout)

    def _wait_for_card(self, present: bool, timeout: float) -> None:
        from smartcard import scard

        _, context = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                states = [(SLOT_0, scard.SCARD_STATE_UNAWARE)]
                result, found = scard.SCardGetStatusChange(context, 0, states)
                seen = result == scard.SCARD_S_SUCCESS and found[0][1] & scard.SCARD_STATE_PRESENT
                if bool(seen) == present:
                    return
                time.sleep(0.05)
        finally:
            scard.SCardReleaseContext(context)
        raise AssertionError(f"pcscd never saw the card {'placed' if present else 'taken out'}")

    def apdus(self) -> list[str]:
        """Every command the card received: ``CLA INS P1 P2`` then the data, in hex."""
        if not self.apdu_log.exists():
            return []
        return self.apdu_log.read_text().splitlines()

    def stop(self) -> None:
        self.take_out()
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None

    def __enter__(self) -> VirtualReader:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def session_reader_directory() -> Path:
    """A folder for the session's reader (pcscd's socket path must not change in a process)."""
    return Path(tempfile.mkdtemp(prefix="fieldkit-pcsc-"))
