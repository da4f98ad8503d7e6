"""The ``[enrol]`` config section: the tablet's pinned kit CA, and the hub's EST server."""

from pathlib import Path

from pydantic import Field

from fieldkit.models import Section, SiteNetwork


class EnrolSection(Section):
    # Tablet: the kit CA certificate, baked into the image by provisioning. The hub's TLS
    # certificate must chain to it, or enrolment is refused.
    ca_cert: Path = Path("/etc/fieldkit/kit-ca.crt")
    # Tablet: the kiosk shows its enrolment screen while the tablet is not enrolled (the
    # tablet image sets this; development kits enrol from the command line).
    kiosk_screen: bool = False
    # Hub: where the EST server listens (TLS with the hub's server certificate).
    listen_host: str = "0.0.0.0"  # noqa: S104 (the tablets reach it over the kit network)
    listen_port: int = Field(default=8443, ge=0, le=65535)
    # Hub: what a tablet is told at enrolment. Empty broker_host: [hub] server_name.
    broker_host: str = ""
    broker_port: int = Field(default=0, ge=0, le=65535)
    antivirus_mirror: str | None = None
    application_hosts: list[str] = ["app.net.kojinbango-card.go.jp"]
    # Hub: the site network every tablet of this kit is given (addresses, not names; the
    # tablet's firewall allows exactly these: docs/network.md). None: none is handed out.
    site_network: SiteNetwork | None = None
    # Hub: the admin's site file (``fieldkit hub site``), laid over the four settings above at
    # every enrolment (fieldkit.hub.site). The hub image names it; absent, they stand as set.
    site_file: Path | None = None
    # Codes: default validity, wrong secrets before a code is spent, and wrong codes per
    # client address in a window before the address must wait.
    code_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    code_failures: int = Field(default=5, ge=1, le=100)
    address_failures: int = Field(default=10, ge=1, le=1000)
    address_window_seconds: float = Field(default=900.0, gt=0)
