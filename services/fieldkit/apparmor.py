"""AppArmor profiles for the device, enforced (issue 19 item 1; R14, R16, R28, R30).

Every fieldkit service's profile is rendered here from the policy its systemd unit is rendered
from (``policies/services.yaml``, fieldkit.policies.service_unit): the unit names it with
``AppArmorProfile=`` (a Python service runs the interpreter, so the profile is tied to the
unit, never attached by path). A service's profile allows:

- the interpreter and fieldkit's venv, the operating system's files to read (not to write);
- the folders systemd makes writable for its unit (``StateDirectory=``, ``RuntimeDirectory=``,
  ``ReadWritePaths=``; through the data volume's links, ``policies/erasure.yaml``), and its
  private ``/tmp``;
- its own credentials (``LoadCredential=``), the enrolment's public files (on a tablet), and
  what its ``apparmor:`` entry in services.yaml names (sockets, devices, programs it runs
  inside this profile, capabilities, each with its reason).

Nothing else: another service's folder on the data volume, the device keys, the bus passwords'
folder are not in it, so a read there is refused and logged (``apparmor="DENIED"``).

The same module renders the profiles of the programs the kit runs beside its services: the
tablet's Chromium (the kiosk), mosquitto (the bus), and the additions the image makes to the
profiles Debian ships for cupsd and freshclam (all enforced: no ``complain`` flag anywhere).
"""

from __future__ import annotations

import shlex
import textwrap
from pathlib import PurePosixPath

from fieldkit.policies import (
    BROKER_ACL_PATH,
    BROKER_CONFIG_PATH,
    BROKER_PASSWORD_PATH,
    GENERATED,
    HUB_CA_SIGNER,
    HUB_ENROL,
    HUB_PKI,
    DirectiveValue,
    PolicySet,
    RenderedFiles,
    apparmor_profile,
    ca_signer_directives,
)

PROFILE_DIR = PurePosixPath("/etc/apparmor.d")
LOCAL_DIR = PROFILE_DIR / "local"
# The programs beside the services: their profiles, attached by path (they are not Python).
CHROMIUM = "chromium"
CHROMIUM_BINARY = PurePosixPath("/usr/lib/chromium/chromium")
MOSQUITTO = "mosquitto"
MOSQUITTO_BINARY = PurePosixPath("/usr/sbin/mosquitto")
# Debian's own profiles (cups-daemon, clamav-freshclam), which the image keeps in enforce mode
# and adds to through their local/ include.
DEBIAN_PROFILES = {"usr.sbin.cupsd": "/usr/sbin/cupsd", "usr.bin.freshclam": "/usr/bin/freshclam"}
KIOSK_USER = "kiosk"

HEADER = "abi <abi/3.0>,\n\ninclude <tunables/global>\n"


def profile_path(name: str) -> PurePosixPath:
    return PROFILE_DIR / name


def unit_directives(policies: PolicySet, name: str) -> dict[str, DirectiveValue]:
    """The sandbox directives the unit of ``name`` is rendered with (fieldkit.policies)."""
    svc = policies.services
    if name == HUB_CA_SIGNER:
        return ca_signer_directives(policies)
    override = svc.overrides.get(name)
    return {**svc.sandbox, **(override.directives if override is not None else {})}


def _directive(directives: dict[str, DirectiveValue], key: str) -> list[str]:
    value = directives.get(key)
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    return [word for item in items for word in shlex.split(item)]


def writable_paths(policies: PolicySet, name: str, role: str) -> list[str]:
    """The folders systemd makes writable for the unit of ``name``, as AppArmor sees them (the
    data volume's links resolved: AppArmor mediates the path a link points to)."""
    directives = unit_directives(policies, name)
    paths = [f"/var/lib/{d}" for d in _directive(directives, "StateDirectory")]
    paths += [f"/run/{d}" for d in _directive(directives, "RuntimeDirectory")]
    paths += [p.lstrip("-+") for p in _directive(directives, "ReadWritePaths")]
    volume = policies.erasure.data_volume if role == "tablet" else None
    links = {str(k): str(v) for k, v in volume.links.items()} if volume is not None else {}
    resolved = []
    for path in paths:
        resolved.append(links.get(path, path))
    return list(dict.fromkeys(resolved))


def _private_tmp(policies: PolicySet, name: str) -> bool:
    return unit_directives(policies, name).get("PrivateTmp") == "yes"


def service_profile(policies: PolicySet, name: str, role: str) -> str:
    """One fieldkit service's profile (its unit: ``AppArmorProfile=fieldkit-<name>``)."""
    svc = policies.services
    profile = apparmor_profile(name)
    override = svc.overrides.get(name)
    access = override.apparmor if override is not None else None
    venv = str(svc.venv)
    writable = writable_paths(policies, name, role)
    unit = f"fieldkit-{name}.service"
    rules: list[str] = [
        "include <abstractions/base>",
        "include <abstractions/nameservice>",
        "include <abstractions/openssl>",
        "include <abstractions/ssl_certs>",
        "include <abstractions/python>",
        "",
        "# The bus (MQTT on loopback), its own listening port if any, the hub for those the",
        "# unit's IPAddressAllow= lets out; the systemd sandbox narrows the addresses.",
        "network inet stream,",
        "network inet6 stream,",
        "network inet dgram,",
        "network inet6 dgram,",
        "network unix,",
        "network netlink raw,",
        "",
        "# `python -m` puts the working directory (/) on sys.path: the importer lists it.",
        "/ r,",
        "# The interpreter and fieldkit, from its venv; no other program unless named below.",
        "/usr/bin/python3.[0-9]* mrix,",
        f"{venv}/ r,",
        f"{venv}/** mr,",
        "/usr/share/** r,",
        "/usr/lib/os-release r,",
        "# The operating system's settings (read only); not the password hashes.",
        "/etc/** r,",
        "deny /etc/{shadow,gshadow}{,-} r,",
        "",
        "@{PROC}/ r,",
        "@{PROC}/@{pid}/** r,",
        "@{PROC}/sys/** r,",
        "@{PROC}/{loadavg,uptime,mounts,swaps,version} r,",
        "@{sys}/devices/system/{cpu,node}/** r,",
        "@{sys}/fs/cgroup/** r,",
        "/dev/shm/ r,",  # noqa: S108 (a rule, not a file this code opens)
        "owner /dev/shm/** rwk,",
        "",
        "# systemd: READY=1 and the watchdog's beats; its bus password (LoadCredential=).",
        "/run/systemd/notify w,",
        f"/run/credentials/{unit}/ r,",
        f"/run/credentials/{unit}/* r,",
    ]
    if role == "tablet" and policies.erasure.data_volume is not None:
        mount = str(policies.erasure.data_volume.mount)
        rules += [
            "# The enrolment's public files: the device's id and hub, certificates, keys of the",
            "# receivers (the private keys beside them are the kiosk's and sync's only).",
            f"{mount}/enrol/bundle/ r,",
            f"{mount}/enrol/bundle/{{enrolment.toml,client.crt,ca.crt,hub-downlink.pem}} r,",
            f"{mount}/enrol/bundle/receivers/{{,*}} r,",
        ]
    if _private_tmp(policies, name):
        rules += [
            "# Its private /tmp and /var/tmp (PrivateTmp=yes).",
            "owner /tmp/** rwk,",
            "owner /var/tmp/** rwk,",
        ]
    if writable:
        rules += ["", "# Its own folders: what systemd makes writable for its unit."]
        for path in writable:
            rules += [f"{path}/ rw,", f"{path}/** rwkl,"]
    if access is not None:
        if access.why:
            rules += ["", *(f"# {line}" for line in textwrap.wrap(access.why, 90))]
        rules += [f"{p} r," for p in access.read]
        rules += [f"{p} rwk," for p in access.write]
        rules += [f"{p} rw," for p in access.connect]
        rules += [f"{p} rw," for p in access.devices]
        rules += [f"{p} mrix," for p in access.run]
        rules += [f"capability {c}," for c in access.capabilities]
        if access.dbus:
            rules.append("dbus bus=system,")
        if access.ptrace:
            rules.append("ptrace (read, trace),")
    body = "\n".join(f"  {r}" if r else "" for r in rules)
    return (
        f"# {GENERATED.format(kind='services')}\n"
        f"# fieldkit {name}: its unit runs in this profile (AppArmorProfile=), enforced.\n"
        f"{HEADER}\n"
        f"profile {profile} flags=(attach_disconnected) {{\n{body}\n}}\n"
    )


def chromium_profile(policies: PolicySet) -> str:
    """The kiosk's Chromium (cage's child, the kiosk user): the operating system to read, its
    profile and cache (the tmpfs folders of policies/erasure.yaml) to write, nothing of
    fieldkit's state. Its own sandbox (user, PID and network namespaces) needs the
    capabilities it has inside its user namespace."""
    home = f"/home/{KIOSK_USER}"
    writable = [
        str(m.path)
        for m in policies.erasure.tmpfs
        if m.owner == KIOSK_USER and str(m.path).startswith(home + "/")
    ]
    rules = [
        "include <abstractions/base>",
        "include <abstractions/fonts>",
        "include <abstractions/nameservice>",
        "include <abstractions/openssl>",
        "include <abstractions/ssl_certs>",
        "include <abstractions/dri-enumerate>",
        "include <abstractions/mesa>",
        "",
        "# Its namespace sandbox: a user namespace in which it chroots and drops privileges.",
        "capability sys_admin,",
        "capability sys_chroot,",
        "capability sys_ptrace,",
        "capability setuid,",
        "capability setgid,",
        "network,",
        "signal peer=@{profile_name},",
        "ptrace (read, trace) peer=@{profile_name},",
        "# It reads its parent's /proc entries (cage, the compositor, unconfined): refused on"
        " purpose,",
        "# and said here so the refusal is the policy's, not a gap (an explicit deny is not"
        " logged).",
        "deny ptrace (read) peer=unconfined,",
        "unix,",
        "",
        f"{CHROMIUM_BINARY.parent}/ r,",
        f"{CHROMIUM_BINARY.parent}/** mr,",
        f"{CHROMIUM_BINARY.parent}/* ix,",
        "/usr/bin/{,ba,da}sh ix,",
        "/usr/share/** r,",
        "/etc/** r,",
        "deny /etc/{shadow,gshadow}{,-} r,",
        "deny /etc/fieldkit/** r,",
        "@{PROC}/ r,",
        "@{PROC}/** r,",
        "owner @{PROC}/@{pid}/{oom_score_adj,setgroups,uid_map,gid_map,clear_refs} rw,",
        "@{sys}/** r,",
        "/dev/ r,",
        "/dev/dri/** rw,",
        "/dev/shm/ r,",  # noqa: S108 (a rule, not a file this code opens)
        "owner /dev/shm/** rwk,",
        "/dev/tty rw,",
        "/dev/tty[0-9]* rw,",
        "/tmp/ r,",  # noqa: S108 (a rule, not a file this code opens)
        "owner /tmp/** rwk,",
        "/var/cache/fontconfig/** r,",
        "/run/udev/data/** r,",
        "# The compositor's socket (the unit's XDG_RUNTIME_DIR) and the bus.",
        "owner /run/fieldkit-kiosk-browser/** rwk,",
        "owner /run/user/*/** rwk,",
        "/run/dbus/system_bus_socket rw,",
        "dbus bus=system,",
        "dbus bus=session,",
        "",
        "# Its profile and cache: memory-only (policies/erasure.yaml tmpfs), emptied per visit.",
        f"{home}/ r,",
        f"owner {home}/.config/ r,",
        *[f"owner {path}/{{,**}} rwkl," for path in writable],
        f"owner {home}/.pki/{{,**}} rwk,",
        f"owner {home}/.local/share/{{,**}} rwk,",
    ]
    body = "\n".join(f"  {r}" if r else "" for r in rules)
    return (
        f"# {GENERATED.format(kind='browser')}\n"
        "# The kiosk's Chromium, enforced (issue 19).\n"
        f"{HEADER}\n"
        f"profile {CHROMIUM} {CHROMIUM_BINARY} flags=(attach_disconnected) {{\n{body}\n}}\n"
    )


def mosquitto_profile() -> str:
    """The bus broker (Debian's mosquitto.service): its config, the ACL and the passwords the
    boot makes (fieldkit.policies broker files), its listener; nothing of fieldkit's state."""
    rules = [
        "include <abstractions/base>",
        "include <abstractions/nameservice>",
        "include <abstractions/openssl>",
        "include <abstractions/ssl_certs>",
        "# libwrap (tcp wrappers): an unreadable hosts.deny refuses every client",
        "include <abstractions/hosts_access>",
        "",
        "# Started as root, it drops to the user mosquitto.",
        "capability setuid,",
        "capability setgid,",
        "capability dac_read_search,",
        "capability dac_override,",
        "capability chown,",
        "network inet stream,",
        "network inet6 stream,",
        "network unix,",
        "",
        f"{MOSQUITTO_BINARY} mr,",
        "/etc/mosquitto/{,**} r,",
        f"{BROKER_CONFIG_PATH} r,",
        f"{BROKER_ACL_PATH} r,",
        f"{BROKER_PASSWORD_PATH} r,",
        "/run/mosquitto/{,**} rwk,",
        "/var/lib/mosquitto/{,**} rwk,",
        "/var/log/mosquitto/{,**} rwk,",
        "/run/systemd/notify w,",
    ]
    body = "\n".join(f"  {r}" if r else "" for r in rules)
    return (
        f"# {GENERATED.format(kind='services')}\n"
        "# The bus broker, enforced (issue 19).\n"
        f"{HEADER}\n"
        f"profile {MOSQUITTO} {MOSQUITTO_BINARY} flags=(attach_disconnected) {{\n{body}\n}}\n"
    )


def cupsd_local() -> str:
    """Added to Debian's cupsd profile: its refusal of CAP_NET_ADMIN (which cupsd asks for and
    does without; the booted tablet logged it at every start) kept, and not logged."""
    return f"# {GENERATED.format(kind='services')}\ndeny capability net_admin,\n"


def freshclam_local(mirror_ca: str) -> str:
    """Added to Debian's freshclam profile: the kit CA, its only CA for the hub mirror
    (clamav-freshclam.service's drop-in sets CURL_CA_BUNDLE to it)."""
    return f"# {GENERATED.format(kind='services')}\n{mirror_ca} r,\n"


def services_of(policies: PolicySet, role: str) -> list[str]:
    """The fieldkit services of ``role`` that get a profile: every rendered unit's."""
    from fieldkit.registry import specs_for_role

    names = [spec.name for spec in specs_for_role(role)]
    if role == "hub":
        names += [HUB_ENROL, HUB_CA_SIGNER]
    return names


# antivirus.toml's default mirror_ca, for a rendering without the policy folder.
DEFAULT_MIRROR_CA = "/etc/fieldkit/kit-ca.crt"


def render_apparmor(policies: PolicySet, role: str, mirror_ca: str | None = None) -> RenderedFiles:
    """Every AppArmor file the image installs for ``role``: path -> text. ``mirror_ca``:
    antivirus.toml's (the CA freshclam trusts for the hub mirror)."""
    files: RenderedFiles = {
        profile_path(apparmor_profile(name)): service_profile(policies, name, role)
        for name in services_of(policies, role)
    }
    files[profile_path("usr.sbin.mosquitto")] = mosquitto_profile()
    if role == "tablet":
        files[profile_path("usr.lib.chromium.chromium")] = chromium_profile(policies)
        files[LOCAL_DIR / "usr.bin.freshclam"] = freshclam_local(mirror_ca or DEFAULT_MIRROR_CA)
        files[LOCAL_DIR / "usr.sbin.cupsd"] = cupsd_local()
    return files


def debian_profiles(role: str) -> list[str]:
    """Debian's profile files the role's image keeps enforced: cupsd's and freshclam's on the
    tablet; freshclam's alone on the hub, which has no CUPS (its role installs
    clamav-freshclam; cvdupdate fills its mirror)."""
    return sorted(DEBIAN_PROFILES) if role == "tablet" else ["usr.bin.freshclam"]


def enforced_profiles(policies: PolicySet, role: str) -> list[str]:
    """The profile names the booted device must show loaded in enforce mode."""
    names = [apparmor_profile(n) for n in services_of(policies, role)] + [MOSQUITTO]
    if role == "tablet":
        names += [CHROMIUM]
    names += [DEBIAN_PROFILES[name] for name in debian_profiles(role)]
    return sorted(names)


__all__ = [
    "CHROMIUM",
    "DEBIAN_PROFILES",
    "HUB_PKI",
    "MOSQUITTO",
    "debian_profiles",
    "enforced_profiles",
    "render_apparmor",
    "service_profile",
    "writable_paths",
]
