"""Declarative device policies: one source of truth for the image build and the compliance run.

The files in ``policies/`` (browser, erasure, network, usb, services) are loaded into closed,
versioned models and rendered into the files a device needs: Chromium's managed policy, the
nftables ruleset, USBGuard rules, journald/coredump/sysctl drop-ins, tmpfs mount units and one
sandboxed systemd unit per fieldkit service. The Ansible roles install exactly these
renderings (``fieldkit policy vars``), and the image tests compare what is installed with a
fresh rendering, so the build and the check cannot drift apart.

The settings that a requirement forbids (saving passwords or form data, core dumps, swap, a
default-accept firewall) are typed as constants: a policy file that tries to switch them on
does not load, and the error names the key.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fieldkit import datavol
from fieldkit.antivirus.settings import AntivirusSection
from fieldkit.bus import CREDENTIALS_DIR, bus_credential_name
from fieldkit.config import BusSection, RunnerSection
from fieldkit.models import Strict, describe_validation_error, read_toml_model
from fieldkit.processes import scrubbing_environment

POLICY_DIR_ENV = "FIELDKIT_POLICIES"
INSTALLED_POLICY_DIR = Path("/etc/fieldkit/policies")
KINDS = ("browser", "erasure", "network", "usb", "services")

BROWSER_POLICY_PATH = PurePosixPath("/etc/chromium/policies/managed/fieldkit.json")
NFTABLES_PATH = PurePosixPath("/etc/nftables.conf")
WIRED_NETWORK_PATH = PurePosixPath("/etc/systemd/network/20-fieldkit-wired.network")
WIRELESS_NETWORK_PATH = PurePosixPath("/etc/systemd/network/25-fieldkit-wireless.network")
IWD_MAIN_PATH = PurePosixPath("/etc/iwd/main.conf")
USBGUARD_RULES_PATH = PurePosixPath("/etc/usbguard/rules.conf")

# A USB interface triple "class:subclass:protocol", each two hex digits or "*".
_USB_INTERFACE = re.compile(r"^[0-9a-f]{2}:([0-9a-f]{2}|\*):([0-9a-f]{2}|\*)$")
# systemd directive names, and values that cannot smuggle a second line into a unit file.
_DIRECTIVE = re.compile(r"^[A-Z][A-Za-z]+$")
_SIZE = re.compile(r"^[0-9]+[KMG]$")


class PolicyError(Exception):
    """A policy file is missing, unreadable or invalid; the message names the file and key."""


class Policy(Strict):
    version: Literal[1] = 1


# --- browser (R11, R17) ---------------------------------------------------------------


class BrowserMemory(Policy):
    """What the browser may remember between applicants: nothing (R11)."""

    passwords: Literal[False] = False
    addresses: Literal[False] = False
    payment_cards: Literal[False] = False
    browsing_history: Literal[False] = False


class BrowserFeatures(Policy):
    """Browser features that leak data or let an applicant leave the kiosk; all off by default."""

    search_suggestions: bool = False
    default_search_provider: bool = False
    incognito: bool = False
    guest_mode: bool = False
    browser_signin: bool = False
    sync: bool = False
    translate: bool = False
    spellcheck_service: bool = False
    network_prediction: bool = False
    metrics_reporting: bool = False
    background_mode: bool = False
    developer_tools: bool = False
    downloads: bool = False
    password_leak_detection: bool = False


ClearType = Literal[
    "browsing_history",
    "download_history",
    "cookies_and_other_site_data",
    "cached_images_and_files",
    "password_signin",
    "autofill",
    "site_settings",
    "hosted_app_data",
]
ALL_CLEAR_TYPES: tuple[ClearType, ...] = get_args(ClearType)


class BrowserPolicy(Policy):
    kind: Literal["browser"] = "browser"
    kiosk_url: str
    allowed_urls: list[str] = Field(min_length=1)
    remember: BrowserMemory = BrowserMemory()
    features: BrowserFeatures = BrowserFeatures()
    clear_on_exit: list[ClearType] = Field(default_factory=lambda: list(ALL_CLEAR_TYPES))

    @field_validator("kiosk_url")
    @classmethod
    def _kiosk_on_loopback(cls, url: str) -> str:
        # The kiosk UI is served by the tablet itself (architecture §1); anything else is a typo.
        if not re.match(r"^http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?/", url):
            raise ValueError("kiosk_url must be an http:// URL on loopback")
        return url

    @field_validator("allowed_urls")
    @classmethod
    def _no_wildcards(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if "*" in url or not url.strip() or any(c.isspace() for c in url):
                raise ValueError("allowed_urls entries must be plain URLs or hosts, no wildcards")
        return urls

    @field_validator("clear_on_exit")
    @classmethod
    def _clear_everything(cls, types: list[ClearType]) -> list[ClearType]:
        missing = sorted(set(ALL_CLEAR_TYPES) - set(types))
        if missing:
            raise ValueError(f"clear_on_exit must list every type; missing {', '.join(missing)}")
        return types


# --- erasure (R6, R12) ---------------------------------------------------------------


class Journald(Policy):
    storage: Literal["volatile", "none"] = "volatile"
    runtime_max_use: str = Field(default="32M", pattern=_SIZE.pattern)


class TmpfsMount(Policy):
    path: PurePosixPath
    size: str = Field(pattern=_SIZE.pattern)
    mode: str = Field(pattern=r"^[0-7]{4}$")
    # Owner of the mounted directory, set by systemd-tmpfiles after the mount at boot.
    owner: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_-]{0,30}$")

    @field_validator("path")
    @classmethod
    def _absolute_clean(cls, path: PurePosixPath) -> PurePosixPath:
        if not path.is_absolute() or ".." in path.parts or str(path) == "/":
            raise ValueError("tmpfs path must be an absolute path below /")
        return path


class CupsRetention(Policy):
    preserve_job_history: Literal[False] = False
    preserve_job_files: Literal[False] = False


class ErasurePolicy(Policy):
    kind: Literal["erasure"] = "erasure"
    journald: Journald = Journald()
    core_dumps: Literal[False] = False
    swap: Literal[False] = False
    tmpfs: list[TmpfsMount] = Field(min_length=1)
    cups: CupsRetention = CupsRetention()
    # What must survive a reboot lives on one LUKS2 volume whose key the TPM holds (tablet).
    data_volume: datavol.DataVolume | None = None

    @model_validator(mode="after")
    def _tmp_is_tmpfs(self) -> ErasurePolicy:
        paths = [str(m.path) for m in self.tmpfs]
        if "/tmp" not in paths:  # noqa: S108 - the mount point itself, not a temp file
            raise ValueError("tmpfs must include /tmp")
        if len(set(paths)) != len(paths):
            raise ValueError("tmpfs lists a path twice")
        if self.data_volume is not None:
            on_volume = {str(d.path) for d in self.data_volume.directories}
            both = on_volume & set(paths)
            if both:
                raise ValueError(f"{', '.join(sorted(both))}: both memory-only and persistent")
        return self


# --- network (R16) -------------------------------------------------------------------


# Which address of the site's network (set at enrolment, ``fieldkit.network.SiteNetwork``)
# a rule takes on a fielded device; the addresses in the policy file are the build's defaults.
# On the hub, the office's (``fieldkit.office.OfficeNetwork``): dns, time and proxy.
SiteRole = Literal["hub", "dns", "time", "official_application_host", "printer", "proxy"]
TABLET_SITE_ROLES = frozenset({"hub", "dns", "time", "official_application_host", "printer"})
HUB_SITE_ROLES = frozenset({"dns", "time", "proxy"})


class NetworkRule(Policy):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    addresses: list[str] = Field(min_length=1)
    site: SiteRole | None = None
    protocol: Literal["tcp", "udp"]
    ports: list[int] = Field(min_length=1)

    @field_validator("addresses")
    @classmethod
    def _networks(cls, addresses: list[str]) -> list[str]:
        for address in addresses:
            try:
                network = ipaddress.ip_network(address, strict=True)
            except ValueError:
                raise ValueError("addresses must be IP addresses or networks (no names)") from None
            if network.prefixlen == 0:
                raise ValueError("an allowlist entry may not be the whole address space")
        return addresses

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        if any(not 1 <= p <= 65535 for p in ports):
            raise ValueError("ports must be 1-65535")
        return ports


class Listener(Policy):
    """A socket the device may listen on: on loopback only, by one named program."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,40}$")
    protocol: Literal["tcp", "udp"]
    port: int = Field(ge=1, le=65535)
    # The programs that may hold it, as /proc/<pid>/comm names them.
    programs: list[str] = Field(min_length=1)
    # Bound beyond loopback (the DHCP client's port on the link); everything else is loopback.
    beyond_loopback: bool = False


class HubNetwork(Policy):
    """The hub's own allowlist (issue 18): what may reach it (the tablets' broker, the web app,
    the enrolment, the antivirus mirror, the admin's SSH) and what it may reach."""

    inbound: list[NetworkRule] = Field(default_factory=list)
    outbound: list[NetworkRule] = Field(default_factory=list)
    # Everything that may listen on the hub (issue 19): its inbound services beyond loopback,
    # the rest on loopback; the booted hub's test checks it live.
    listening: list[Listener] = Field(default_factory=list)


class NetworkPolicy(Policy):
    kind: Literal["network"] = "network"
    default: Literal["drop"] = "drop"
    allow_dhcp: bool = True
    outbound: list[NetworkRule] = Field(default_factory=list)
    inbound: list[NetworkRule] = Field(default_factory=list)
    # Everything that may listen (issue 19): loopback only; the compliance run checks it live.
    listening: list[Listener] = Field(default_factory=list)
    hub: HubNetwork = HubNetwork()

    @model_validator(mode="after")
    def _unique_names(self) -> NetworkPolicy:
        names = [r.name for r in self._rules()]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        for rule in (*self.outbound, *self.inbound):
            if rule.site is not None and rule.site not in TABLET_SITE_ROLES:
                raise ValueError(
                    f"rule {rule.name}: site {rule.site!r} is the hub's, not a tablet's"
                )
        for rule in self.hub.inbound:
            if rule.site is not None:
                raise ValueError(f"hub.inbound rule {rule.name}: no site address for inbound rules")
        for rule in self.hub.outbound:
            # The hub reaches nothing the admin did not place: no fixed address to the world.
            if rule.site not in HUB_SITE_ROLES:
                raise ValueError(
                    f"hub.outbound rule {rule.name}: the hub reaches only the office's "
                    f"{', '.join(sorted(HUB_SITE_ROLES))} (set site: to one of them)"
                )
        return self

    def _rules(self) -> tuple[NetworkRule, ...]:
        return (*self.outbound, *self.inbound, *self.hub.inbound, *self.hub.outbound)

    def rule(self, name: str) -> NetworkRule:
        for rule in self._rules():
            if rule.name == name:
                return rule
        raise PolicyError(f"network policy has no rule named {name!r}")

    def is_hub_rule(self, name: str) -> bool:
        return any(r.name == name for r in (*self.hub.inbound, *self.hub.outbound))

    def for_role(self, role: str) -> NetworkPolicy:
        """The allowlist a device of ``role`` enforces: the hub's own lists on the hub."""
        if role != "hub":
            return self
        return self.model_copy(
            update={
                "inbound": self.hub.inbound,
                "outbound": self.hub.outbound,
                "listening": self.hub.listening,
            }
        )


# --- USB (R16, R23) ------------------------------------------------------------------


class UsbInterface(Policy):
    name: str = Field(min_length=1, max_length=80)
    interface: str = Field(pattern=_USB_INTERFACE.pattern)


class UsbPolicy(Policy):
    kind: Literal["usb"] = "usb"
    implicit_policy: Literal["block", "reject"] = "block"
    present_devices: Literal["apply-policy", "block", "reject"] = "apply-policy"
    block_interfaces: list[UsbInterface] = Field(min_length=1)
    allow_interfaces: list[UsbInterface] = Field(min_length=1)
    blacklist_modules: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _mass_storage_blocked(self) -> UsbPolicy:
        # R23: personal data must not leave on a stick; the one class that must never pass.
        if not any(i.interface.startswith("08:") for i in self.block_interfaces):
            raise ValueError("block_interfaces must block mass storage (08:*:*)")
        if any(i.interface.startswith("08:") for i in self.allow_interfaces):
            raise ValueError("allow_interfaces may not allow mass storage (08)")
        return self


# --- services (R28, R30) -------------------------------------------------------------

DirectiveValue = str | list[str]


def _check_directives(directives: Mapping[str, DirectiveValue]) -> None:
    for key, value in directives.items():
        if not _DIRECTIVE.match(key):
            raise ValueError(f"{key!r} is not a systemd directive name")
        for item in [value] if isinstance(value, str) else value:
            if "\n" in item or "\r" in item:
                raise ValueError(f"{key}: value must be one line")


# A path in an AppArmor rule: absolute, AppArmor's globbing (* ** ? {a,b} [..]) and variables.
_AA_PATH = r"^(/|@\{[A-Za-z_]+\})[A-Za-z0-9@{}*?,./_+:\[\]-]*$"


class AppArmorAccess(Policy):
    """What one service's AppArmor profile allows beyond what systemd makes writable for its
    unit (StateDirectory=, RuntimeDirectory=, ReadWritePaths=) and the interpreter's baseline
    (fieldkit.apparmor): each entry is a path rule; ``why`` says what the service does with it."""

    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)
    # Unix sockets it connects to (a connect is a write in AppArmor's file rules).
    connect: list[str] = Field(default_factory=list)
    # Programs it runs, inside its own profile (ix): they are bound by the same rules.
    run: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)
    capabilities: list[str] = Field(default_factory=list)
    # Messages on the system D-Bus (dbus-daemon mediates them by the sender's profile).
    dbus: bool = False
    # Reads other processes' memory (ptrace read and trace: the wipe's residue scan).
    ptrace: bool = False
    why: str = Field(default="", max_length=600)

    @field_validator("read", "write", "connect", "run", "devices")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not re.fullmatch(_AA_PATH, path):
                raise ValueError(f"{path!r} is not an absolute AppArmor path")
        return paths

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[a-z_]+", name):
                raise ValueError(f"{name!r} is not a capability name (dac_read_search)")
        return names


class ServiceOverride(Policy):
    directives: dict[str, DirectiveValue] = Field(default_factory=dict)
    # Issue 19: the service's AppArmor profile beyond its writable folders (fieldkit.apparmor).
    apparmor: AppArmorAccess = Field(default_factory=AppArmorAccess)
    # Names of network.yaml rules whose addresses this service may reach.
    network: list[str] = Field(default_factory=list)
    # A service that must run as another user (the wipe: root, to reach every catalogue place).
    user: str | None = Field(default=None, pattern=r"^[a-z_][a-z0-9_-]{0,30}$")
    # Its own exposure ceiling, when its job needs more than the baseline allows; ``why`` is
    # then required, and rendered into the unit for whoever reviews it.
    max_exposure: float | None = Field(default=None, gt=0, le=10)
    why: str = Field(default="", max_length=600)

    @model_validator(mode="after")
    def _justified(self) -> ServiceOverride:
        if (self.user is not None or self.max_exposure is not None) and not self.why.strip():
            raise ValueError("an override of user or max_exposure needs a 'why'")
        if "\n" in self.why:
            raise ValueError("why: one line")
        return self

    @field_validator("directives")
    @classmethod
    def _directives(cls, directives: dict[str, DirectiveValue]) -> dict[str, DirectiveValue]:
        _check_directives(directives)
        return directives


UNIT_NAME = r"[A-Za-z0-9@_.:\\-]+\.(service|socket|timer|target|path|mount)"


class ServicesPolicy(Policy):
    kind: Literal["services"] = "services"
    max_exposure: float = Field(gt=0, le=10)
    user: str = Field(pattern=r"^[a-z_][a-z0-9_-]{0,30}$")
    venv: PurePosixPath
    config: PurePosixPath
    sandbox: dict[str, DirectiveValue]
    overrides: dict[str, ServiceOverride] = Field(default_factory=dict)
    # Services that run as a Unix user of their own, ``<user>-<service>``, in the shared group
    # ``user``: they read the device's config and the enrolment's public files (group-readable)
    # but not the other services' keys, state or bus passwords (owner-only). Issue 17.
    own_users: list[str] = Field(default_factory=list)
    # Groups a few services share beside ``user``'s, group -> services (issue 17): the kiosk
    # makes the device's keys at enrolment and sync signs and connects with them, so the
    # enrolment folder (policies/erasure.yaml) is that pair's group, not every service's.
    shared_groups: dict[str, list[str]] = Field(default_factory=dict)
    # Groups that let services read what a root unit writes for them (one member or more):
    # the integrity reports, written by the integrity role's root units, read by sync alone.
    read_groups: dict[str, list[str]] = Field(default_factory=dict)
    # Issue 19: every other unit a device of the role may have enabled (the operating system's
    # own), unit name -> why. The booted tablet's test fails on any enabled unit that is not a
    # rendered fieldkit unit, an erasure mount or named here.
    system_units: dict[Literal["tablet", "hub"], dict[str, str]] = Field(default_factory=dict)

    @field_validator("system_units")
    @classmethod
    def _units_justified(cls, units: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for role, named in units.items():
            for unit, why in named.items():
                if not re.fullmatch(UNIT_NAME, unit):
                    raise ValueError(f"system_units.{role}: {unit!r} is not a unit name")
                if not why.strip() or "\n" in why:
                    raise ValueError(f"system_units.{role}.{unit}: say why, on one line")
        return units

    @field_validator("sandbox")
    @classmethod
    def _sandbox(cls, sandbox: dict[str, DirectiveValue]) -> dict[str, DirectiveValue]:
        _check_directives(sandbox)
        if sandbox.get("NoNewPrivileges") != "yes":
            raise ValueError("sandbox must set NoNewPrivileges=yes")
        return sandbox

    @model_validator(mode="after")
    def _users(self) -> ServicesPolicy:
        for name in self.own_users:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,20}", name):
                raise ValueError(f"own_users: {name!r} is not a service name")
            override = self.overrides.get(name)
            if override is not None and override.user:
                raise ValueError(f"own_users: {name} already runs as {override.user} (overrides)")
        for group, members in self.shared_groups.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", group) or group == self.user:
                raise ValueError(f"shared_groups: {group!r} is not a group name of its own")
            if len(set(members)) < 2:
                raise ValueError(f"shared_groups.{group}: name two services or more")
        for group, members in self.read_groups.items():
            if (
                not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", group)
                or group == self.user
                or group in self.shared_groups
            ):
                raise ValueError(f"read_groups: {group!r} is not a group name of its own")
            if not members:
                raise ValueError(f"read_groups.{group}: name the services that read")
        return self

    def user_of(self, service: str) -> str:
        """The Unix user a service's unit runs as."""
        override = self.overrides.get(service)
        if override is not None and override.user:
            return override.user
        if service in self.own_users:
            return f"{self.user}-{service}"
        return self.user

    def group_of(self, service: str) -> str:
        """Its primary group: the shared group, root's for a service that runs as root."""
        return "root" if self.user_of(service) == "root" else self.user

    def supplementary_groups(self, service: str) -> list[str]:
        """The shared groups a service's unit is given beside its primary group."""
        groups = {**self.shared_groups, **self.read_groups}
        return sorted(g for g, members in groups.items() if service in members)

    def shared_group_users(self) -> dict[str, list[str]]:
        """Each shared (and read) group with the Unix users of its services (for the image's
        groups)."""
        return {
            group: sorted({self.user_of(name) for name in members})
            for group, members in sorted({**self.shared_groups, **self.read_groups}.items())
        }

    def own_user_names(self) -> list[str]:
        """The users the image makes beside ``user`` (each in the group ``user``)."""
        return [f"{self.user}-{name}" for name in self.own_users]

    def ceiling(self, service: str) -> float:
        """The exposure a service's unit may rate at most."""
        override = self.overrides.get(service)
        if override is not None and override.max_exposure is not None:
            return override.max_exposure
        return self.max_exposure


class PolicySet(BaseModel):
    """Every policy of one device, loaded from one directory."""

    model_config = ConfigDict(frozen=True)

    browser: BrowserPolicy
    erasure: ErasurePolicy
    network: NetworkPolicy
    usb: UsbPolicy
    services: ServicesPolicy

    @model_validator(mode="after")
    def _cross_references(self) -> PolicySet:
        for name, override in self.services.overrides.items():
            for rule in override.network:
                try:
                    self.network.rule(rule)
                except PolicyError:
                    raise ValueError(
                        f"services.overrides.{name}.network names unknown rule {rule!r}"
                    ) from None
        volume = self.erasure.data_volume
        if volume is not None:
            # The image makes these groups only: a folder whose group is a service's own user
            # (no such group) would stop the volume's layout unit, and every service with it.
            groups = {
                "root",
                self.services.user,
                *self.services.shared_groups,
                *self.services.read_groups,
            }
            for folder in volume.directories:
                group = folder.group or folder.owner
                if group not in groups:
                    raise ValueError(
                        f"erasure.data_volume: {folder.path} has group {group!r}, which the image "
                        f"does not make (one of {', '.join(sorted(groups))}; give group:)"
                    )
        return self


# --- loading -------------------------------------------------------------------------

P = TypeVar("P", bound=Policy)


def default_policy_dir() -> Path:
    """$FIELDKIT_POLICIES, else /etc/fieldkit/policies, else the repository's ``policies/``."""
    if env := os.environ.get(POLICY_DIR_ENV):
        return Path(env)
    if INSTALLED_POLICY_DIR.is_dir():
        return INSTALLED_POLICY_DIR
    return Path(__file__).resolve().parents[2] / "policies"


def load_policy(path: Path, model: type[P]) -> P:
    """Read one YAML policy file into its model; errors name the file and the key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"policy file {path} is not readable: {exc.__class__.__name__}") from None
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyError(f"policy file {path}: top level must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(f"policy file {path}: {describe_validation_error(exc)}") from None


def load_policies(directory: Path | None = None) -> PolicySet:
    """Load and cross-check every policy in ``directory``."""
    directory = directory or default_policy_dir()
    models: dict[str, type[Policy]] = {
        "browser": BrowserPolicy,
        "erasure": ErasurePolicy,
        "network": NetworkPolicy,
        "usb": UsbPolicy,
        "services": ServicesPolicy,
    }
    loaded = {kind: load_policy(directory / f"{kind}.yaml", m) for kind, m in models.items()}
    try:
        return PolicySet.model_validate(loaded)
    except ValidationError as exc:
        raise PolicyError(f"policies in {directory}: {describe_validation_error(exc)}") from None


# --- rendering -----------------------------------------------------------------------

RenderedFiles = dict[PurePosixPath, str]
GENERATED = "Generated by fieldkit from policies/{kind}.yaml. Do not edit: change the policy."


def chromium_policy(policy: BrowserPolicy) -> dict[str, Any]:
    """Chromium's managed policy (``/etc/chromium/policies/managed``) as a dict."""
    f = policy.features
    # Debian's chromium 156 knows AutofillSettings; older versions ignore unknown keys, and the
    # two boolean autofill policies still hold there.
    return {
        "PasswordManagerEnabled": policy.remember.passwords,
        "PasswordLeakDetectionEnabled": f.password_leak_detection,
        "AutofillAddressEnabled": policy.remember.addresses,
        "AutofillCreditCardEnabled": policy.remember.payment_cards,
        "AutofillSettings": [{"url_pattern": "*", "blocked_types": ["contact_info", "payments"]}],
        "SavingBrowserHistoryDisabled": not policy.remember.browsing_history,
        "SearchSuggestEnabled": f.search_suggestions,
        "DefaultSearchProviderEnabled": f.default_search_provider,
        "IncognitoModeAvailability": 0 if f.incognito else 1,
        "BrowserGuestModeEnabled": f.guest_mode,
        "BrowserSignin": 1 if f.browser_signin else 0,
        "SyncDisabled": not f.sync,
        "TranslateEnabled": f.translate,
        "SpellCheckServiceEnabled": f.spellcheck_service,
        "NetworkPredictionOptions": 0 if f.network_prediction else 2,
        "MetricsReportingEnabled": f.metrics_reporting,
        "BackgroundModeEnabled": f.background_mode,
        "DeveloperToolsAvailability": 1 if f.developer_tools else 2,
        "DownloadRestrictions": 0 if f.downloads else 3,
        "HomepageLocation": policy.kiosk_url,
        "RestoreOnStartup": 4,
        "RestoreOnStartupURLs": [policy.kiosk_url],
        "URLBlocklist": ["*"],
        "URLAllowlist": list(policy.allowed_urls),
        "ClearBrowsingDataOnExitList": list(policy.clear_on_exit),
    }


def render_browser(policy: BrowserPolicy) -> RenderedFiles:
    body = json.dumps(chromium_policy(policy), indent=2, sort_keys=True, ensure_ascii=False)
    return {BROWSER_POLICY_PATH: body + "\n"}


def _ini(kind: str, section: str, values: Mapping[str, str]) -> str:
    lines = [f"# {GENERATED.format(kind=kind)}", f"[{section}]"]
    lines += [f"{key}={value}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def mount_unit_name(path: PurePosixPath) -> str:
    """The unit name systemd expects for a mount point (``systemd-escape --path``)."""
    text = "/".join(path.parts[1:])
    chars = []
    for i, ch in enumerate(text):
        if ch == "/":
            chars.append("-")
        elif ch.isascii() and (ch.isalnum() or ch in "_:" or (ch == "." and i > 0)):
            chars.append(ch)
        else:
            chars.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(chars) + ".mount"


# No core dump anywhere: the kernel pipes one to a program that discards it (and systemd-coredump
# stores none). The compliance run checks the device for exactly this.
CORE_PATTERN = "|/bin/false"


def render_erasure(policy: ErasurePolicy, role: str = "tablet") -> RenderedFiles:
    kind = "erasure"
    files: RenderedFiles = {
        PurePosixPath("/etc/systemd/journald.conf.d/50-fieldkit.conf"): _ini(
            kind,
            "Journal",
            {
                "Storage": policy.journald.storage,
                "RuntimeMaxUse": policy.journald.runtime_max_use,
                "ForwardToSyslog": "no",
            },
        ),
        PurePosixPath("/etc/systemd/coredump.conf.d/50-fieldkit.conf"): _ini(
            kind, "Coredump", {"Storage": "none", "ProcessSizeMax": "0"}
        ),
        PurePosixPath("/etc/security/limits.d/50-fieldkit-nocore.conf"): (
            f"# {GENERATED.format(kind=kind)}\n*    hard    core    0\n*    soft    core    0\n"
        ),
        # Only files: the build never touches the running kernel (no sysctl -w in a chroot).
        PurePosixPath("/etc/sysctl.d/50-fieldkit-erasure.conf"): (
            f"# {GENERATED.format(kind=kind)}\n"
            f"kernel.core_pattern = {CORE_PATTERN}\n"
            "fs.suid_dumpable = 0\n"
            "vm.swappiness = 0\n"
        ),
    }
    for mount in policy.tmpfs:
        unit = PurePosixPath("/etc/systemd/system") / mount_unit_name(mount.path)
        files[unit] = (
            f"# {GENERATED.format(kind=kind)}\n"
            "[Unit]\n"
            f"Description=Memory-only {mount.path} (nothing written here survives power-off)\n"
            "DefaultDependencies=no\n"
            "Conflicts=umount.target\n"
            "Before=local-fs.target umount.target\n\n"
            "[Mount]\n"
            "What=tmpfs\n"
            f"Where={mount.path}\n"
            "Type=tmpfs\n"
            f"Options=mode={mount.mode},size={mount.size},nosuid,nodev\n\n"
            "[Install]\n"
            "WantedBy=local-fs.target\n"
        )
    owned = [m for m in policy.tmpfs if m.owner]
    if owned:
        lines = [f"# {GENERATED.format(kind=kind)}"]
        lines += [f"d {m.path} {m.mode} {m.owner} {m.owner} -" for m in owned]
        files[PurePosixPath("/etc/tmpfiles.d/fieldkit-tmpfs.conf")] = "\n".join(lines) + "\n"
    if role == "tablet" and policy.data_volume is not None:
        files |= datavol.render(policy.data_volume, GENERATED.format(kind=kind))
    return files


def cupsd_settings(policy: ErasurePolicy) -> dict[str, str]:
    """cupsd.conf directives the erasure policy fixes (job files and history not kept)."""
    yes_no = {True: "Yes", False: "No"}
    return {
        "PreserveJobHistory": yes_no[policy.cups.preserve_job_history],
        "PreserveJobFiles": yes_no[policy.cups.preserve_job_files],
    }


def nftables_ruleset(policy: NetworkPolicy) -> str:
    """The device's nftables ruleset: default drop, loopback free, the allowlist, nothing else."""

    def match(rule: NetworkRule, direction: Literal["daddr", "saddr"]) -> list[str]:
        lines = []
        for family in ("ip", "ip6"):
            nets = [a for a in rule.addresses if (":" in a) == (family == "ip6")]
            if not nets:
                continue
            ports = ", ".join(str(p) for p in rule.ports)
            port_key = "dport"
            lines.append(
                f"        {family} {direction} {{ {', '.join(nets)} }} {rule.protocol} "
                f'{port_key} {{ {ports} }} accept comment "{rule.name}"'
            )
        return lines

    out = [
        "#!/usr/sbin/nft -f",
        f"# {GENERATED.format(kind='network')}",
        "flush ruleset",
        "",
        "table inet fieldkit {",
        "    chain input {",
        f"        type filter hook input priority filter; policy {policy.default};",
        '        iif "lo" accept',
        "        ct state established,related accept",
        "        ct state invalid drop",
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept",
    ]
    if policy.allow_dhcp:
        out.append('        udp sport 67 udp dport 68 accept comment "dhcp"')
    for rule in policy.inbound:
        out += match(rule, "saddr")
    out += [
        "    }",
        "",
        "    chain forward {",
        f"        type filter hook forward priority filter; policy {policy.default};",
        "    }",
        "",
        "    chain output {",
        f"        type filter hook output priority filter; policy {policy.default};",
        '        oif "lo" accept',
        "        ct state established,related accept",
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
    ]
    if policy.allow_dhcp:
        out.append('        udp sport 68 udp dport 67 accept comment "dhcp"')
    for rule in policy.outbound:
        out += match(rule, "daddr")
    out += ["    }", "}", ""]
    return "\n".join(out)


def networkd_file(link_type: Literal["ether", "wlan"]) -> str:
    """A systemd-networkd file for one kind of link: DHCP for the address only.

    DNS, NTP, the host name and search domains from DHCP are ignored: the allowlist lets the
    tablet reach only the site's own servers, which the enrolment names (fieldkit.network).
    """
    return "\n".join(
        [
            f"# {GENERATED.format(kind='network')}",
            "[Match]",
            f"Type={link_type}",
            "",
            "[Network]",
            "DHCP=ipv4",
            "IPv6AcceptRA=no",
            "LinkLocalAddressing=no",
            "",
            "[DHCPv4]",
            "UseDNS=no",
            "UseNTP=no",
            "UseHostname=no",
            "UseDomains=no",
            "SendHostname=no",
            "",
        ]
    )


def iwd_main_conf() -> str:
    """iwd only associates; systemd-networkd does DHCP on the wireless link as on the wire."""
    return "\n".join(
        [
            f"# {GENERATED.format(kind='network')}",
            "[General]",
            "EnableNetworkConfiguration=false",
            "",
            "[Network]",
            "NameResolvingService=none",
            "",
        ]
    )


def render_network(policy: NetworkPolicy, role: str = "tablet") -> RenderedFiles:
    """The image's network: the build's ruleset (placeholders until the enrolment gives the
    site's addresses), DHCP on the wire (the tablet reaches the hub to enrol), iwd's settings.
    The hub: its own allowlist (``hub:`` in network.yaml) and the wire; no Wi-Fi."""
    if role == "hub":
        return {
            NFTABLES_PATH: nftables_ruleset(policy.for_role("hub")),
            WIRED_NETWORK_PATH: networkd_file("ether"),
        }
    return {
        NFTABLES_PATH: nftables_ruleset(policy),
        WIRED_NETWORK_PATH: networkd_file("ether"),
        IWD_MAIN_PATH: iwd_main_conf(),
    }


def usbguard_rules(policy: UsbPolicy) -> str:
    """USBGuard rules: first match wins, so the mass-storage block comes before any allow."""
    out = [f"# {GENERATED.format(kind='usb')}"]
    for item in policy.block_interfaces:
        out.append(f"# {item.name}")
        out.append(f"block with-interface one-of {{ {item.interface} }}")
    allowed = " ".join(i.interface for i in policy.allow_interfaces)
    out.append("# " + ", ".join(i.name for i in policy.allow_interfaces))
    # match-all: every interface of the device must be an allowed class, so a composite
    # device cannot carry an unlisted function past the rule.
    out.append(f"allow with-interface match-all {{ {allowed} }}")
    return "\n".join(out) + "\n"


def render_usb(policy: UsbPolicy) -> RenderedFiles:
    files: RenderedFiles = {USBGUARD_RULES_PATH: usbguard_rules(policy)}
    if policy.blacklist_modules:
        lines = [f"# {GENERATED.format(kind='usb')}"]
        for module in policy.blacklist_modules:
            # "install /bin/false" also stops explicit modprobe, not only autoloading.
            lines += [f"blacklist {module}", f"install {module} /bin/false"]
        files[PurePosixPath("/etc/modprobe.d/fieldkit-usb.conf")] = "\n".join(lines) + "\n"
    return files


def usbguard_daemon_settings(policy: UsbPolicy) -> dict[str, str]:
    return {
        "RuleFile": str(USBGUARD_RULES_PATH),
        "ImplicitPolicyTarget": policy.implicit_policy,
        "PresentDevicePolicy": policy.present_devices,
        "PresentControllerPolicy": "keep",
        "InsertedDevicePolicy": "apply-policy",
    }


def unit_address_allow(svc: ServicesPolicy, name: str, network: NetworkPolicy) -> str | None:
    """A service's ``IPAddressAllow=``: the sandbox's, plus the addresses of the network rules
    its override names (None: it names none). The image renders it from the policy's
    placeholders; ``fieldkit network apply`` again from the site's addresses (a drop-in)."""
    override = svc.overrides.get(name)
    if override is None or not override.network:
        return None
    directives = {**svc.sandbox, **override.directives}
    base = directives.get("IPAddressAllow", "")
    base_text = base if isinstance(base, str) else " ".join(base)
    extra = [a for rule in override.network for a in network.rule(rule).addresses]
    return " ".join([base_text, *extra]).strip()


SITE_NETWORK_UNIT = "fieldkit-site-network.service"


def site_network_unit(policies: PolicySet, role: str = "tablet") -> str:
    """The oneshot that applies the site's network from the enrolment at every boot (root):
    firewall, DNS, time, Wi-Fi, and the services' address lists (``fieldkit network apply``),
    before any fieldkit service starts. Skipped on a tablet not enrolled yet.

    On the hub: the office network the admin set (``fieldkit hub network``, fieldkit.office):
    firewall, DNS, time, apt's and cvdupdate's proxy; skipped (the image's rules stay) until
    the admin has set it."""
    svc = policies.services
    volume = policies.erasure.data_volume if role == "tablet" else None
    hub = role == "hub"
    return "\n".join(
        [
            f"# {GENERATED.format(kind='network')}",
            "[Unit]",
            "Description=fieldkit: the "
            + (
                "hub's office network (fieldkit hub network)"
                if hub
                else "site's network from the enrolment"
            ),
            *(
                [f"Requires={datavol.LAYOUT_UNIT}", f"After={datavol.LAYOUT_UNIT}"]
                if volume is not None
                else []
            ),
            "After=systemd-networkd.service nftables.service",
            f"ConditionPathExists={svc.config}",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={svc.venv}/bin/python -m fieldkit network apply --boot"
            + (" --role hub" if hub else ""),
            "",
            "[Install]",
            "WantedBy=multi-user.target",
            "",
        ]
    )


def exec_start(svc: ServicesPolicy, name: str, command: list[str] | None) -> str:
    """The unit's command line: ``python -m fieldkit.serve NAME``, or the service's own command
    (the kiosk's gunicorn: its spec's ``command``, as the development supervisor runs it), with
    the device's venv python in place of the build host's."""
    python = f"{svc.venv}/bin/python"
    if command is None:
        return f"{python} -m fieldkit.serve {name} --config {svc.config}"
    args = [python if arg == sys.executable else arg for arg in command]
    return " ".join(f'"{a}"' if any(c in a for c in " ()'") else a for a in args)


def service_unit(
    name: str,
    summary: str,
    policies: PolicySet,
    *,
    notify_access: str = "main",
    data_volume: bool = False,
    command: list[str] | None = None,
    bus: bool = True,
) -> str:
    """One sandboxed systemd unit for one fieldkit service.

    It tells systemd when it is up and keeps telling it that its work thread is alive
    (fieldkit.watchdog); ``notify_access`` is "all" for a service whose notifying process is
    a child of the main one (the kiosk's gunicorn worker)."""
    svc = policies.services
    directives: dict[str, DirectiveValue] = dict(svc.sandbox)
    override = svc.overrides.get(name)
    user = svc.user_of(name)
    if override is not None:
        directives.update(override.directives)
        allowed = unit_address_allow(svc, name, policies.network)
        if allowed is not None:
            directives["IPAddressAllow"] = allowed
    lines = [
        f"# {GENERATED.format(kind='services')}",
        "[Unit]",
        f"Description=fieldkit {name}: {summary}",
        *([f"# Beyond the baseline sandbox: {override.why}"] if override and override.why else []),
        *(
            [
                "After=network.target mosquitto.service"
                f" {SITE_NETWORK_UNIT} {BUS_CREDENTIALS_UNIT}",
                # Its bus password comes from there (LoadCredential= below).
                f"Wants={BUS_CREDENTIALS_UNIT}",
            ]
            if bus
            else [f"After=network.target {SITE_NETWORK_UNIT}"]
        ),
        # The tablet's state (outbox, audit, evidence, keys) is on the encrypted data volume:
        # without it (no TPM, not unlocked) no service runs (docs/images.md).
        *(
            [f"Requires={datavol.LAYOUT_UNIT}", f"After={datavol.LAYOUT_UNIT}"]
            if data_volume
            else []
        ),
        # A device not yet enrolled has no config: the unit is skipped at boot instead of
        # failing and restarting every RestartSec, and starts once enrolment writes the file.
        f"ConditionPathExists={svc.config}",
        "",
        "[Service]",
        "Type=notify",
        f"NotifyAccess={notify_access}",
        # The development runner's setting, so a hang is caught alike on a device and in `up`.
        f"WatchdogSec={RunnerSection().watchdog_seconds:g}s",
        # Not the default SIGABRT: a core dump of a service's memory could hold applicant data.
        "WatchdogSignal=SIGKILL",
        f"User={user}",
        f"Group={svc.group_of(name)}",
        # A group it shares with one other service only (services.yaml shared_groups).
        *(f"SupplementaryGroups={g}" for g in svc.supplementary_groups(name)),
        # Its bus password only (fieldkit-bus-credentials.service makes them root-only):
        # systemd hands it to this unit alone, in $CREDENTIALS_DIRECTORY (fieldkit.bus). A
        # unit that is not on the bus (the hub's enrolment server) gets none.
        *(
            [f"LoadCredential={bus_credential_name(name)}:{BUS_CREDENTIALS_PATH / name}"]
            if bus
            else []
        ),
        f"ExecStart={exec_start(svc, name, command)}",
        # Issue 19: its AppArmor profile, enforced, rendered with this unit (fieldkit.apparmor).
        f"AppArmorProfile={apparmor_profile(name)}",
        # The config file for a command that reads it itself (gunicorn's settings module).
        *([f"Environment=FIELDKIT_CONFIG={svc.config}"] if command is not None else []),
        # Freed memory overwritten at once (fieldkit.processes, the runner does the same).
        *(f"Environment={k}={v}" for k, v in scrubbing_environment({}).items()),
        "Restart=on-failure",  # a watchdog timeout is a failure too
        "RestartSec=2",
    ]
    for key, value in directives.items():
        for item in [value] if isinstance(value, str) else value:
            lines.append(f"{key}={item}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


BUS_CREDENTIALS_UNIT = "fieldkit-bus-credentials.service"
# Where that oneshot leaves each identity's bus password, root-only: systemd hands each unit
# its own (``LoadCredential=``), so no service can read another's.
BUS_CREDENTIALS_PATH = PurePosixPath(str(BusSection().runtime_dir)) / CREDENTIALS_DIR


def broker_unit_dropin() -> str:
    """A drop-in for Debian's mosquitto.service: the broker's freed memory overwritten too, and
    the bus's passwords made (new, in memory) before it starts."""
    env = scrubbing_environment({}, python=False)
    return "\n".join(
        [
            f"# {GENERATED.format(kind='services')}",
            "[Unit]",
            f"Requires={BUS_CREDENTIALS_UNIT}",
            f"After={BUS_CREDENTIALS_UNIT}",
            "",
            "[Service]",
            *(f"Environment={k}={v}" for k, v in env.items()),
            "",
        ]
    )


def bus_credentials_unit(policies: PolicySet, role: str) -> str:
    """The oneshot that gives every bus identity a new password at each boot (root): the
    hashed password file mosquitto reads and one credential file per identity, all on /run
    (``fieldkit bus credentials``; fieldkit.broker.install_device_credentials)."""
    svc = policies.services
    return "\n".join(
        [
            f"# {GENERATED.format(kind='services')}",
            "[Unit]",
            "Description=fieldkit bus: new passwords for every identity, in memory only",
            "Before=mosquitto.service",
            "",
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            f"ExecStart={svc.venv}/bin/python -m fieldkit bus credentials --role {role}",
            "UMask=0077",
            "PrivateNetwork=yes",
            "PrivateTmp=yes",
            "ProtectSystem=strict",
            "ReadWritePaths=/run",
            "ProtectHome=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "NoNewPrivileges=yes",
            "CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE",
            "",
        ]
    )


# Where the image's mosquitto (Debian's mosquitto.service) keeps the bus's files.
BROKER_CONFIG_PATH = PurePosixPath("/etc/mosquitto/mosquitto.conf")
# Made at every boot with new passwords, in memory only (fieldkit-bus-credentials.service).
BROKER_PASSWORD_PATH = PurePosixPath("/run/fieldkit/broker/fieldkit.passwd")
BROKER_ACL_PATH = PurePosixPath("/etc/mosquitto/fieldkit.acl")


def broker_config() -> str:
    """The image's whole mosquitto.conf, by the development kit's own renderer, listening where
    a device config's ``[bus]`` section points by default."""
    from fieldkit.broker import render_config
    from fieldkit.config import BusSection

    bus = BusSection()
    return render_config(
        f"listener {bus.port} {bus.host}",
        password_file=BROKER_PASSWORD_PATH,
        acl_file=BROKER_ACL_PATH,
        max_message_bytes=bus.max_message_bytes,
        user="mosquitto",
    )


def unit_name(service: str) -> str:
    return f"fieldkit-{service}.service"


def apparmor_profile(service: str) -> str:
    """The AppArmor profile a service's unit runs in (``AppArmorProfile=``; fieldkit.apparmor
    renders it from the same policy)."""
    return f"fieldkit-{service}"


def render_services(policies: PolicySet, role: str) -> RenderedFiles:
    """A unit for every service registered for ``role`` (entry points, see registry)."""
    from fieldkit.registry import specs_for_role

    units = {
        PurePosixPath("/etc/systemd/system") / unit_name(spec.name): service_unit(
            spec.name,
            spec.summary,
            policies,
            # A service with its own command runs under gunicorn, where the process that
            # notifies may be a worker (the kiosk's) rather than the master.
            notify_access="main" if spec.command is None else "all",
            data_volume=role == "tablet" and policies.erasure.data_volume is not None,
            command=(
                spec.command(Path(str(policies.services.config)))
                if spec.command is not None
                else None
            ),
        )
        for spec in specs_for_role(role)
    }
    if role == "hub":
        units[PurePosixPath("/etc/systemd/system") / unit_name(HUB_ENROL)] = service_unit(
            HUB_ENROL,
            "EST enrolment of the tablets (TLS with the hub's certificate, one-time codes)",
            policies,
            command=hub_enrol_command(),
            bus=False,
            # Its gunicorn worker beats the watchdog (fieldkit.hub.enrolment_gunicorn): with
            # "main", systemd dropped every beat and killed the server at the end of its 5 min
            # start-up watchdog, again and again (found by the kit in two VMs).
            notify_access="all",
        )
    return units


# The hub's enrolment server (`fieldkit hub enrol-server`): gunicorn, not a bus service; its
# master tells systemd it is up, and keeps telling it while the server answers (its config).
HUB_ENROL = "hub-enrol"


def hub_enrol_command() -> list[str]:
    from fieldkit.hub.web.cli import enrol_server_command

    return enrol_server_command()


def render(policies: PolicySet, kind: str, role: str = "tablet") -> RenderedFiles:
    """The files one policy kind installs on a device of ``role``."""
    if kind == "browser":
        return render_browser(policies.browser)
    if kind == "erasure":
        return render_erasure(policies.erasure, role)
    if kind == "network":
        return render_network(policies.network, role)
    if kind == "usb":
        return render_usb(policies.usb)
    if kind == "services":
        return render_services(policies, role)
    raise PolicyError(f"unknown policy kind {kind!r}; choose from {', '.join(KINDS)}")


def ansible_vars(
    policies: PolicySet, role: str, policies_dir: Path | None = None
) -> dict[str, Any]:
    """Variables for the Ansible roles: the playbooks take their settings from here only."""
    from fieldkit.apparmor import debian_profiles, render_apparmor
    from fieldkit.broker import render_acl
    from fieldkit.registry import identities_for, specs_for_role

    files = {kind: render(policies, kind, role) for kind in KINDS}
    as_text = {
        kind: {str(p): body for p, body in rendered.items()} for kind, rendered in files.items()
    }
    erasure = policies.erasure
    volume = erasure.data_volume if role == "tablet" else None
    return {
        "kiosk_browser_policy_file": str(BROWSER_POLICY_PATH),
        "kiosk_browser_policy_json": as_text["browser"][str(BROWSER_POLICY_PATH)],
        "kiosk_url": policies.browser.kiosk_url,
        "hardening_erasure_files": as_text["erasure"],
        "hardening_tmpfs_units": [mount_unit_name(m.path) for m in erasure.tmpfs],
        "hardening_tmpfs_mounts": [{"path": str(m.path), "mode": m.mode} for m in erasure.tmpfs],
        "hardening_swap_enabled": erasure.swap,
        "cups_settings": cupsd_settings(erasure),
        "firewall_nftables_ruleset": as_text["network"][str(NFTABLES_PATH)],
        "firewall_site_network_unit": site_network_unit(policies, role),
        "firewall_network_files": {
            p: b for p, b in as_text["network"].items() if p != str(NFTABLES_PATH)
        },
        "usbguard_rules": as_text["usb"][str(USBGUARD_RULES_PATH)],
        "usbguard_daemon_settings": usbguard_daemon_settings(policies.usb),
        "usbguard_modprobe_files": {
            p: b for p, b in as_text["usb"].items() if p != str(USBGUARD_RULES_PATH)
        },
        "fieldkit_services_units": as_text["services"],
        "fieldkit_services_user": policies.services.user,
        "fieldkit_services_own_users": policies.services.own_user_names(),
        "fieldkit_services_shared_groups": policies.services.shared_group_users(),
        "hub_ca_user": HUB_CA_USER,
        "fieldkit_services_ca_user": HUB_CA_USER if role == "hub" else "",
        "fieldkit_services_ca_signer_unit": ca_signer_unit(policies) if role == "hub" else "",
        "fieldkit_services_venv": str(policies.services.venv),
        "fieldkit_services_max_exposure": policies.services.max_exposure,
        "broker_acl": render_acl(identities_for(specs_for_role(role))),
        "broker_unit_dropin": broker_unit_dropin(),
        "broker_credentials_unit": bus_credentials_unit(policies, role),
        "broker_config": broker_config(),
        "broker_config_path": str(BROKER_CONFIG_PATH),
        "broker_password_path": str(BROKER_PASSWORD_PATH),
        "broker_acl_path": str(BROKER_ACL_PATH),
        "antivirus_freshclam_conf": freshclam_conf(policies_dir) if policies_dir else "",
        "antivirus_freshclam_dropin": freshclam_dropin(policies_dir) if policies_dir else "",
        "hub_tls_dns_names": hub_tls_dns_names(antivirus_policy(policies_dir)),
        "hub_cvd_address_allow": hub_cvd_address_allow(policies.network),
        "policy_dir": str(policies_dir) if policies_dir is not None else "",
        "fieldkit_services_links": (
            {str(k): str(v) for k, v in volume.links.items()} if volume is not None else {}
        ),
        "fieldkit_services_device_config": (
            image_device_config(policies)
            if role == "tablet"
            else hub_device_config(policies, antivirus_policy(policies_dir))
        ),
        # Issue 19: every AppArmor profile, rendered with the units from the same policy.
        "apparmor_profiles": {
            str(p): body
            for p, body in render_apparmor(
                policies,
                role,
                str(antivirus_policy(policies_dir).mirror_ca) if policies_dir else None,
            ).items()
        },
        # Debian's own profiles the role keeps enforced (the hub has no CUPS).
        "apparmor_debian_profiles": debian_profiles(role),
        "datavol_enabled": volume is not None,
        "datavol_units": [datavol.LAYOUT_UNIT] if volume is not None else [],
    }


# The device id of a tablet not yet enrolled: the enrolment's own file replaces it.
UNENROLLED_ID = "unenrolled"


# The capture preview's port on a tablet (network.yaml `listening` names it; tested equal).
CAPTURE_PREVIEW_PORT = 8091


def image_device_config(policies: PolicySet) -> str:
    """The tablet image's ``/etc/fieldkit/device.toml``: what every tablet shares. What makes
    one tablet itself (its id, site, hub address, keys) is written at enrolment beside its
    keys (``enrolment.toml``) and laid over this file (fieldkit.config.with_enrolment).

    Until then the kiosk shows only its enrolment screen and sync refuses, saying why."""
    from fieldkit.config import DeviceConfig

    volume = policies.erasure.data_volume
    state = PurePosixPath(str(volume.mount)) if volume is not None else PurePosixPath("/var/lib")
    values: dict[str, dict[str, Any]] = {
        "device": {"id": UNENROLLED_ID, "role": "tablet"},
        # mosquitto.service is the broker; the credentials are made at boot.
        "bus": {"launch_broker": False},
        # The audit trail persists, on the encrypted data volume.
        "kiosk": {"audit_log": str(state / "audit" / "kiosk-audit.jsonl")},
        # The preview on a fixed loopback port, so network.yaml can name what listens.
        "capture": {"source": "v4l2:/dev/video0", "preview_port": CAPTURE_PREVIEW_PORT},
        "enrol": {"kiosk_screen": True},
        # The roster from the hub, beside the enrolment (the kiosk writes it when it enrols).
        "sync": {"roster": str(state / "enrol" / "operators.json")},
    }
    # The image never carries a config its services would refuse.
    DeviceConfig.model_validate(values)
    lines = [f"# {GENERATED.format(kind='services')}"]
    for section, settings in values.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


# The hub's state (issue 18): the kit PKI, the web app's session key, the mirror's files.
HUB_STATE = PurePosixPath("/var/lib/fieldkit")
HUB_PKI = HUB_STATE / "pki"
# The kit CA's key is read by one process only, the CA signer (issue 17 item 2), as a user of
# its own in the services' group; the hub's services ask it over this socket.
HUB_CA_USER = "fieldkit-ca"
HUB_CA_SIGNER = "ca-signer"
HUB_CA_SIGNER_UNIT = "fieldkit-ca-signer.service"
HUB_CA_SIGNER_SOCKET = PurePosixPath("/run/fieldkit-ca/signer.sock")
# The hub's PostgreSQL, over its unix socket only (peer authentication as the service user).
HUB_DATABASE_URL = "postgresql+psycopg://fieldkit@/fieldkit?host=/run/postgresql"


def hub_device_config(policies: PolicySet, antivirus: AntivirusSection | None = None) -> str:
    """The hub image's ``/etc/fieldkit/device.toml``: the tested hub's services on the site's
    network, each on the port its ``hub.inbound`` rule of network.yaml opens (a test holds
    them equal), TLS with the kit PKI's hub certificate that the first boot makes. Enrolment
    hands each tablet the antivirus policy's mirror URL (``antivirus``: default the policy
    folder's antivirus.toml)."""
    from fieldkit.config import DeviceConfig

    mirror_url = (antivirus or antivirus_policy()).mirror_url

    network = policies.network
    server_crt, server_key = HUB_PKI / "hub" / "server.crt", HUB_PKI / "hub" / "server.key"
    anywhere = "0.0.0.0"  # noqa: S104 (the firewall and each unit's IPAddressAllow narrow it)
    values: dict[str, dict[str, Any]] = {
        "device": {"id": "hub", "role": "hub"},
        # mosquitto.service is the local bus; the credentials are made at boot.
        "bus": {"launch_broker": False},
        "hub": {
            "pki": str(HUB_PKI),
            "ca_signer": str(HUB_CA_SIGNER_SOCKET),
            "broker_host": anywhere,
            "broker_port": network.rule("tablets-mqtt").ports[0],
            "database_url": HUB_DATABASE_URL,
        },
        "hubweb": {
            "listen_host": anywhere,
            "listen_port": network.rule("hub-web").ports[0],
            # gunicorn terminates TLS itself: no proxy in front to trust.
            "tls_cert": str(server_crt),
            "tls_key": str(server_key),
            "proxy_hops": 0,
            "secret_key_file": str(HUB_STATE / "hub-web.key"),
        },
        "enrol": {
            "listen_host": anywhere,
            "listen_port": network.rule("tablets-enrol").ports[0],
            **({"antivirus_mirror": mirror_url} if mirror_url else {}),
            # The site's addresses are the admin's (`fieldkit hub site`), not the image's.
            "site_file": str(HUB_STATE / "site.toml"),
        },
        # HTTPS only, with the same hub certificate as the web app and the enrolment server.
        "av_mirror": {
            "directory": str(HUB_STATE / "av-mirror"),
            "host": anywhere,
            "port": network.rule("tablets-av-mirror").ports[0],
            "tls_cert": str(server_crt),
            "tls_key": str(server_key),
        },
    }
    DeviceConfig.model_validate(values)
    lines = [f"# {GENERATED.format(kind='services')}"]
    for section, settings in values.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in settings.items()]
    return "\n".join(lines) + "\n"


def ca_signer_directives(policies: PolicySet) -> dict[str, DirectiveValue]:
    """The CA signer's sandbox: the baseline, no network, its PKI and its socket's folder."""
    directives: dict[str, DirectiveValue] = {
        **policies.services.sandbox,
        "PrivateNetwork": "yes",
        "RestrictAddressFamilies": "AF_UNIX",
        "ReadWritePaths": str(HUB_PKI),
        "RuntimeDirectory": HUB_CA_SIGNER_SOCKET.parent.name,
        "RuntimeDirectoryMode": "0750",
    }
    directives.pop("IPAddressAllow", None)
    return directives


def ca_signer_unit(policies: PolicySet, setup_unit: str = "fieldkit-hub-setup.service") -> str:
    """The hub's CA signer (``fieldkit pki signer``): the only process that reads the CA key,
    as ``HUB_CA_USER`` in the services' group, with the baseline sandbox and no network at all
    (its socket is a file). Up before the services that ask it to sign."""
    svc = policies.services
    directives = ca_signer_directives(policies)
    lines = [
        f"# {GENERATED.format(kind='services')}",
        "[Unit]",
        "Description=fieldkit hub: the kit CA's key, in a process of its own",
        f"Requires={setup_unit}",
        f"After={setup_unit}",
        "Before="
        + " ".join(unit_name(n) for n in ("hub-broker", "hub-ingest", "hub-web", HUB_ENROL))
        + " fieldkit-crl-renew.service",
        f"ConditionPathExists={HUB_PKI / 'ca' / 'ca.key'}",
        "",
        "[Service]",
        "Type=notify",
        f"User={HUB_CA_USER}",
        f"Group={svc.user}",
        f"ExecStart={svc.venv}/bin/python -m fieldkit pki --dir {HUB_PKI} signer"
        f" --socket {HUB_CA_SIGNER_SOCKET}",
        f"AppArmorProfile={apparmor_profile(HUB_CA_SIGNER)}",
        *(f"Environment={k}={v}" for k, v in scrubbing_environment({}).items()),
        "Restart=on-failure",
        "RestartSec=2",
    ]
    for key, value in directives.items():
        for item in [value] if isinstance(value, str) else value:
            lines.append(f"{key}={item}")
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def antivirus_policy(policies_dir: Path | None = None) -> AntivirusSection:
    """``policies/antivirus.toml``, validated by the antivirus service's own settings model."""
    path = (policies_dir or default_policy_dir()) / "antivirus.toml"
    try:
        return read_toml_model(
            path, AntivirusSection, what="policy file", error=PolicyError, table="antivirus"
        )
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None


def freshclam_conf(policies_dir: Path) -> str:
    """freshclam.conf from ``policies/antivirus.toml``, rendered by the antivirus service's code.

    The antivirus policy is the antivirus service's own file (TOML, its settings model); the
    image installs exactly what that service would write, so both read one source (R10).
    """
    from fieldkit.antivirus.engine import EngineError, render_freshclam_conf

    section = antivirus_policy(policies_dir)
    database_dir = section.database_dir or Path("/var/lib/clamav")
    owner = section.database_owner or "clamav"
    try:
        return render_freshclam_conf(section, database_dir, owner=owner)
    except EngineError as exc:
        raise PolicyError(f"policy file {policies_dir / 'antivirus.toml'}: {exc}") from None


# What `cvd update` reaches from the hub: the office's proxy (its HTTPS downloads) and DNS
# (its TXT query for the versions) (network.yaml).
HUB_CVD_RULES = ("hub-proxy", "hub-dns")


def hub_cvd_address_allow(network: NetworkPolicy) -> list[str]:
    """The addresses fieldkit-cvd-update.service may reach: the build's (placeholders), or the
    office's once placed (``fieldkit.office``); a rule the office has no address for (no
    proxy) is not there."""
    rules = network.for_role("hub").outbound
    return sorted({a for rule in rules if rule.name in HUB_CVD_RULES for a in rule.addresses})


def hub_tls_dns_names(antivirus: AntivirusSection) -> list[str]:
    """The names the hub's server certificate carries besides its host name (the first boot's
    ``fieldkit pki init``): localhost, and the host of the mirror URL the tablets are handed
    (their freshclam checks the name; the tablets' /etc/hosts maps it to the hub)."""
    from urllib.parse import urlsplit

    names = ["localhost"]
    host = urlsplit(antivirus.mirror_url).hostname if antivirus.mirror_url else None
    if host and not _is_ip(host) and host not in names:
        names.append(host)
    return names


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def freshclam_dropin(policies_dir: Path) -> str:
    """clamav-freshclam.service's drop-in from ``policies/antivirus.toml``: the kit CA alone."""
    from fieldkit.antivirus.engine import render_freshclam_dropin

    return render_freshclam_dropin(antivirus_policy(policies_dir))


def write_rendered(files: RenderedFiles, root: Path) -> list[Path]:
    """Write rendered files below ``root`` (a rootfs or a staging dir); returns the paths."""
    written = []
    for path, body in sorted(files.items()):
        target = root / path.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body, encoding="utf-8")
        written.append(target)
    return written
