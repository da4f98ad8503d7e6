"""The ``[wipe]`` section of the device config (pydantic only, to avoid import cycles).

Every place a session's data can land on a tablet is a path here, so tests point the whole
residue catalogue at temporary directories and a device image points it at its own layout.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from fieldkit.models import Section


class WipeSection(Section):
    # Evidence store (hash-chained erasure records; no personal data) and the device key.
    state_dir: Path = Path("/var/lib/fieldkit/wipe")
    # Ed25519 private key (PKCS#8 PEM) that signs erasure records and certificates. Created
    # with mode 0600 on first use when missing; the kit PKI may provision it instead.
    device_key: Path = Path("/etc/fieldkit/keys/device-ed25519.pem")
    # How long every holder has to answer the forget broadcast before the record fails.
    holder_timeout: float = Field(default=5.0, gt=0, le=120)
    # tmpfs folders where services may keep per-session files in ``<folder>/<sid>/`` (the
    # kiosk's default: <bus.runtime_dir>/sessions).
    session_dirs: list[Path] = [Path("/run/fieldkit/sessions")]
    # The kiosk browser's profile and cache, where Chromium keeps them for the image's kiosk
    # user (both tmpfs, policies/erasure.yaml); emptied after every session.
    browser_profile: Path | None = Path("/home/kiosk/.config/chromium")
    browser_cache: Path | None = Path("/home/kiosk/.cache")
    # The kiosk browser is a holder too: it is stopped before its profile is emptied and
    # started again on the empty one, so nothing it held in memory is written back. Empty
    # lists: the browser is not managed by this device (development, tests).
    browser_stop: list[str] = ["systemctl", "stop", "fieldkit-kiosk-browser.service"]
    browser_start: list[str] = ["systemctl", "start", "fieldkit-kiosk-browser.service"]
    browser_timeout: float = Field(default=20.0, gt=0, le=120)
    # cupsd read the session's documents through its own memory (its read buffer is on its
    # stack, found there by the memory scan): restarted once the printing service has purged
    # the session's jobs. Empty: the printing service runs its own cupsd and restarts it
    # itself (development), or no cupsd is the device's.
    cups_restart: list[str] = ["systemctl", "try-restart", "cups.service"]
    cups_spool_dirs: list[Path] = [Path("/var/spool/cups")]
    cups_cache_dirs: list[Path] = [Path("/var/cache/cups")]
    journal_dirs: list[Path] = [Path("/var/log/journal"), Path("/run/log/journal")]
    # Scanned, never erased: what is in a temporary folder may be anyone's, and a finding there
    # fails the record. On a development machine these must be the kit's own (etc/dev-tablet.toml).
    temp_dirs: list[Path] = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm")]  # noqa: S108
    core_dump_dirs: list[Path] = [Path("/var/lib/systemd/coredump"), Path("/var/crash")]
    swaps_file: Path = Path("/proc/swaps")
    broker_persistence: list[Path] = [Path("/var/lib/mosquitto")]
    outbox_dirs: list[Path] = [Path("/var/lib/fieldkit/outbox")]
    # Processes whose memory is scanned: a /proc/<pid>/cmdline containing one of these...
    process_patterns: list[str] = ["fieldkit"]
    # ...and the kit's broker: a mosquitto whose command line names one of these config files
    # (``fieldkit.broker.LocalBroker`` writes <[bus] runtime_dir>/broker/mosquitto.conf; the
    # image's mosquitto.service runs on /etc/mosquitto/mosquitto.conf). Another mosquitto on
    # the machine is not the kit's and is not read. Relative paths: from the working directory.
    broker_configs: list[Path] = [
        Path("/run/fieldkit/broker/mosquitto.conf"),
        Path("/etc/mosquitto/mosquitto.conf"),
    ]
    scan_process_memory: bool = True
    # `fieldkit wipe device` on a tablet stops every fieldkit service before it reads the
    # evidence chain and releases the encrypted data volume (fieldkit.wipe.datavol). None: the
    # units of the services registered for the device's role, and the kiosk browser. Not a
    # glob over fieldkit-*: that would stop the data volume's own units, and with them the
    # volume, before its chain and key are read.
    stop_services: list[str] | None = None
    # How long the scan of one location may take (seconds): in the daily / boot scan and the
    # compliance run, and after a session wipe's erasing (which must end within a second or
    # so). What is left unscanned when it runs out fails the location ("incomplete"), never
    # passes as clean.
    location_budget_seconds: float = Field(default=20.0, gt=0, le=3600)
    session_location_budget_seconds: float = Field(default=2.0, gt=0, le=600)
    # The whole-catalogue scan for any applicant's data: once at start, then every N hours.
    boot_scan: bool = True
    daily_scan_hours: float = Field(default=24.0, gt=0)
    # Erasure records go to sync's outbox by request, oldest first; while sync has not taken
    # them (not running, outbox full), they are offered again this often (seconds).
    handover_retry: float = Field(default=30.0, gt=0)
    handover_timeout: float = Field(default=5.0, gt=0)
    # Files are streamed through the scanner in chunks of this size.
    chunk_bytes: int = Field(default=1 << 20, ge=4096)
    # Files larger than this are scanned up to this size only (and reported as truncated).
    max_file_bytes: int = Field(default=1 << 30, ge=1)

    @field_validator("broker_configs")
    @classmethod
    def _absolute(cls, paths: list[Path]) -> list[Path]:
        # Compared with the broker's argv, which names its config by absolute path.
        return [path.absolute() for path in paths]
