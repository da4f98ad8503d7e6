"""The device's queue (R9): `fieldkit printer add` makes a driverless IPP Everywhere queue on
the device's own cupsd, with the settings the erasure policy needs, and a job prints on it.

Real cupsd and ippeveprinter (tests/cups.py); the printer is asked for its capabilities by
CUPS itself (``-m everywhere``), as a network or ipp-usb printer is on a tablet.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cups
from fieldkit.printing.localprinter import LocalPrinter
from fieldkit.printing.queues import QUEUE_OPTIONS, QueueError, check_printer_uri
from tests.cups import config_for, wait_for_received


def connect(printer: LocalPrinter) -> cups.Connection:
    # libcups keeps the server per thread; printFile follows it, not the Connection's host.
    cups.setServer("127.0.0.1")
    cups.setPort(printer.cups_port)
    return cups.Connection(host="127.0.0.1", port=printer.cups_port)


def fieldkit(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldkit", "--config", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_provisioning_makes_the_queue_and_it_prints(
    tmp_path: Path, local_printer: LocalPrinter
) -> None:
    config_for(tmp_path, local_printer)
    queue = "provisioned"
    done = fieldkit(
        tmp_path / "device.toml",
        "printer",
        "add",
        "--queue",
        queue,
        "--uri",
        local_printer.device_uri,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "IPP Everywhere" in done.stdout
    connection = connect(local_printer)
    attrs = connection.getPrinterAttributes(queue)
    assert attrs["device-uri"] == local_printer.device_uri
    assert attrs["printer-error-policy"] == QUEUE_OPTIONS["printer-error-policy"]
    assert attrs["printer-is-shared"] is False
    assert attrs["printer-is-accepting-jobs"] is True
    # The printer told CUPS what it can do: no PPD of ours, its own media and formats.
    assert "application/pdf" in attrs["document-format-supported"]
    pdf = Path("/usr/share/cups/data/default-testpage.pdf")
    if not pdf.is_file():
        pytest.skip("cups test page not installed")
    connection.printFile(queue, str(pdf), "queue test", {})
    assert wait_for_received(local_printer, 1)
    removed = fieldkit(tmp_path / "device.toml", "printer", "remove", "--queue", queue)
    assert removed.returncode == 0, removed.stdout
    assert queue not in connection.getPrinters()


@pytest.mark.parametrize(
    "uri",
    [
        "socket://192.0.2.5:9100",
        "http://printer.local/",
        "ipp:///ipp/print",
        "ipp://admin:secret@192.0.2.5/ipp/print",
    ],
)
def test_a_uri_that_is_not_ipp_is_refused(uri: str) -> None:
    with pytest.raises(QueueError, match="printer URI"):
        check_printer_uri(uri)


def test_a_printer_that_does_not_answer_gets_a_clear_error_and_no_queue(
    tmp_path: Path, local_printer: LocalPrinter
) -> None:
    config_for(tmp_path, local_printer)
    done = fieldkit(
        tmp_path / "device.toml",
        "printer",
        "add",
        "--queue",
        "nowhere",
        "--uri",
        "ipp://127.0.0.1:9/ipp/print",
    )
    assert done.returncode == 2
    assert "printer queue nowhere not made: no IPP printer answers at" in done.stdout
    assert "nowhere" not in connect(local_printer).getPrinters()
