"""The printing service: receipts (R5) and photo sheets (R3) through CUPS, leaving nothing (R12).

Requests (``<sender>/req/printing/<op>``): ``print-receipt``, ``print-photo-sheet``,
``forget`` (a session's wipe: answers ``forgotten``), ``printer-status``.
Events: ``printing/evt/printer`` (condition changes, plain words) and
``printing/evt/session/<sid>/job`` (a job's progress).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import threading

from fieldkit.bus import Incoming
from fieldkit.erasure import serve_forget_requests
from fieldkit.messages import MessageError
from fieldkit.printing import SERVICE
from fieldkit.printing.desk import EventPublisher, PrintDesk, PrintJob
from fieldkit.printing.localprinter import LocalPrinter
from fieldkit.printing.messages import (
    Forget,
    Forgotten,
    PrintAccepted,
    PrinterStatus,
    PrinterStatusRequest,
    PrintPhotoSheet,
    PrintReceipt,
)
from fieldkit.printing.photosheet import IPP_MEDIA, PhotoRefused, layout_for, render_photo_sheet
from fieldkit.printing.receipt import render_receipt
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext

log = logging.getLogger(__name__)

# Job names reach cupsd's control files and the printer: never anything about the applicant.
RECEIPT_TITLE = "fieldkit-receipt"
PHOTO_TITLE = "fieldkit-photo"


class PrintingService:
    """The bus-facing half: validates and renders, then hands jobs to the desk."""

    def __init__(self, ctx: ServiceContext, desk_class: type[PrintDesk]) -> None:
        self.settings = ctx.config.printing
        host, port = self.settings.cups_host, self.settings.cups_port
        spool_dir, cache_dir = self.settings.spool_dir, self.settings.cache_dir
        if self.settings.local.enabled:
            local = LocalPrinter(
                self.settings.local.directory,
                self.settings.queue,
                keep_received=self.settings.local.keep_received,
            )
            local.start()
            ctx.on_stop(local.stop)
            port, spool_dir, cache_dir = local.cups_port, local.spool_dir, local.cache_dir
        self.events = EventPublisher(ctx.bus)
        ctx.on_stop(self.events.close)
        self.desk = desk_class(
            self.settings,
            self.events.put,
            cups_host=host,
            cups_port=port,
            spool_dir=spool_dir,
            cache_dir=cache_dir,
        )
        if self.settings.local.enabled:
            self.desk.after_forget = local.restart_cupsd
        thread = threading.Thread(
            target=self.desk.run, args=(ctx.stopping,), name="print-desk", daemon=True
        )
        thread.start()
        ctx.on_stop(lambda: thread.join(10))

    def print_receipt(self, request: PrintReceipt, meta: Incoming) -> PrintAccepted:
        document = render_receipt(request, self.settings.font_path)
        job = PrintJob(
            sid=request.sid,
            kind="receipt",
            title=RECEIPT_TITLE,
            options={"media": IPP_MEDIA["a4"]},
            pages=2,
            document=bytearray(document),
        )
        del document
        return self.desk.accept(job)

    def print_photo_sheet(self, request: PrintPhotoSheet, meta: Incoming) -> PrintAccepted:
        try:
            jpeg = base64.b64decode(request.jpeg_b64, validate=True)
        except (binascii.Error, ValueError):
            raise MessageError("jpeg_b64: not valid base64", ["jpeg_b64"]) from None
        paper = request.paper or self.settings.photo_paper
        copies = min(request.copies or self.settings.photo_copies, layout_for(paper).capacity)
        try:
            document = render_photo_sheet(
                jpeg, paper, copies, self.settings.font_path, request.canary
            )
        except PhotoRefused as exc:
            raise MessageError(f"jpeg_b64: {exc}", ["jpeg_b64"]) from None
        finally:
            del jpeg
        job = PrintJob(
            sid=request.sid,
            kind="photo-sheet",
            title=PHOTO_TITLE,
            options={"media": IPP_MEDIA[paper]},
            pages=1,
            document=bytearray(document),
        )
        del document
        return self.desk.accept(job)

    def forget(self, request: Forget, meta: Incoming) -> Forgotten:
        """The detailed answer (jobs, spool check) for diagnostics and tests."""
        return self.desk.forget(request.sid)

    def forget_session(self, sid: str) -> list[str]:
        """The wipe's forget handshake: purge the session's jobs and check the spool (R6, R12)."""
        forgotten = self.desk.forget(sid)
        if forgotten.spool_checked and not forgotten.spool_clean:
            # Fails the holder's answer, and so the erasure record, visibly.
            raise SpoolResidue(f"{len(forgotten.residue)} spool file(s) left")
        erased = [f"print jobs of the session ({forgotten.jobs})"]
        erased.append(
            "CUPS spool checked clean" if forgotten.spool_checked else "spool not readable"
        )
        return erased

    def printer_status(self, request: PrinterStatusRequest, meta: Incoming) -> PrinterStatus:
        return self.desk.status()


class SpoolResidue(Exception):
    """The spool still holds files of a forgotten session."""


def install(ctx: ServiceContext, desk_class: type[PrintDesk] = PrintDesk) -> None:
    service = PrintingService(ctx, desk_class)
    bus = ctx.bus
    bus.handle_request("print-receipt", PrintReceipt, service.print_receipt)
    bus.handle_request("print-photo-sheet", PrintPhotoSheet, service.print_photo_sheet)
    bus.handle_request("forget", Forget, service.forget)
    serve_forget_requests(bus, service.forget_session)
    bus.handle_request("printer-status", PrinterStatusRequest, service.printer_status)


def setup(ctx: ServiceContext) -> None:
    install(ctx)


def make_spec(desk_class: type[PrintDesk]) -> ServiceSpec:
    """The printing spec with another desk: tests pass one without a protection to show it
    matters."""
    return dataclasses.replace(SERVICE, setup=lambda ctx: install(ctx, desk_class))
