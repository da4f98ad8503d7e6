"""A real CUPS for tests: cupsd in a temp dir on a free loopback port, a queue on ippeveprinter.

Reusable by any test that prints (kiosk end-to-end tests too): the ``local_printer`` fixture
(re-exported from conftest) gives a running ``LocalPrinter``; ``printing_config`` a device
config whose ``[printing]`` section points at it. Helpers read back what the printer received.
"""

from __future__ import annotations

import io
import math
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from pypdf.generic import ContentStream

from fieldkit.config import DeviceConfig, load_config
from fieldkit.printing.localprinter import PROJECT_POLICY, LocalPrinter, SpoolPolicy

MM_PER_POINT = 25.4 / 72


def start_local_printer(policy: SpoolPolicy = PROJECT_POLICY) -> tuple[LocalPrinter, Path]:
    # Not under pytest's tmp_path: that is 0700, and cupsd's filters run as lp must reach
    # the spool. mkdtemp makes a private directory; LocalPrinter opens only its own top.
    base = Path(tempfile.mkdtemp(prefix="fieldkit-cups-"))
    base.chmod(0o755)
    printer = LocalPrinter(base / "printer", "fieldkit-test", policy=policy)
    try:
        printer.start()
    except Exception:
        printer.stop()
        shutil.rmtree(base, ignore_errors=True)
        raise
    return printer, base


@pytest.fixture
def local_printer(request: pytest.FixtureRequest) -> Iterator[LocalPrinter]:
    """cupsd (PreserveJobFiles No, PreserveJobHistory No) with a queue on ippeveprinter.

    A test may ask for other retention settings by parametrizing it indirectly with a
    ``SpoolPolicy``.
    """
    printer, base = start_local_printer(getattr(request, "param", PROJECT_POLICY))
    yield printer
    printer.stop()
    shutil.rmtree(base, ignore_errors=True)


def printing_section(printer: LocalPrinter, extra: str = "") -> str:
    return f"""
[printing]
cups_port = {printer.cups_port}
queue = "{printer.queue}"
spool_dir = "{printer.spool_dir}"
cache_dir = "{printer.cache_dir}"
poll_interval = 0.1
retry_interval = 0.5
spool_settle = 1.0
{extra}
"""


def config_for(directory: Path, printer: LocalPrinter, extra: str = "") -> DeviceConfig:
    from tests.conftest import write_config

    return load_config(write_config(directory, printing_section(printer, extra)))


@pytest.fixture
def printing_config(tmp_path: Path, local_printer: LocalPrinter) -> DeviceConfig:
    return config_for(tmp_path, local_printer)


# -- reading back what the printer received ----------------------------------------------------


def received_pdfs(printer: LocalPrinter) -> list[Path]:
    return sorted(printer.received_dir.glob("*.pdf"))


def wait_for_received(printer: LocalPrinter, count: int, timeout: float = 20.0) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = received_pdfs(printer)
        if len(found) >= count:
            return found
        time.sleep(0.1)
    raise AssertionError(f"the printer received {len(received_pdfs(printer))} of {count} PDFs")


def pdf_text(pdf: Path, page: int | None = None) -> str:
    cmd = ["pdftotext", "-layout", "-enc", "UTF-8"]
    if page is not None:
        cmd += ["-f", str(page), "-l", str(page)]
    return subprocess.run([*cmd, str(pdf), "-"], capture_output=True, text=True, check=True).stdout


Matrix = tuple[float, float, float, float, float, float]
IDENTITY: Matrix = (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)


def _times(m: Matrix, n: Matrix) -> Matrix:
    a, b, c, d, e, f = m
    na, nb, nc, nd, ne, nf = n
    return (
        a * na + b * nc,
        a * nb + b * nd,
        c * na + d * nc,
        c * nb + d * nd,
        e * na + f * nc + ne,
        e * nb + f * nd + nf,
    )


@dataclass(frozen=True)
class PlacedImage:
    """An image as drawn on a page: its size and lower-left corner in millimetres."""

    page: int
    width_mm: float
    height_mm: float
    x_mm: float
    y_mm: float
    pixels: tuple[int, int]


def placed_images(pdf: bytes | Path) -> list[PlacedImage]:
    """Every image drawn in the PDF, measured through nested forms and ``cm`` operators."""
    data = pdf.read_bytes() if isinstance(pdf, Path) else pdf
    reader = PdfReader(io.BytesIO(data))
    found: list[PlacedImage] = []
    for number, page in enumerate(reader.pages, start=1):
        _walk(reader, page.get_contents(), page.get("/Resources"), IDENTITY, number, found)
    return found


def _walk(
    reader: PdfReader, content: Any, resources: Any, ctm: Matrix, page: int, out: list[PlacedImage]
) -> None:
    if content is None:
        return
    resources = resources.get_object() if resources is not None else {}
    stack: list[Matrix] = []
    for operands, operator in ContentStream(content, reader).operations:
        if operator == b"q":
            stack.append(ctm)
        elif operator == b"Q":
            ctm = stack.pop()
        elif operator == b"cm":
            m = tuple(float(v) for v in operands)
            ctm = _times(m, ctm)  # type: ignore[arg-type]
        elif operator == b"Do":
            xobject = resources["/XObject"][operands[0]].get_object()
            if xobject["/Subtype"] == "/Image":
                a, b, c, d, e, f = ctm
                out.append(
                    PlacedImage(
                        page,
                        math.hypot(a, b) * MM_PER_POINT,
                        math.hypot(c, d) * MM_PER_POINT,
                        e * MM_PER_POINT,
                        f * MM_PER_POINT,
                        (int(xobject["/Width"]), int(xobject["/Height"])),
                    )
                )
            elif xobject["/Subtype"] == "/Form":
                matrix = tuple(float(v) for v in xobject.get("/Matrix", IDENTITY))
                inner = _times(matrix, ctm)  # type: ignore[arg-type]
                _walk(reader, xobject, xobject.get("/Resources", resources), inner, page, out)


def page_sizes_mm(pdf: bytes | Path) -> list[tuple[float, float]]:
    data = pdf.read_bytes() if isinstance(pdf, Path) else pdf
    reader = PdfReader(io.BytesIO(data))
    return [
        (float(p.mediabox.width) * MM_PER_POINT, float(p.mediabox.height) * MM_PER_POINT)
        for p in reader.pages
    ]
