"""The printing service against a real cupsd and ippeveprinter, over the real bus.

R3 (photo 45 × 35 mm on paper), R5 (two labelled receipt copies), R6/R12 (nothing left in
the CUPS spool or job cache after a job and after a session's wipe), plus printer trouble.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fieldkit.broker import LocalBroker
from fieldkit.bus import RequestRefused
from fieldkit.capture.appid import grouped
from fieldkit.config import DeviceConfig, load_config
from fieldkit.messages import Message, Ping, Pong, decode
from fieldkit.printing import SERVICE
from fieldkit.printing.desk import PrintDesk
from fieldkit.printing.localprinter import LocalPrinter, SpoolPolicy
from fieldkit.printing.messages import (
    Forget,
    Forgotten,
    JobEvent,
    PrintAccepted,
    PrinterEvent,
    PrinterStatus,
    PrinterStatusRequest,
    PrintPhotoSheet,
    PrintReceipt,
)
from fieldkit.printing.service import make_spec
from fieldkit.printing.spool import spool_residue
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext, start_service, stop_service
from tests.bus_events import BusEvents, Seen
from tests.conftest import BusFactory, write_config
from tests.cups import (
    config_for,
    page_sizes_mm,
    pdf_text,
    placed_images,
    start_local_printer,
    wait_for_received,
)
from tests.support.printing import APPLICATION_ID, SID, sample_jpeg, sample_receipt


class Events(BusEvents):
    """Every printing event seen on the bus, decoded; wait for one that matches."""

    def wait_for(
        self, model: type[Message], match: Callable[[object], bool], timeout: float = 30.0
    ) -> object:
        def pick(items: list[Seen]) -> object | None:
            for _, payload, _ in items:
                if _type(payload) == model.model_fields["type"].default:
                    message = decode(payload, model)
                    if match(message):
                        return message
            return None

        return self.wait_until(pick, timeout, f"a matching {model.__name__}")


def _type(payload: bytes) -> str:
    return str(json.loads(payload).get("type", ""))


def job_done(job: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, JobEvent) and e.job == job and e.state == "completed"


def photo_request(paper: str = "l", **changes: object) -> PrintPhotoSheet:
    jpeg_b64 = base64.b64encode(sample_jpeg()).decode()
    return PrintPhotoSheet.model_validate(
        {"sid": SID, "jpeg_b64": jpeg_b64, "paper": paper, **changes}
    )


@pytest.fixture
def events(make_bus: BusFactory) -> Events:
    seen = Events()
    make_bus("audit").observe("printing/#", seen)
    return seen


def run_printing(config: DeviceConfig, spec: ServiceSpec = SERVICE) -> ServiceContext:
    return start_service(spec, config)


@pytest.fixture
def printing(broker: LocalBroker, printing_config: DeviceConfig) -> Iterator[ServiceContext]:
    ctx = run_printing(printing_config)
    yield ctx
    stop_service(ctx)


@pytest.mark.parametrize(
    ("paper", "size", "copies"), [("l", (88.9, 127.0), 4), ("a4", (210, 297), 20)]
)
def test_the_printer_receives_the_photo_at_45_by_35_mm(
    printing: ServiceContext,
    local_printer: LocalPrinter,
    make_bus: BusFactory,
    events: Events,
    paper: str,
    size: tuple[float, float],
    copies: int,
) -> None:
    """R3: measured in the PDF the printer received, after CUPS's filters, with scaling off."""
    tester = make_bus("tester")
    reply = tester.request(
        "printing", "print-photo-sheet", photo_request(paper, copies=copies), PrintAccepted, 10
    )
    assert reply.state in {"queued", "printing"} and reply.cups_job is not None
    events.wait_for(JobEvent, job_done(reply.job))
    (received,) = wait_for_received(local_printer, 1)
    assert page_sizes_mm(received) == [pytest.approx(size, abs=0.1)]
    photos = placed_images(received)
    assert len(photos) == copies
    for photo in photos:
        assert photo.width_mm == pytest.approx(35.0, abs=0.1)
        assert photo.height_mm == pytest.approx(45.0, abs=0.1)
        assert photo.pixels == (827, 1063)


def test_the_printer_receives_two_labelled_receipt_copies_in_japanese(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """R5: one job per session's receipt, two pages: 本人控え and 職員控え."""
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    assert reply.pages == 2
    events.wait_for(JobEvent, job_done(reply.job))
    (received,) = wait_for_received(local_printer, 1)
    first, second = pdf_text(received, 1), pdf_text(received, 2)
    assert "本人控え" in first and "職員控え" in second
    for page in (first, second):
        assert "申請情報の控え" in page and grouped(APPLICATION_ID) in page and "希望する" in page


def test_nothing_of_a_job_stays_in_the_spool_after_it_prints_and_after_forget(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """R6, R12: with PreserveJobFiles/History No and the service's purge, the spool is clean."""
    tester = make_bus("tester")
    accepted = [
        tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10),
        tester.request("printing", "print-photo-sheet", photo_request(), PrintAccepted, 10),
    ]
    for reply in accepted:
        done = events.wait_for(JobEvent, job_done(reply.job))
        assert isinstance(done, JobEvent) and done.spool_clean is True
    job_ids = [r.cups_job for r in accepted if r.cups_job is not None]
    assert len(job_ids) == 2
    assert spool_residue(local_printer.spool_dir, local_printer.cache_dir, job_ids) == []

    forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
    assert forgotten.jobs == 2
    assert forgotten.spool_checked and forgotten.spool_clean and forgotten.residue == []
    # Forgotten means forgotten: a second wipe finds nothing of the session.
    again = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
    assert again.jobs == 0


class DeskWithoutPurge(PrintDesk):
    """The service with its own protection removed: it leaves retention to cupsd's config."""

    purges_jobs = False


@pytest.fixture
def preserving_printer() -> Iterator[LocalPrinter]:
    printer, base = start_local_printer(
        SpoolPolicy(preserve_job_files=True, preserve_job_history=True)
    )
    yield printer
    printer.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_with_preserve_job_files_yes_the_spool_check_fails(
    broker: LocalBroker,
    preserving_printer: LocalPrinter,
    tmp_path: Path,
    make_bus: BusFactory,
    events: Events,
) -> None:
    """The check can fail: cupsd set to keep job files, and no purge, leaves the job behind."""
    ctx = run_printing(config_for(tmp_path, preserving_printer), make_spec(DeskWithoutPurge))
    try:
        tester = make_bus("tester")
        reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
        done = events.wait_for(JobEvent, job_done(reply.job))
        assert isinstance(done, JobEvent) and done.spool_clean is False
        forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
        assert forgotten.spool_checked and not forgotten.spool_clean
        job = f"{reply.cups_job:05d}"
        assert f"spool/c{job}" in forgotten.residue
        assert f"spool/d{job}-001" in forgotten.residue
    finally:
        stop_service(ctx)


def print_then_forget_leaves_a_clean_spool(make_bus: BusFactory, events: Events) -> None:
    """A receipt printed to its end, then the session forgotten: the spool is clean both times."""
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    done = events.wait_for(JobEvent, job_done(reply.job))
    assert isinstance(done, JobEvent) and done.spool_clean is True
    forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
    assert forgotten.spool_clean and forgotten.residue == []


def test_cupsd_settings_alone_leave_nothing_without_the_services_purge(
    broker: LocalBroker,
    local_printer: LocalPrinter,
    tmp_path: Path,
    make_bus: BusFactory,
    events: Events,
) -> None:
    """R12, first layer: PreserveJobFiles No + PreserveJobHistory No clean up on their own."""
    ctx = run_printing(config_for(tmp_path, local_printer), make_spec(DeskWithoutPurge))
    try:
        print_then_forget_leaves_a_clean_spool(make_bus, events)
    finally:
        stop_service(ctx)


def test_the_services_purge_cleans_even_when_cupsd_would_keep_the_files(
    broker: LocalBroker,
    preserving_printer: LocalPrinter,
    tmp_path: Path,
    make_bus: BusFactory,
    events: Events,
) -> None:
    """R12, defence in depth: a misconfigured cupsd (PreserveJobFiles Yes) is still purged."""
    ctx = run_printing(config_for(tmp_path, preserving_printer))
    try:
        print_then_forget_leaves_a_clean_spool(make_bus, events)
    finally:
        stop_service(ctx)


def test_forget_purges_a_job_cupsd_is_still_printing_when_cupsd_keeps_history(
    broker: LocalBroker,
    preserving_printer: LocalPrinter,
    tmp_path: Path,
    make_bus: BusFactory,
    events: Events,
) -> None:
    """R6, R12: the paper runs out mid-job and the session ends. cupsd purges only ended
    jobs: one purge cancels the job (its document goes), but with history kept its control
    file stays until a second purge. The forget leaves nothing of the job either way."""
    ctx = run_printing(config_for(tmp_path, preserving_printer))
    preserving_printer.paper_out(True)
    try:
        tester = make_bus("tester")
        reply = tester.request("printing", "print-photo-sheet", photo_request(), PrintAccepted, 10)
        assert reply.cups_job is not None
        events.wait_for(
            JobEvent, lambda e: getattr(e, "job", "") == reply.job and e.state == "printing"
        )
        forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
        assert forgotten.spool_checked and forgotten.spool_clean, forgotten.residue
        assert spool_residue(preserving_printer.spool_dir, None, [reply.cups_job]) == []
    finally:
        preserving_printer.paper_out(False)
        stop_service(ctx)


def test_a_missing_queue_is_reported_and_the_job_waits_until_it_returns(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """Not silently dropped: the job is held by the service, reported, and printed later."""
    local_printer.delete_queue()
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    assert reply.state == "waiting" and reply.cups_job is None
    assert reply.words_ja == "プリンターが設定されていません。係員をお呼びください。"
    events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "queue-missing")
    status = tester.request("printing", "printer-status", PrinterStatusRequest(), PrinterStatus)
    assert status.condition == "queue-missing" and status.waiting_jobs == 1
    assert tester.request("printing", "ping", Ping(), Pong).service == "printing"  # still up

    local_printer.add_queue()
    events.wait_for(JobEvent, job_done(reply.job))
    assert len(wait_for_received(local_printer, 1)) == 1
    events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "ready")


def test_an_offline_printer_is_reported_and_the_job_prints_when_it_is_back(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    local_printer.stop_printer()
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    assert reply.cups_job is not None  # CUPS holds it while the printer is away
    event = events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "offline")
    assert isinstance(event, PrinterEvent)
    assert event.words_ja.startswith("プリンターにつながっていません")
    assert tester.request("printing", "ping", Ping(), Pong).service == "printing"

    local_printer.start_printer()
    events.wait_for(JobEvent, job_done(reply.job), timeout=60)
    assert len(wait_for_received(local_printer, 1)) == 1


def test_out_of_paper_is_reported_in_plain_words_and_the_job_finishes_after_refill(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    local_printer.paper_out(True)
    tester = make_bus("tester")
    reply = tester.request("printing", "print-photo-sheet", photo_request(), PrintAccepted, 10)
    event = events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "out-of-paper")
    assert isinstance(event, PrinterEvent)
    assert event.words_ja == "用紙がありません。係員が用紙を補充します。"
    local_printer.paper_out(False)
    events.wait_for(JobEvent, job_done(reply.job))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (sample_receipt().model_copy(update={"application_id": "1234"}), "application_id"),
        (photo_request().model_copy(update={"jpeg_b64": "***not base64***"}), "jpeg_b64"),
        (
            photo_request().model_copy(
                update={"jpeg_b64": base64.b64encode(sample_jpeg(827, 827)).decode()}
            ),
            "jpeg_b64",
        ),
    ],
)
def test_bad_requests_are_refused_with_the_field_and_the_service_stays_up(
    printing: ServiceContext, make_bus: BusFactory, request_: Message, field: str
) -> None:
    tester = make_bus("tester")
    op = "print-receipt" if isinstance(request_, PrintReceipt) else "print-photo-sheet"
    with pytest.raises(RequestRefused) as refused:
        tester.request("printing", op, request_, PrintAccepted, 10)
    assert refused.value.reply.fields == [field]
    assert "1234" not in refused.value.reply.reason  # the value is never echoed
    assert tester.request("printing", "ping", Ping(), Pong).service == "printing"


def test_cups_logs_and_the_printer_never_see_the_applicant(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """Job names are neutral: no application ID in cupsd's logs, control data or file names."""
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    events.wait_for(JobEvent, job_done(reply.job))
    (received,) = wait_for_received(local_printer, 1)
    # The document itself does carry it, in the form's digit groups.
    assert grouped(APPLICATION_ID) in pdf_text(received)
    assert APPLICATION_ID not in received.name
    for path in local_printer.directory.rglob("*"):
        if path.is_file() and path.suffix not in {".pdf", ".prn"}:
            data = path.read_bytes()
            assert APPLICATION_ID.encode() not in data, path.name
            assert grouped(APPLICATION_ID).encode() not in data, path.name


def test_forget_drops_a_job_that_never_reached_cups(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """R6: the session's wipe removes its waiting job; it does not print later."""
    local_printer.delete_queue()
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    assert reply.state == "waiting"
    forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
    assert forgotten.jobs == 1 and forgotten.spool_clean
    local_printer.add_queue()
    time.sleep(2)  # several retry intervals: a job still held would have been sent by now
    assert list(local_printer.received_dir.glob("*.pdf")) == []
    status = tester.request("printing", "printer-status", PrinterStatusRequest(), PrinterStatus)
    assert status.waiting_jobs == 0


def test_forget_cancels_and_purges_a_job_waiting_for_an_offline_printer(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """R6, R12: a job CUPS still holds is canceled and purged; the spool is left clean."""
    local_printer.stop_printer()
    tester = make_bus("tester")
    reply = tester.request("printing", "print-photo-sheet", photo_request(), PrintAccepted, 10)
    assert reply.cups_job is not None
    events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "offline")
    forgotten = tester.request("printing", "forget", Forget(sid=SID), Forgotten, 30)
    assert forgotten.jobs == 1
    assert forgotten.spool_checked and forgotten.spool_clean, forgotten.residue
    assert spool_residue(local_printer.spool_dir, local_printer.cache_dir, [reply.cups_job]) == []
    local_printer.start_printer()
    time.sleep(2)
    assert list(local_printer.received_dir.glob("*.pdf")) == []


def test_the_service_can_run_its_own_local_printer_for_the_demo(
    broker: LocalBroker, tmp_path: Path, make_bus: BusFactory, events: Events
) -> None:
    """``[printing.local] enabled = true``: fieldkit up prints real PDFs without hardware."""
    base = Path(tempfile.mkdtemp(prefix="fieldkit-demo-"))
    base.chmod(0o755)
    try:
        body = "\n".join(
            [
                "[printing]",
                "poll_interval = 0.1",
                "[printing.local]",
                "enabled = true",
                f'directory = "{base / "printer"}"',
                "",
            ]
        )
        ctx = run_printing(load_config(write_config(tmp_path, body)))
        try:
            tester = make_bus("tester")
            reply = tester.request(
                "printing", "print-photo-sheet", photo_request(), PrintAccepted, 10
            )
            done = events.wait_for(JobEvent, job_done(reply.job))
            assert isinstance(done, JobEvent) and done.spool_clean is True
            (received,) = (base / "printer" / "received").glob("*.pdf")
            assert len(placed_images(received)) == 4
        finally:
            stop_service(ctx)
        assert not list((base / "printer" / "spool").glob("[cd]0*"))
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_normal_job_never_reports_trouble_to_the_applicant(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """A job that prints fine goes queued → printing → completed; no 'call staff' on screen."""
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    events.wait_for(JobEvent, job_done(reply.job))
    states = [
        decode(payload, JobEvent).state
        for topic, payload, _ in events.items
        if topic == f"printing/evt/session/{SID}/job"
    ]
    assert states[-1] == "completed"
    assert set(states) <= {"queued", "printing", "completed"}, states


def test_the_first_printer_condition_reaches_the_bus(
    broker: LocalBroker, printing_config: DeviceConfig, make_bus: BusFactory, events: Events
) -> None:
    """The condition read at start is published, even when read before the bus is up."""
    ctx = run_printing(printing_config)
    try:
        events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "ready")
    finally:
        stop_service(ctx)


def test_cupsd_down_is_reported_and_the_job_is_sent_once_it_is_back(
    printing: ServiceContext, local_printer: LocalPrinter, make_bus: BusFactory, events: Events
) -> None:
    """The print system itself stopped: clear words, service up, the job kept and sent later."""
    local_printer.stop()
    tester = make_bus("tester")
    reply = tester.request("printing", "print-receipt", sample_receipt(), PrintAccepted, 10)
    assert reply.state == "waiting" and reply.cups_job is None
    assert reply.words_en == "The printing system is not running. Please call staff."
    events.wait_for(PrinterEvent, lambda e: getattr(e, "condition", "") == "cups-unreachable")
    assert tester.request("printing", "ping", Ping(), Pong).service == "printing"

    local_printer.start()  # same ports, fresh spool
    events.wait_for(JobEvent, job_done(reply.job))
    assert len(wait_for_received(local_printer, 1)) == 1
