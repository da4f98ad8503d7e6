"""The device config: one typed, validated TOML file with environment overrides.

Precedence: environment (``FIELDKIT_<SECTION>__<KEY>``) over the TOML file over defaults.
A bad config fails at start with a message naming the key and the problem; values are
never echoed, because a config may hold secrets.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from fieldkit.antivirus.settings import AntivirusSection, MirrorSection
from fieldkit.capture.settings import CaptureSection
from fieldkit.card.settings import CardSection
from fieldkit.enrolment.settings import EnrolSection
from fieldkit.hub.settings import HubSection
from fieldkit.hub.web.settings import HubWebSection
from fieldkit.kiosk.settings import KioskSection
from fieldkit.models import Section, describe_validation_error
from fieldkit.printing.settings import PrintingSection
from fieldkit.sync.settings import SyncSection
from fieldkit.wipe.settings import WipeSection

DEFAULT_CONFIG_PATH = Path("/etc/fieldkit/device.toml")
CONFIG_ENV = "FIELDKIT_CONFIG"

# Identifiers that end up in MQTT topics, client ids and certificate CNs.
NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ConfigError(Exception):
    """The device config is missing, unreadable or invalid; the message says where and why."""


class DeviceSection(Section):
    id: str = Field(pattern=NAME_PATTERN, description="Device id; topic prefix and certificate CN.")
    role: Literal["tablet", "hub"] = "tablet"
    site: str = Field(default="", max_length=200)


class BusSection(Section):
    host: str = "127.0.0.1"
    # 0 asks the broker launcher to pick a free loopback port and publish it in the runtime dir.
    port: int = Field(default=18830, ge=0, le=65535)
    socket: Path | None = None
    runtime_dir: Path = Path("/run/fieldkit")
    launch_broker: bool = True
    keepalive: int = Field(default=10, ge=2, le=600)
    max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)

    @field_validator("host")
    @classmethod
    def _loopback_only(cls, host: str) -> str:
        # The tablet's bus never leaves the device (architecture §4); a routable host is a mistake.
        if host not in {"127.0.0.1", "::1", "localhost"} and not host.startswith("127."):
            raise ValueError("the local bus must be on loopback (127.0.0.0/8, ::1 or localhost)")
        return host

    @field_validator("runtime_dir", "socket")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Children and mosquitto must agree on these paths whatever their working directory.
        return path.absolute() if path is not None else None


class RunnerSection(Section):
    services: list[str] | None = Field(
        default=None, description="Services to run; default: every registered service for the role."
    )
    backoff_initial: float = Field(default=1.0, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    stable_after: float = Field(default=60.0, gt=0)
    stop_timeout: float = Field(default=10.0, gt=0)
    scrub_freed_memory: bool = Field(
        default=True,
        description=(
            "Run the broker and every service with freed memory overwritten (PYTHONMALLOC=malloc,"
            " glibc perturb, no tcache), so a session's data does not outlive its forget."
        ),
    )
    # A service whose work thread has not answered its own ping for this long is killed and
    # restarted (fieldkit.watchdog); the images' units get it as WatchdogSec=. 0 turns it off.
    watchdog_seconds: float = Field(default=20.0, ge=0)


class DeviceConfig(BaseSettings):
    """Everything a device needs to know about itself, validated at start."""

    model_config = SettingsConfigDict(
        env_prefix="FIELDKIT_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    device: DeviceSection
    bus: BusSection = BusSection()
    runner: RunnerSection = RunnerSection()
    kiosk: KioskSection = KioskSection()
    antivirus: AntivirusSection = AntivirusSection()
    av_mirror: MirrorSection = MirrorSection()
    capture: CaptureSection = CaptureSection()
    printing: PrintingSection = PrintingSection()
    card: CardSection = CardSection()
    wipe: WipeSection = WipeSection()
    sync: SyncSection = SyncSection()
    hub: HubSection = HubSection()
    hubweb: HubWebSection = HubWebSection()
    enrol: EnrolSection = EnrolSection()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs; the environment overrides it.
        return (env_settings, init_settings)


def config_path(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit
    return Path(os.environ.get(CONFIG_ENV, DEFAULT_CONFIG_PATH))


ENROLMENT_FILE = "enrolment.toml"


def with_enrolment(raw: dict[str, Any]) -> dict[str, Any]:
    """The file's settings with what enrolment wrote laid over them (device id, site, hub
    address, mirror, application hosts: ``<[sync] bundle>/enrolment.toml``, from the hub)."""
    sync = raw.get("sync")
    named = sync.get("bundle") if isinstance(sync, dict) else None
    bundle = Path(os.environ.get("FIELDKIT_SYNC__BUNDLE") or named or "/etc/fieldkit/bundle")
    try:
        enrolled = tomllib.loads((bundle / ENROLMENT_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return raw
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"enrolment file {bundle / ENROLMENT_FILE} is unreadable: {exc}"
        ) from None
    merged = dict(raw)
    for section, values in enrolled.items():
        if isinstance(values, dict):
            merged[section] = {**merged.get(section, {}), **values}
    return merged


def load_config(path: Path | None = None) -> DeviceConfig:
    """Read, merge with the environment, and validate the device config."""
    source = config_path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {source} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {source} is not readable") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {source} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {source} is not UTF-8 text") from None
    raw = with_enrolment(raw)
    try:
        return DeviceConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(f"config {source}: {describe_validation_error(exc)}") from None
