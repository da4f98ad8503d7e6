"""A tablet's residue catalogue laid out in a temporary directory, and ways to plant residue."""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from fieldkit.config import DeviceConfig, load_config
from fieldkit.registry import ServiceSpec
from fieldkit.runner import ServiceContext, start_service
from fieldkit.wipe.service import Wiper, install
from tests.antivirus_fixtures import fresh_definitions
from tests.conftest import write_config

SID = "5e55101d" * 4
APPLICATION_ID = "20123456789012345678901"  # synthetic, 23 digits
OTHER_ID = "20999999999999999999999"  # synthetic: another applicant's


@dataclass(frozen=True)
class Layout:
    root: Path

    def __getattr__(self, name: str) -> Path:
        return self.root / name


# How long each holder has to answer the wipe's forget in the test kits: they answer within
# milliseconds on an idle machine; under a loaded CI (load 13 on 2 cores) the kiosk once took
# longer than 2 s and the record failed (closed, as it should).
HOLDER_TIMEOUT = 8.0


def wipe_body(root: Path, process_tag: str) -> str:
    d = root
    return f"""
        [wipe]
        state_dir = "{d / "state"}"
        device_key = "{d / "keys" / "device.pem"}"
        holder_timeout = {HOLDER_TIMEOUT}
        session_dirs = ["{d / "run-session"}"]
        browser_profile = "{d / "profile"}"
        browser_cache = "{d / "browser-cache"}"
        browser_stop = []
        browser_start = []
        cups_restart = []
        cups_spool_dirs = ["{d / "spool-cups"}"]
        cups_cache_dirs = ["{d / "cache-cups"}"]
        journal_dirs = ["{d / "journal"}"]
        temp_dirs = ["{d / "tmp"}", "{d / "var-tmp"}", "{d / "shm"}"]
        core_dump_dirs = ["{d / "coredump"}"]
        swaps_file = "{d / "swaps"}"
        broker_persistence = ["{d / "mosquitto"}"]
        outbox_dirs = ["{d / "outbox"}"]
        process_patterns = ["{process_tag}"]
        chunk_bytes = 4096
        boot_scan = false
        # Other tests share this machine's two cores: a wider scan budget per location than a
        # tablet's 2 s, as tests/devkit.py gives (a budget that runs out still fails the record).
        session_location_budget_seconds = 15.0
        """


def catalogue_dirs(tmp_path: Path) -> tuple[Path, str]:
    """Every catalogue location as an empty folder under ``tmp_path/dev``, and a process tag."""
    root = tmp_path / "dev"
    for name in (
        "run-session", "profile", "browser-cache", "spool-cups", "cache-cups", "journal", "tmp",
        "var-tmp", "shm", "coredump", "mosquitto", "outbox",
    ):  # fmt: skip
        (root / name).mkdir(parents=True)
    (root / "swaps").write_text("Filename\tType\tSize\tUsed\tPriority\n")
    return root, f"fieldkit-wipe-test-{secrets.token_hex(6)}"


def make_device(tmp_path: Path) -> tuple[DeviceConfig, Path, str]:
    """A config whose catalogue lives under ``tmp_path/dev``; every folder exists and is empty."""
    root, tag = catalogue_dirs(tmp_path)
    # The kiosk's session gate asks the antivirus service: give it fresh definitions.
    body = wipe_body(root, tag) + fresh_definitions(tmp_path)
    return load_config(write_config(tmp_path, body)), root, tag


def plant_everywhere(root: Path, sid: str, secret: bytes) -> dict[str, Path]:
    """One residue in every file location of the catalogue, the way each would hold it."""
    planted: dict[str, Path] = {}
    session = root / "run-session" / sid
    session.mkdir(parents=True, exist_ok=True)
    planted["session-tmpfs"] = session / "photo.jpg"
    planted["session-tmpfs"].write_bytes(b"\xff\xd8" + secret + b"\xff\xd9")

    profile = root / "profile" / "Default"
    profile.mkdir(parents=True, exist_ok=True)
    web_data = profile / "Web Data"
    with sqlite3.connect(web_data) as db:
        db.execute("CREATE TABLE IF NOT EXISTS autofill (name TEXT, value BLOB)")
        db.execute("INSERT INTO autofill VALUES (?, ?)", ("application_id", secret))
    planted["browser-profile"] = web_data
    storage = profile / "Local Storage" / "leveldb"
    storage.mkdir(parents=True, exist_ok=True)
    (storage / "000003.log").write_bytes(
        b"\x00\x01META" + secret.decode("latin-1").encode("utf-16-le")
    )

    spool = root / "spool-cups"
    planted["cups-spool"] = spool / "d00042-001"
    planted["cups-spool"].write_bytes(b"%PDF-1.7\n" + secret + b"\n%%EOF")
    (spool / "c00042").write_bytes(b"job-name " + secret)

    planted["cups-cache"] = root / "cache-cups" / "job.cache"
    planted["cups-cache"].write_bytes(b"<Job 42>\njob-name " + secret + b"\n</Job>\n")
    planted["journald"] = root / "journal" / "system.journal"
    planted["journald"].write_bytes(b"LPKSHHRH" + bytes(200) + b"MESSAGE=" + secret)
    planted["temp"] = root / "var-tmp" / "render-1234.tmp"
    planted["temp"].write_bytes(b"x" * 5000 + secret)
    planted["core-dumps"] = root / "coredump" / "core.python3.1234.zst"
    planted["core-dumps"].write_bytes(b"\x7fELF" + bytes(100) + secret)
    planted["broker-persistence"] = root / "mosquitto" / "mosquitto.db"
    planted["broker-persistence"].write_bytes(b"\x00\xb5\x00mosquitto db" + secret)
    planted["outbox"] = root / "outbox" / "outbox.sqlite-journal"
    planted["outbox"].write_bytes(bytes(512) + secret)
    return planted


def start_wipe(config: DeviceConfig, expected: list[str]) -> tuple[ServiceContext, Wiper]:
    """The wipe service on the bus, waiting for ``expected`` holders to forget a session."""
    made: list[Wiper] = []

    def setup(ctx: ServiceContext) -> None:
        made.append(install(ctx, Wiper(ctx.config.wipe, ctx.config.device.id, None, expected)))

    spec = ServiceSpec(name="wipe", summary="wipe under test", setup=setup)
    ctx = start_service(spec, config)
    return ctx, made[0]
