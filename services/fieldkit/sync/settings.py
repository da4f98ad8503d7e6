"""The ``[sync]`` config section: the tablet outbox and its link to the hub."""

from pathlib import Path

from pydantic import Field

from fieldkit.models import Section


class SyncSection(Section):
    # In its own folder, which the wipe's catalogue scans ([wipe] outbox_dirs).
    outbox: Path = Path("/var/lib/fieldkit/outbox/outbox.sqlite")
    # The tablet's enrolment, written by `fieldkit enrol` (client.key/.crt and signing.key made
    # on the tablet, ca.crt, receivers/<municipality>.pem, enrolment.toml).
    bundle: Path = Path("/etc/fieldkit/bundle")
    hub_host: str = "localhost"
    hub_port: int = Field(default=8883, ge=1, le=65535)
    # Push back ("outbox full") instead of dropping, long before the disk is at risk.
    max_records: int = Field(default=50_000, ge=1)
    max_bytes: int = Field(default=2 * 1024**3, ge=1024)
    # Records sent at once before their acks come back.
    window: int = Field(default=200, ge=1, le=10_000)
    ack_timeout: float = Field(default=10.0, gt=0)
    backoff_max: float = Field(default=300.0, gt=0)
    reconnect_max: float = Field(default=30.0, gt=0)
    # sync reports the tablet's version and outbox backlog to the hub (a health record) on every
    # connect and this often while connected, for the hub's device page (issue 21).
    status_interval: float = Field(default=900.0, ge=10)
    # Where the last operator roster from the hub is kept (default: operators.json beside the
    # outbox), so a tablet that starts offline still knows who may log in.
    roster: Path | None = None
    # The tablet's integrity reports (issue 19): the kernel audit summary and the file-integrity
    # result the integrity role's root units write here; sync sends each new one to the hub as
    # a health record (fieldkit.sync.reports). None: not looked for.
    reports: Path | None = Path("/var/lib/fieldkit/integrity")
    reports_poll: float = Field(default=60.0, ge=0.2)

    def roster_path(self) -> Path:
        return self.roster or self.outbox.with_name("operators.json")
