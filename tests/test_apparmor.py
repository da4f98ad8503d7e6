"""AppArmor profiles rendered with the units from policies/services.yaml (issue 19 item 1).

Host tests of the renderer (fieldkit.apparmor): a profile for every unit, tied to it by
``AppArmorProfile=``, enforced; each names its own folders and allows nothing of another
service's data-volume folder. The rules are matched the way AppArmor matches them (its globs),
so a rule that lets a service reach another's folder is caught, and a test adds one to prove
it. The booted image's tests (tests/test_image_boot.py, tests/test_image_hub_boot.py) load
them in the kernel and show a refusal logged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from fieldkit.apparmor import (
    CHROMIUM,
    enforced_profiles,
    render_apparmor,
    service_profile,
    services_of,
    writable_paths,
)
from fieldkit.policies import (
    PolicySet,
    ansible_vars,
    apparmor_profile,
    load_policies,
    render,
    unit_name,
)
from tests.support.paths import REPO_POLICIES

VARIABLES = {
    "@{PROC}": "/proc",
    "@{sys}": "/sys",
    "@{run}": "/run",
    "@{pid}": "[0-9]+",
    "@{HOME}": "/home/[^/]+",
    "@{profile_name}": "",
}
# Services whose job is to read the other services' areas (by design, services.yaml says why):
# they may read another service's folder, never write it.
SCANNERS = {"antivirus", "wipe"}


def _glob(pattern: str) -> re.Pattern[str]:
    """An AppArmor path glob as a regular expression (``**``, ``*``, ``?``, ``{a,b}``, ``[..]``)."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("@{", i):
            end = pattern.index("}", i)
            out += VARIABLES.get(pattern[i : end + 1], "[^/]+")
            i = end + 1
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "{":
            out, i = out + "(?:", i + 1
        elif c == "}":
            out, i = out + ")", i + 1
        elif c == "," and "(?:" in out and out.count("(?:") > out.count(")"):
            out, i = out + "|", i + 1
        elif c == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out)


def file_rules(profile: str) -> list[tuple[re.Pattern[str], str, str]]:
    """The profile's own path rules: (glob, permissions, the rule's text); deny rules left out."""
    rules = []
    for raw in profile.splitlines():
        line = raw.strip().rstrip(",")
        if line.startswith(("#", "deny ", "include", "abi", "profile")) or not line:
            continue
        line = line.removeprefix("owner ")
        m = re.fullmatch(r"((?:/|@\{)\S*) ([rwklmixPUC]+)", line)
        if m:
            rules.append((_glob(m.group(1)), m.group(2), raw.strip()))
    return rules


def allows(profile: str, path: str, perm: str) -> list[str]:
    """The rules of ``profile`` that give ``perm`` (r or w) on ``path``."""
    return [
        text for glob, perms, text in file_rules(profile) if perm in perms and glob.fullmatch(path)
    ]


@pytest.fixture(scope="module")
def policies() -> PolicySet:
    return load_policies(REPO_POLICIES)


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, target)
    return target


def test_the_glob_matcher_matches_like_apparmor() -> None:
    assert _glob("/var/lib/fieldkit/{,**}").fullmatch("/var/lib/fieldkit/audit/x")
    assert _glob("/var/lib/fieldkit/{,**}").fullmatch("/var/lib/fieldkit/")
    assert not _glob("/var/lib/fieldkit/outbox/**").fullmatch("/var/lib/fieldkit/audit/x")
    assert _glob("/usr/bin/python3.[0-9]*").fullmatch("/usr/bin/python3.11")
    assert not _glob("/tmp/*").fullmatch("/tmp/a/b")
    assert _glob("@{PROC}/@{pid}/**").fullmatch("/proc/12/status")


@pytest.mark.parametrize("role", ["tablet", "hub"])
def test_every_unit_runs_in_its_own_profile_enforced(policies: PolicySet, role: str) -> None:
    """R28: each rendered fieldkit unit names its profile; the profile is rendered beside it,
    named so, not attached by path (the interpreter is shared), never in complain mode."""
    units = {**render(policies, "services", role)}
    files = render_apparmor(policies, role)
    names = services_of(policies, role)
    assert len(names) >= (8 if role == "tablet" else 6)
    for name in names:
        profile = apparmor_profile(name)
        body = files[PurePosixPath("/etc/apparmor.d") / profile]
        assert re.search(rf"^profile {profile} flags=\(attach_disconnected\) \{{$", body, re.M)
        assert "complain" not in body
        path = PurePosixPath("/etc/systemd/system") / unit_name(name)
        unit = units.get(path) or ansible_vars(policies, role)["fieldkit_services_ca_signer_unit"]
        assert f"AppArmorProfile={profile}" in unit.splitlines(), name
    for body in files.values():
        assert "complain" not in body


def test_each_profile_names_its_own_folders(policies: PolicySet) -> None:
    """Sync's outbox, the kiosk's audit trail and the enrolment, the wipe's evidence and the
    device keys (through the data volume's link), the antivirus's state and definitions."""
    wanted = {
        "sync": ["/var/lib/fieldkit/outbox", "/var/lib/fieldkit/enrol"],
        "kiosk": ["/var/lib/fieldkit/audit", "/var/lib/fieldkit/enrol"],
        "wipe": ["/var/lib/fieldkit/wipe", "/var/lib/fieldkit/keys"],
        "antivirus": ["/var/lib/fieldkit/antivirus", "/var/lib/clamav"],
    }
    for name, folders in wanted.items():
        assert set(folders) <= set(writable_paths(policies, name, "tablet")), name
        body = service_profile(policies, name, "tablet")
        for folder in folders:
            assert allows(body, f"{folder}/some-file", "w"), (name, folder)


def _volume_folders(policies: PolicySet) -> dict[str, set[str]]:
    """Each data-volume folder (policies/erasure.yaml) -> the services whose unit may write it."""
    volume = policies.erasure.data_volume
    assert volume is not None
    owners: dict[str, set[str]] = {str(d.path): set() for d in volume.directories}
    for name in services_of(policies, "tablet"):
        for path in writable_paths(policies, name, "tablet"):
            if path in owners:
                owners[path].add(name)
    return owners


def test_no_profile_reaches_another_services_data_folder(policies: PolicySet) -> None:
    """No service's profile may write a data-volume folder that is not its own, and only the
    two scanners (their reason is in services.yaml) may read one."""
    problems = _reaching(policies)
    assert problems == [], problems
    # the data volume's folders are each some service's, or none's (auditd's, the kernel's)
    owners = _volume_folders(policies)
    assert owners["/var/lib/fieldkit/outbox"] == {"sync"}
    assert owners["/var/lib/fieldkit/audit"] == {"kiosk"}
    assert owners["/var/lib/fieldkit/kernel-audit"] == set()


def _reaching(policies: PolicySet) -> list[tuple[str, str, str, list[str]]]:
    problems = []
    for folder, owners in _volume_folders(policies).items():
        probe = f"{folder}/data"
        for name in services_of(policies, "tablet"):
            if name in owners:
                continue
            body = service_profile(policies, name, "tablet")
            if found := allows(body, probe, "w"):
                problems.append((name, folder, "w", found))
            if name not in SCANNERS and (found := allows(body, probe, "r")):
                problems.append((name, folder, "r", found))
    return problems


def test_a_rule_reaching_another_services_folder_is_caught(policy_dir: Path) -> None:
    """The off-case: capture given a read of the kiosk's audit trail fails the check above."""
    path = policy_dir / "services.yaml"
    data = yaml.safe_load(path.read_text())
    data["overrides"]["capture"]["apparmor"]["read"].append("/var/lib/fieldkit/{audit,x}/**")
    path.write_text(yaml.safe_dump(data))
    problems = _reaching(load_policies(policy_dir))
    assert [(p[0], p[1], p[2]) for p in problems] == [
        ("capture", "/var/lib/fieldkit/audit", "r")
    ], problems


def test_the_antivirus_reads_exactly_its_scan_paths(policies: PolicySet) -> None:
    """Its profile's reads beyond the baseline are antivirus.toml's scan_paths, no more."""
    scan = tomllib.loads((REPO_POLICIES / "antivirus.toml").read_text())["antivirus"]["scan_paths"]
    override = policies.services.overrides["antivirus"]
    assert override.apparmor.read == [f"{p}/{{,**}}" for p in scan]


def test_the_kiosk_browser_writes_only_its_memory_only_folders(policies: PolicySet) -> None:
    body = render_apparmor(policies, "tablet")[
        PurePosixPath("/etc/apparmor.d/usr.lib.chromium.chromium")
    ]
    assert allows(body, "/home/kiosk/.config/chromium/Default/Cookies", "w")
    assert allows(body, "/home/kiosk/.cache/chromium/x", "w")
    for other in (
        "/var/lib/fieldkit/audit/x",
        "/etc/fieldkit/device.toml",
        "/var/lib/fieldkit/enrol/bundle/client.key",
    ):
        assert not allows(body, other, "w"), other
    assert not allows(body, "/var/lib/fieldkit/audit/x", "r")
    assert CHROMIUM in enforced_profiles(policies, "tablet")


def test_the_image_installs_the_profiles_from_the_policy_vars(policies: PolicySet) -> None:
    """The apparmor role installs `apparmor_profiles` only (one renderer per file)."""
    for role in ("tablet", "hub"):
        wanted = ansible_vars(policies, role, REPO_POLICIES)["apparmor_profiles"]
        assert wanted == {str(p): b for p, b in render_apparmor(policies, role).items()}
    role = (
        Path(__file__).resolve().parents[1]
        / "ansible"
        / "roles"
        / "apparmor"
        / "tasks"
        / "main.yml"
    )
    assert "apparmor_profiles" in role.read_text()


def test_each_image_keeps_enforced_only_debians_profiles_of_what_it_installs(
    policies: PolicySet,
) -> None:
    """The role checks that each of Debian's profiles it keeps is on the disk: the hub has no
    CUPS, so naming cupsd's profile there failed the hub's build (found on its first AppArmor
    build); the tablet keeps both, the hub freshclam's."""
    import yaml

    ansible = Path(__file__).resolve().parents[1] / "ansible"
    hub_packages = yaml.safe_load((ansible / "roles/hub/defaults/main.yml").read_text())
    assert "clamav-freshclam" in hub_packages["hub_packages"]
    assert not any("cups" in p for p in hub_packages["hub_packages"])
    wanted = {"tablet": ["usr.bin.freshclam", "usr.sbin.cupsd"], "hub": ["usr.bin.freshclam"]}
    for role, profiles in wanted.items():
        assert ansible_vars(policies, role, REPO_POLICIES)["apparmor_debian_profiles"] == profiles
    assert "/usr/sbin/cupsd" not in enforced_profiles(policies, "hub")
    assert "/usr/bin/freshclam" in enforced_profiles(policies, "hub")


@pytest.mark.skipif(shutil.which("apparmor_parser") is None, reason="needs apparmor_parser")
def test_every_profile_compiles(policies: PolicySet, tmp_path: Path) -> None:
    for role in ("tablet", "hub"):
        for path, body in render_apparmor(policies, role).items():
            if "/local/" in str(path):
                continue
            target = tmp_path / path.name
            target.write_text(body)
            done = subprocess.run(
                ["apparmor_parser", "-Q", "-K", "-T", str(target)], capture_output=True, text=True
            )
            assert done.returncode == 0, (path, done.stderr)


def test_the_kiosk_reads_the_wipe_keys_public_half_and_not_the_key(policies: PolicySet) -> None:
    """The enrolment (in the kiosk) names the wipe's pre-enrolment key to the hub: its profile
    reads that key's public half where the image links it (the data volume), never the key."""
    from fieldkit.pki import public_half_file
    from fieldkit.wipe.settings import WipeSection

    key = PurePosixPath(WipeSection().device_key)
    links = {
        PurePosixPath(k): PurePosixPath(v) for k, v in policies.erasure.data_volume.links.items()
    }
    real = links[key.parent] / key.name
    public = PurePosixPath(public_half_file(Path(str(real))))
    profile = service_profile(policies, "kiosk", "tablet")
    assert allows(profile, str(public), "r")
    assert not allows(profile, str(real), "r")


@pytest.mark.parametrize("service", ["hub-broker", "hub-ingest"])
def test_the_hub_services_that_scan_for_sealing_keys_can_read_every_folder(
    policies: PolicySet, tmp_path: Path, service: str
) -> None:
    """hub-broker and hub-ingest refuse to start until they have scanned every folder of the
    hub for a private sealing key (fieldkit.hub.custody). Their profiles must let them read
    each of those folders of the hub image's own config: hub-ingest's did not (it writes
    nothing there), and it failed to start on the first AppArmor hub boot."""
    from fieldkit.config import load_config
    from fieldkit.hub.custody import hub_directories
    from fieldkit.policies import antivirus_policy, hub_device_config

    device = tmp_path / "device.toml"
    device.write_text(hub_device_config(policies, antivirus_policy(REPO_POLICIES)))
    profile = service_profile(policies, service, "hub")
    for folder in hub_directories(load_config(device)):
        for path in (f"{folder}/", f"{folder}/some/file.pem"):
            assert allows(profile, path, "r"), (service, path)
