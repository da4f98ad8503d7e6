"""The ``[hub]`` config section: the hub broker, the ingest service and the hub database."""

from pathlib import Path

from pydantic import Field

from fieldkit.models import Section


class HubSection(Section):
    # The PKI directory's public parts plus hub/ keys (see fieldkit.pki for the layout).
    pki: Path = Path("/etc/fieldkit/pki")
    # The CA signer's socket (``fieldkit pki signer``): with it, the hub's services never read
    # the CA key; they ask the signer to issue, revoke and sign the CRL (issue 17 item 2).
    ca_signer: Path | None = None
    # The hub's config folder: scanned at start, with the others, for private sealing keys.
    config_dir: Path = Path("/etc/fieldkit")
    broker_host: str = "127.0.0.1"
    broker_port: int = Field(default=8883, ge=0, le=65535)
    broker_dir: Path = Path("/run/fieldkit/hub-broker")
    server_name: str = "localhost"
    database_url: str = "sqlite:////var/lib/fieldkit/hub.sqlite"
    migrate_on_start: bool = True
    batch_max: int = Field(default=500, ge=1, le=10_000)
    batch_wait: float = Field(default=0.005, ge=0)
    max_record_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # How often ingest reads the handler registry to push a changed operator roster.
    roster_poll: float = Field(default=2.0, gt=0)
    # How often the hub-broker service checks that the CRL has more than half its life left.
    crl_check_seconds: float = Field(default=60.0, gt=0, le=3600)
