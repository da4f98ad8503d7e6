"""The device's CUPS queue, through pycups: submit from memory, watch jobs, purge them.

libcups keeps its server setting per thread, so a ``CupsQueue`` is made and used by one
thread only (the service's print desk).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import cups
from fieldkit.printing.condition import (
    CUPS_UNREACHABLE,
    QUEUE_MISSING,
    PrinterReading,
    read_condition,
)

log = logging.getLogger(__name__)

IPP_NOT_FOUND = 0x0406
IPP_NOT_POSSIBLE = 0x0404
# job-state values (RFC 8011)
JOB_PENDING, JOB_HELD, JOB_PROCESSING, JOB_STOPPED = 3, 4, 5, 6
JOB_CANCELED, JOB_ABORTED, JOB_COMPLETED = 7, 8, 9
FINAL_JOB_STATES = frozenset({JOB_CANCELED, JOB_ABORTED, JOB_COMPLETED})

# Print true to size (R3): no scaling by CUPS's pdftopdf, nor by the printer.
TRUE_SIZE = {"print-scaling": "none", "fit-to-page": "false"}
# cupsd reads a document through a 32 KiB buffer on its stack, which keeps the last chunk read
# until another upload overwrites it; freed memory is scrubbed, a stack is not.
RECEIVE_BUFFER_BYTES = 64 * 1024
SCRUB_TITLE = "fieldkit-scrub"
JOB_EVENTS = ["job-created", "job-state-changed", "job-completed", "job-stopped"]
# A lease, renewed while we run, so a crashed service leaves no subscription on the system
# cupsd for long (subscriptions outlive their client otherwise).
SUBSCRIPTION_LEASE = 300
# An active job needs two purges (cancel, then purge the canceled job); one more for a job
# that was still being stopped at the second.
PURGE_ATTEMPTS = 3


class CupsUnavailable(Exception):
    """cupsd did not answer, or refused the operation; the message says which."""


@dataclass(frozen=True)
class JobNotice:
    """One job event from cupsd's notifications."""

    job_id: int
    state: int
    reasons: tuple[str, ...]


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


class CupsQueue:
    def __init__(self, host: str, port: int, queue: str) -> None:
        self.host = host
        self.port = port
        self.queue = queue
        self._conn: cups.Connection | None = None
        self._subscription: int | None = None
        self._next_event = 1
        self._renew_at = 0.0

    def _connection(self) -> cups.Connection:
        if self._conn is None:
            # cupsCreateJob looks the queue up through the thread's default server, so both
            # the thread default and the connection name the device's own cupsd.
            cups.setServer(self.host)
            cups.setPort(self.port)
            try:
                self._conn = cups.Connection(host=self.host, port=self.port)
            except RuntimeError as exc:
                raise CupsUnavailable(f"cupsd at {self.host}:{self.port} did not answer") from exc
        return self._conn

    def _drop(self) -> None:
        self._conn = None
        self._subscription = None

    def submit(self, document: bytes | bytearray, title: str, options: dict[str, str]) -> int:
        """Stream the PDF to cupsd (Create-Job + Send-Document); no file is written here."""
        conn = self._connection()
        try:
            job_id = conn.createJob(self.queue, title, {**options, **TRUE_SIZE})
        except cups.IPPError as exc:
            status, message = exc.args
            if status != IPP_NOT_FOUND:
                self._drop()
            raise CupsUnavailable(f"cupsd refused the job: {message}") from None
        except RuntimeError:
            self._drop()
            raise CupsUnavailable("cupsd did not answer") from None
        try:
            conn.startDocument(self.queue, job_id, title, "application/pdf", True)
            conn.writeRequestData(bytes(document), len(document))
            conn.finishDocument(self.queue)
        except (cups.IPPError, cups.HTTPError, RuntimeError):
            # A half-sent job is purged so no partial document stays in the spool.
            self._drop()
            self.purge(job_id)
            raise CupsUnavailable("the document could not be sent to cupsd") from None
        return int(job_id)

    def reading(self) -> PrinterReading:
        """The queue's condition now (queue missing and cupsd down included)."""
        try:
            attrs = self._connection().getPrinterAttributes(
                self.queue,
                requested_attributes=[
                    "printer-state",
                    "printer-state-reasons",
                    "printer-state-message",
                ],
            )
        except CupsUnavailable:
            return CUPS_UNREACHABLE
        except cups.IPPError as exc:
            if exc.args[0] == IPP_NOT_FOUND:
                return QUEUE_MISSING
            self._drop()
            return CUPS_UNREACHABLE
        except RuntimeError:
            self._drop()
            return CUPS_UNREACHABLE
        return read_condition(
            int(attrs.get("printer-state", 3)),
            _as_tuple(attrs.get("printer-state-reasons")),
            str(attrs.get("printer-state-message", "")),
        )

    def job_state(self, job_id: int) -> int | None:
        """The job's state, or None when cupsd no longer knows the job."""
        try:
            attrs = self._connection().getJobAttributes(job_id, requested_attributes=["job-state"])
        except cups.IPPError as exc:
            if exc.args[0] == IPP_NOT_FOUND:
                return None
            raise CupsUnavailable(f"job state: {exc.args[1]}") from None
        except RuntimeError:
            self._drop()
            raise CupsUnavailable("cupsd did not answer") from None
        return int(attrs["job-state"])

    def notices(self) -> list[JobNotice]:
        """Job events since the last call (a server-wide ippget subscription)."""
        conn = self._connection()
        try:
            if self._subscription is None:
                self._subscription = int(
                    conn.createSubscription(
                        f"ipp://{self.host}:{self.port}/",
                        events=JOB_EVENTS,
                        lease_duration=SUBSCRIPTION_LEASE,
                    )
                )
                self._next_event = 1
                self._renew_at = time.monotonic() + SUBSCRIPTION_LEASE / 3
            elif time.monotonic() >= self._renew_at:
                conn.renewSubscription(self._subscription, lease_duration=SUBSCRIPTION_LEASE)
                self._renew_at = time.monotonic() + SUBSCRIPTION_LEASE / 3
            reply = conn.getNotifications([self._subscription], [self._next_event])
        except cups.IPPError:
            self._subscription = None
            return []
        except RuntimeError:
            self._drop()
            raise CupsUnavailable("cupsd did not answer") from None
        found = []
        for event in reply.get("events", []):
            self._next_event = max(self._next_event, int(event["notify-sequence-number"]) + 1)
            if "notify-job-id" in event and "job-state" in event:
                found.append(
                    JobNotice(
                        int(event["notify-job-id"]),
                        int(event["job-state"]),
                        _as_tuple(event.get("job-state-reasons")),
                    )
                )
        return found

    def purge(self, job_id: int) -> bool:
        """Cancel the job if needed and make cupsd delete its files and history entry.

        cupsd purges only a job that has ended: a pending or printing job is canceled and
        loses its documents, but while cupsd keeps job history it stays, with its control
        file, until it is purged again. So purge until cupsd no longer knows the job.
        """
        for _ in range(PURGE_ATTEMPTS):
            try:
                self._connection().cancelJob(job_id, purge_job=True)
            except cups.IPPError as exc:
                if exc.args[0] == IPP_NOT_FOUND:
                    return True  # already gone: nothing of it left to purge
                log.warning("purging job %d failed: %s", job_id, exc.args[1])
                return False
            except (CupsUnavailable, RuntimeError):
                self._drop()
                return False
            try:
                if self.job_state(job_id) is None:
                    return True
            except CupsUnavailable:
                return False
        log.warning("job %d is still known to cupsd after %d purges", job_id, PURGE_ATTEMPTS)
        return False

    def overwrite_receive_buffer(self) -> bool:
        """Make cupsd read random bytes through the buffer the last document went through.

        A job held for ever takes the bytes and is purged at once: nothing is printed, and the
        receipt's last chunk (the canary in its keywords, found by the wipe's memory scan in
        cupsd's stack) is gone from cupsd's memory. False when cupsd did not take it."""
        filler = os.urandom(RECEIVE_BUFFER_BYTES)
        try:
            conn = self._connection()
            job_id = conn.createJob(self.queue, SCRUB_TITLE, {"job-hold-until": "indefinite"})
        except (CupsUnavailable, cups.IPPError, RuntimeError):
            self._drop()
            return False
        try:
            conn.startDocument(self.queue, job_id, SCRUB_TITLE, "application/octet-stream", True)
            conn.writeRequestData(filler, len(filler))
            conn.finishDocument(self.queue)
        except (cups.IPPError, cups.HTTPError, RuntimeError):
            self._drop()
            self.purge(job_id)
            return False
        return self.purge(job_id)

    def cancel(self, job_id: int) -> None:
        """Cancel without purging: cupsd's retention settings decide what stays."""
        try:
            self._connection().cancelJob(job_id, purge_job=False)
        except cups.IPPError as exc:
            log.info("canceling job %d: %s", job_id, exc.args[1])
        except (CupsUnavailable, RuntimeError):
            self._drop()

    def close(self) -> None:
        if self._conn is not None and self._subscription is not None:
            with contextlib.suppress(cups.IPPError, RuntimeError):
                self._conn.cancelSubscription(self._subscription)
        self._drop()
