"""The antivirus policy: where definitions come from, how old they may be, what is scanned.

Only pydantic is imported here, so ``fieldkit.config`` can include this section without cycles.
The same model validates ``policies/antivirus.toml`` (the image build's source of truth) and the
``[antivirus]`` section of a device config.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fieldkit.models import Section

OfficialDatabase = Literal["main", "daily", "bytecode"]
OFFICIAL_DATABASES: tuple[OfficialDatabase, ...] = ("main", "daily", "bytecode")
# Names freshclam accepts for a database file fetched by DatabaseCustomURL, and that we can date
# (containers carry a build time in their header; plain signature files do not).
DATED_SUFFIXES = (".cvd", ".cld", ".cud")
_DATABASE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,60}\.(cvd|cld|cud|ndb|hdb|hsb|ldb|ndu|ldu)$"


class AntivirusSection(Section):
    """Antivirus policy for one device (R10)."""

    # The hub's definitions mirror, e.g. "https://hub.fieldkit.lan:8081" (HTTPS only: the kit's
    # own database is not signed, the channel vouches for it). None: updates are off (freshclam
    # is never run, so it can never fall back to ClamAV's public network).
    mirror_url: str | None = None
    # The only CA freshclam trusts for the mirror (passed as CURL_CA_BUNDLE): the kit CA the
    # tablet image carries (the one its enrolment pins, [enrol] ca_cert).
    mirror_ca: Path = Path("/etc/fieldkit/kit-ca.crt")
    # Official databases the hub mirrors with cvdupdate; the rest are excluded.
    official_databases: list[OfficialDatabase] = list(OFFICIAL_DATABASES)
    # The kit's own signature databases, fetched as <mirror_url>/<name> (DatabaseCustomURL).
    custom_databases: list[str] = ["fieldkit.cud"]
    checks_per_day: int = Field(default=24, ge=1, le=50)
    max_definitions_age_hours: float = Field(default=48.0, gt=0)
    # Writable areas scanned daily and on request. Empty: no scheduled scan.
    scan_paths: list[Path] = []
    scan_interval_hours: float = Field(default=24.0, gt=0)
    # A scan that found something blocks sessions until a later scan of the scope is clean.
    block_on_findings: bool = True
    update_on_start: bool = True
    # None: <bus.runtime_dir>/antivirus/... (development). Images set /var/lib/clamav and a
    # persistent state directory.
    database_dir: Path | None = None
    state_dir: Path | None = None
    # User freshclam drops to when started as root. None: the user running the service.
    database_owner: str | None = None
    # clamd.conf of a running clamd to notify after an update (NotifyClamd). None: no clamd.
    clamd_conf: Path | None = None
    freshclam: str = "freshclam"
    clamscan: str = "clamscan"
    connect_timeout: int = Field(default=10, ge=1, le=300)
    # freshclam waits 5 s between attempts on a mirror.
    max_attempts: int = Field(default=2, ge=1, le=10)
    receive_timeout: int = Field(default=300, ge=0, le=3600)
    freshclam_timeout: float = Field(default=600.0, gt=0)
    scan_timeout: float = Field(default=3600.0, gt=0)

    @field_validator("mirror_url")
    @classmethod
    def _https_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith("https://") or any(c.isspace() for c in url):
            raise ValueError("mirror_url must be an https:// URL without spaces")
        return url.rstrip("/")

    @field_validator("custom_databases")
    @classmethod
    def _database_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not re.match(_DATABASE_NAME, n)]
        if bad:
            raise ValueError(
                f"{len(bad)} custom database name(s) are not a plain ClamAV database file name "
                "(letters, digits, . _ -; ending .cud, .cvd, .ndb, .hdb, ...)"
            )
        return names

    @field_validator("database_dir", "state_dir", "clamd_conf", "mirror_ca")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None


class MirrorSection(Section):
    """The hub's definitions mirror (the ``av-mirror`` hub service)."""

    directory: Path = Path("/var/lib/fieldkit/av-mirror")
    # The tablets reach it over the kit's network; the development hub serves on loopback.
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    # HTTPS only. None: the hub's server certificate and key in its kit PKI
    # (<[hub] pki>/hub/server.crt and server.key), as the broker and the enrolment server use.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # cvdupdate, which fills the directory with the official databases (`fieldkit av mirror
    # update`): its program (None: the cvd beside this Python, the hub's venv) and its own
    # folder (config, state, logs, the last outcome).
    cvd: str | None = None
    cvd_state_dir: Path = Path("/var/lib/fieldkit/cvdupdate")

    @field_validator("directory")
    @classmethod
    def _absolute_directory(cls, path: Path) -> Path:
        return path.absolute()

    @field_validator("tls_cert", "tls_key", "cvd_state_dir")
    @classmethod
    def _absolute_tls(cls, path: Path | None) -> Path | None:
        return path.absolute() if path is not None else None
