"""The shared leaf every model builds on: the two strict bases, the kit's ID patterns, and how a
validation error is told. It imports nothing of fieldkit, so any module may import it.

- ``Strict``: frozen, unknown keys refused — bus messages, records, policies, reports.
- ``Section``: unknown keys refused, not frozen — a config section (``[capture]``, …), so a
  typo in ``device.toml`` is an error, not a silently ignored setting.
- ``SESSION_ID_PATTERN``: an applicant session's ID as the kiosk makes it (128 random bits,
  hex); every service's messages hold the same rule.
- ``RECORD_ID_PATTERN``: a record's ID (outbox, hub, evidence, certificates).
- ``OPERATOR_ID_PATTERN``: a counter operator's ID.
- ``describe_validation_error``: one ``key: what is wrong`` per problem, never the value
  (a value may be personal data).
- ``read_toml_model``: a TOML file validated by a model, every problem one clear error.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SESSION_ID_PATTERN = r"^[0-9a-f]{32}$"
RECORD_ID_PATTERN = r"^[0-9a-f]{32}$"
# A counter operator's ID (the kiosk's roster and the hub's, which sync carries down).
OPERATOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def problem_keys(error: ValidationError, top: str = "(top level)") -> list[str]:
    """The dotted key of each problem, in order."""
    problems = error.errors(include_input=False, include_url=False)
    return [".".join(str(part) for part in p["loc"]) or top for p in problems]


def describe_validation_error(
    error: ValidationError, *, prefix: str = "", top: str = "(top level)"
) -> str:
    """One ``key: what is wrong`` per problem, joined by "; ". Never the offending value."""
    problems = error.errors(include_input=False, include_url=False)
    keys = problem_keys(error, top)
    return "; ".join(f"{prefix}{key}: {p['msg']}" for key, p in zip(keys, problems, strict=True))


Model = TypeVar("Model", bound=BaseModel)


def read_toml_model(
    path: Path,
    model: type[Model],
    *,
    what: str,
    error: Callable[[str], Exception],
    table: str | None = None,
) -> Model:
    """``path`` (TOML, or its ``[table]``) validated by ``model``. A missing file raises
    FileNotFoundError for the caller to word; an unreadable file, bad TOML or a value the model
    refuses raises ``error("<what> <path> ...")`` naming the keys, never the values."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is unreadable: {exc}") from None
    try:
        return model.model_validate(raw.get(table, {}) if table is not None else raw)
    except ValidationError as exc:
        raise error(f"{what} {path}: {describe_validation_error(exc)}") from None


# --- the site's network, handed to a tablet at enrolment (fieldkit.network applies it) ------


def ip_address_text(text: str, *, network: bool = False) -> str:
    try:
        parsed = ipaddress.ip_network(text, strict=True) if network else ipaddress.ip_address(text)
    except ValueError:
        kind = "an IP address or network" if network else "an IP address"
        raise ValueError(f"{text!r} is not {kind} (names are not allowed)") from None
    if isinstance(parsed, ipaddress.IPv4Network | ipaddress.IPv6Network) and not parsed.prefixlen:
        raise ValueError("an allowlist entry may not be the whole address space")
    return text


class Wifi(Strict):
    ssid: str = Field(min_length=1, max_length=32)
    # WPA2/WPA3-Personal: 8 to 63 printable ASCII characters (IEEE 802.11i).
    passphrase: str = Field(min_length=8, max_length=63, repr=False)

    @field_validator("ssid")
    @classmethod
    def _ssid(cls, ssid: str) -> str:
        if len(ssid.encode("utf-8")) > 32 or any(ord(c) < 32 for c in ssid):
            raise ValueError("an SSID is at most 32 bytes, without control characters")
        return ssid

    @field_validator("passphrase")
    @classmethod
    def _passphrase(cls, passphrase: str) -> str:
        if not all(32 <= ord(c) < 127 for c in passphrase):
            raise ValueError("a WPA passphrase is printable ASCII only")
        return passphrase


class SiteNetwork(Strict):
    """The site's addresses, from the enrolment (the hub's device config for this tablet)."""

    hub: str
    dns: list[str] = Field(min_length=1, max_length=4)
    time: list[str] = Field(min_length=1, max_length=4)
    official_application_host: list[str] = Field(min_length=1, max_length=16)
    printer: list[str] = Field(default_factory=list, max_length=4)
    wifi: Wifi | None = None

    @field_validator("hub")
    @classmethod
    def _hub(cls, value: str) -> str:
        return ip_address_text(value)

    @field_validator("dns", "time", "printer")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        return [ip_address_text(v) for v in values]

    @field_validator("official_application_host")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        return [ip_address_text(v, network=True) for v in values]

    def addresses(self, role: str) -> list[str]:
        value = getattr(self, role)
        return [value] if isinstance(value, str) else list(value)


# The file the enrolment writes into the enrolment directory (``[sync] bundle``), 0600: it
# may hold the site's Wi-Fi passphrase.
SITE_NETWORK_FILE = "site-network.toml"


def site_network_toml(site: SiteNetwork) -> str:
    """The site network as the TOML file the enrolment writes (read back by ``load_site``)."""

    def text(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    def array(values: list[str]) -> str:
        return "[" + ", ".join(text(v) for v in values) + "]"

    lines = [
        f"hub = {text(site.hub)}",
        f"dns = {array(site.dns)}",
        f"time = {array(site.time)}",
        f"official_application_host = {array(site.official_application_host)}",
        f"printer = {array(site.printer)}",
    ]
    if site.wifi is not None:
        lines += [
            "[wifi]",
            f"ssid = {text(site.wifi.ssid)}",
            f"passphrase = {text(site.wifi.passphrase)}",
        ]
    return "\n".join(lines) + "\n"
