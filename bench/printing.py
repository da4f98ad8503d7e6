"""Benchmark of the printing service (R3, R5): render time and request → job-accepted time.

Run: ``.venv/bin/python bench/printing.py [--rounds N]``. Each figure is printed with a
baseline measured in the same run, on the same machine, and the ratio between them:

- receipt render      vs  a one-line reportlab page (reportlab's own floor)
- photo sheet render  vs  the same one-line page
- request → accepted  vs  a bare bus round trip (``ping``) to the same service, and
                          vs  streaming the same PDF to cupsd directly with pycups

It starts its own mosquitto, cupsd and ippeveprinter in a temporary directory (loopback only).
"""

from __future__ import annotations

import argparse
import io
import secrets
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, ImageDraw
from reportlab.pdfgen.canvas import Canvas

from fieldkit.broker import LocalBroker
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.config import DeviceConfig
from fieldkit.messages import Ping, Pong
from fieldkit.printing import SERVICE
from fieldkit.printing.cupsqueue import CupsQueue
from fieldkit.printing.localprinter import LocalPrinter
from fieldkit.printing.messages import Forget, Forgotten, PrintAccepted, PrintReceipt
from fieldkit.printing.photosheet import render_photo_sheet
from fieldkit.printing.receipt import render_receipt
from fieldkit.printing.settings import DEFAULT_FONT
from fieldkit.registry import Identity, identities_for, load_specs
from fieldkit.runner import start_service, stop_service

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # bench.* helpers, run as `.venv/bin/python bench/NAME.py`

from bench.samples import report, timed  # noqa: E402

TESTER = Identity(name="tester", writes=("tester/req/#",), reads=("+/rep/tester", "+/error"))


def one_line_page() -> bytes:
    out = io.BytesIO()
    canvas = Canvas(out)
    canvas.drawString(72, 72, "baseline")
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def sample_jpeg() -> bytes:
    image = Image.new("RGB", (827, 1063), "white")
    ImageDraw.Draw(image).ellipse((200, 200, 620, 800), fill="gray")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def sample_receipt(sid: str) -> PrintReceipt:
    return PrintReceipt(
        sid=sid,
        application_id="12345678901234567890123",
        applied_at=datetime(2026, 11, 23, 1, 30, tzinfo=UTC),
        site="千代田区ふれあい会館",
        mode="support",
        electronic_certificate=True,
        braille=False,
        operator_id="op-007",
        reception_number="0100073",
        municipality="長野県松本市",
        contact_phone="0263-00-0000",
        contact_hours_ja="平日 9時〜17時",
    )


def bench_render(rounds: int) -> None:
    baseline = timed(one_line_page, rounds)
    receipt = sample_receipt("b" * 32)  # a session id is 32 hex digits
    report(
        "receipt render (2 pages)",
        timed(lambda: render_receipt(receipt, DEFAULT_FONT), rounds),
        baseline,
        "one-line page",
    )
    jpeg = sample_jpeg()
    for paper, copies in (("l", 4), ("a4", 20)):
        report(
            f"photo sheet render ({paper}, {copies})",
            timed(
                lambda p=paper, n=copies: render_photo_sheet(jpeg, p, n, DEFAULT_FONT),  # type: ignore[arg-type]
                rounds,
            ),
            baseline,
            "one-line page",
        )


def bench_accept(rounds: int, work: Path) -> None:
    printer = LocalPrinter(work / "printer", "bench", keep_received=False)
    printer.start()
    runtime = work / "run"
    runtime.mkdir()
    broker = LocalBroker(runtime, [*identities_for(load_specs()), TESTER], Endpoint(port=0))
    broker.start()
    config = DeviceConfig.model_validate(
        {
            "device": {"id": "bench-tablet"},
            "bus": {"port": broker.endpoint.port, "runtime_dir": str(runtime)},
            "printing": {
                "cups_port": printer.cups_port,
                "queue": printer.queue,
                "spool_dir": str(printer.spool_dir),
                "cache_dir": str(printer.cache_dir),
            },
        }
    )
    ctx = start_service(SERVICE, config)
    tester = Bus("tester", broker.endpoint, read_password(runtime, "tester"), announce_health=False)
    tester.connect()
    try:
        ping = timed(lambda: tester.request("printing", "ping", Ping(), Pong), rounds)
        sid = secrets.token_hex(16)  # as the kiosk makes one

        def print_receipt() -> None:
            reply = tester.request(
                "printing", "print-receipt", sample_receipt(sid), PrintAccepted, 30
            )
            if reply.cups_job is None:
                raise SystemExit(f"CUPS did not accept the job: {reply.words_en}")

        accepted = timed(print_receipt, rounds)
        pdf = render_receipt(sample_receipt(sid), DEFAULT_FONT)
        direct_queue = CupsQueue("127.0.0.1", printer.cups_port, printer.queue)
        direct = timed(lambda: direct_queue.submit(pdf, "fieldkit-bench", {}), rounds)
        report("request -> job accepted", accepted, ping, "bus ping")
        report("request -> job accepted", accepted, direct, "pycups submit only")
        start = time.perf_counter()
        forgotten = tester.request("printing", "forget", Forget(sid=sid), Forgotten, 120)
        print(
            f"{'forget (wipe) of the session':<28} {(time.perf_counter() - start) * 1000:8.2f} ms  "
            f"jobs {forgotten.jobs}, spool clean: {forgotten.spool_clean}"
        )
    finally:
        tester.close()
        stop_service(ctx)
        broker.stop()
        printer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(f"fieldkit printing benchmark, {args.rounds} rounds each (after one warm-up)")
    bench_render(args.rounds)
    work = Path(tempfile.mkdtemp(prefix="fieldkit-bench-"))
    work.chmod(0o755)
    try:
        bench_accept(args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
