"""policies/: validation, rendering, and the real tools that read the renderings.

R11, R16, R28, R30.
"""

from __future__ import annotations

import getpass
import json
import re
import shutil
import subprocess
import time
from pathlib import Path, PurePosixPath

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from fieldkit.broker import LocalBroker, free_loopback_port
from fieldkit.bus import Endpoint
from fieldkit.cli import main
from fieldkit.config import BusSection, RunnerSection
from fieldkit.policies import (
    BROWSER_POLICY_PATH,
    NFTABLES_PATH,
    USBGUARD_RULES_PATH,
    PolicyError,
    ansible_vars,
    chromium_policy,
    hub_device_config,
    load_policies,
    mount_unit_name,
    render,
    service_unit,
)
from tests.support.paths import REPO_POLICIES


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A writable copy of the repository's policies, for tests that break one."""
    target = tmp_path / "policies"
    shutil.copytree(REPO_POLICIES, target)
    return target


def edit(directory: Path, kind: str, change: dict[str, object]) -> None:
    path = directory / f"{kind}.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    path.write_text(yaml.safe_dump(data, allow_unicode=True))


def test_repository_policies_load() -> None:
    policies = load_policies(REPO_POLICIES)
    assert policies.network.default == "drop"
    assert policies.services.max_exposure <= 2.0


@pytest.mark.parametrize(
    ("kind", "change", "key"),
    [
        ("browser", {"remember.passwords": True}, "remember.passwords"),  # R11
        ("browser", {"remember.addresses": True}, "remember.addresses"),  # R11
        ("browser", {"remember.browsing_history": True}, "remember.browsing_history"),
        ("browser", {"clear_on_exit": ["autofill"]}, "clear_on_exit"),
        ("browser", {"kiosk_url": "http://192.0.2.1/"}, "kiosk_url"),
        ("browser", {"allowed_urls": ["*"]}, "allowed_urls"),
        ("erasure", {"core_dumps": True}, "core_dumps"),  # R12
        ("erasure", {"swap": True}, "swap"),
        ("erasure", {"cups.preserve_job_files": True}, "cups.preserve_job_files"),
        ("erasure", {"tmpfs": [{"path": "/var/tmp", "size": "1M", "mode": "1777"}]}, "tmpfs"),
        ("network", {"default": "accept"}, "default"),  # R16
        (
            "network",
            {
                "outbound": [
                    {"name": "all", "addresses": ["0.0.0.0/0"], "protocol": "tcp", "ports": [443]}
                ]
            },
            "outbound.0.addresses",
        ),
        (
            "network",
            {
                "outbound": [
                    {
                        "name": "named",
                        "addresses": ["hub.example"],
                        "protocol": "tcp",
                        "ports": [443],
                    }
                ]
            },
            "outbound.0.addresses",
        ),
        ("usb", {"allow_interfaces": [{"name": "stick", "interface": "08:06:50"}]}, "(top level)"),
        ("usb", {"block_interfaces": [{"name": "nothing", "interface": "ff:*:*"}]}, "(top level)"),
        ("services", {"sandbox.NoNewPrivileges": "no"}, "sandbox"),
        ("services", {"sandbox.ExecStartPre": "x\nExecStart=/bin/sh"}, "sandbox"),
        ("services", {"overrides": {"sync": {"network": ["nowhere"]}}}, "overrides.sync.network"),
        # A unit that runs as root or above the ceiling says why, or it does not load.
        ("services", {"overrides.wipe.why": ""}, "overrides.wipe"),
        ("services", {"overrides": {"sync": {"max_exposure": 9.0}}}, "overrides.sync"),
        ("services", {"bogus": 1}, "bogus"),
    ],
)
def test_a_policy_that_weakens_a_protection_does_not_load(
    policy_dir: Path, kind: str, change: dict[str, object], key: str
) -> None:
    edit(policy_dir, kind, change)
    with pytest.raises(PolicyError) as caught:
        load_policies(policy_dir)
    message = str(caught.value)
    assert kind in message
    assert key in message or (key == "overrides.sync.network" and "nowhere" in message)


def test_broken_yaml_is_named(policy_dir: Path) -> None:
    (policy_dir / "usb.yaml").write_text("kind: usb\n  bad: [indent\n")
    with pytest.raises(PolicyError, match=r"usb\.yaml is not valid YAML"):
        load_policies(policy_dir)


def test_browser_policy_turns_off_every_memory_of_the_applicant() -> None:
    """R11: password manager, autofill and history off; R17: no search; URL allowlist only."""
    policy = chromium_policy(load_policies(REPO_POLICIES).browser)
    assert policy["PasswordManagerEnabled"] is False
    assert policy["AutofillAddressEnabled"] is False
    assert policy["AutofillCreditCardEnabled"] is False
    assert policy["AutofillSettings"] == [
        {"url_pattern": "*", "blocked_types": ["contact_info", "payments"]}
    ]
    assert policy["SavingBrowserHistoryDisabled"] is True
    assert policy["SearchSuggestEnabled"] is False
    assert policy["DefaultSearchProviderEnabled"] is False
    assert policy["IncognitoModeAvailability"] == 1
    assert policy["DeveloperToolsAvailability"] == 2
    assert policy["DownloadRestrictions"] == 3
    assert policy["URLBlocklist"] == ["*"]
    assert "http://127.0.0.1:8080" in policy["URLAllowlist"]
    assert len(policy["ClearBrowsingDataOnExitList"]) == 8


def test_cli_renders_the_browser_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "--policies", str(REPO_POLICIES), "render", "browser"]) == 0
    rendered = json.loads(capsys.readouterr().out)
    assert rendered == chromium_policy(load_policies(REPO_POLICIES).browser)


def test_cli_writes_below_a_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["policy", "--policies", str(REPO_POLICIES), "render", "all", "--root", str(tmp_path)])
        == 0
    )
    assert (tmp_path / str(BROWSER_POLICY_PATH).lstrip("/")).is_file()
    assert (tmp_path / str(NFTABLES_PATH).lstrip("/")).is_file()
    assert (tmp_path / "etc/systemd/system/fieldkit-monitor.service").is_file()


def test_cli_reports_a_bad_policy_in_one_line(
    policy_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(policy_dir, "erasure", {"swap": True})
    assert main(["policy", "--policies", str(policy_dir), "check"]) == 1
    err = capsys.readouterr().err
    assert "erasure.yaml" in err and "swap" in err and "Traceback" not in err


def test_ansible_vars_carry_the_renderings() -> None:
    policies = load_policies(REPO_POLICIES)
    values = ansible_vars(policies, "tablet")
    browser = render(policies, "browser")[BROWSER_POLICY_PATH]
    assert values["kiosk_browser_policy_json"] == browser
    assert values["usbguard_rules"] == render(policies, "usb")[USBGUARD_RULES_PATH]
    assert values["cups_settings"] == {"PreserveJobHistory": "No", "PreserveJobFiles": "No"}
    assert "/etc/systemd/system/fieldkit-monitor.service" in values["fieldkit_services_units"]
    json.dumps(values)  # the playbooks read it as JSON


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto")
def test_the_images_bus_broker_config_is_the_kits_and_mosquitto_runs_it(tmp_path: Path) -> None:
    """R6, R29: one renderer for the bus broker. The image's mosquitto.conf is what
    `LocalBroker` renders for the same listener and files, and mosquitto starts on it (its
    paths moved into a temporary folder) and refuses an anonymous client."""
    values = ansible_vars(load_policies(REPO_POLICIES), "tablet")
    config = values["broker_config"]
    bus = BusSection()
    kit = LocalBroker(tmp_path / "run", [], Endpoint(host=bus.host, port=bus.port))
    assert config == kit.render_config().replace(
        f"user {getpass.getuser()}", "user mosquitto"
    ).replace(str(kit.conf_dir / "passwords"), values["broker_password_path"]).replace(
        str(kit.conf_dir / "acl"), values["broker_acl_path"]
    )
    assert "persistence false" in config.splitlines()
    port = free_loopback_port()
    moved = (
        config.replace(values["broker_password_path"], str(tmp_path / "passwd"))
        .replace(values["broker_acl_path"], str(tmp_path / "acl"))
        .replace(f"listener {bus.port} ", f"listener {port} ")
        .replace("user mosquitto", f"user {getpass.getuser()}")
    )
    (tmp_path / "passwd").write_text("")
    (tmp_path / "acl").write_text(values["broker_acl"])
    (tmp_path / "mosquitto.conf").write_text(moved)
    process = subprocess.Popen(["mosquitto", "-c", str(tmp_path / "mosquitto.conf")])
    try:
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.connect("127.0.0.1", port)
                break
            except ConnectionRefusedError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        refused: list[object] = []
        client.on_connect = lambda c, u, f, reason, p: refused.append(reason.is_failure)
        client.loop_start()
        deadline = time.monotonic() + 10
        while not refused and time.monotonic() < deadline:
            time.sleep(0.05)
        client.loop_stop()
        assert refused == [True]  # anonymous: not authorised
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.skipif(shutil.which("systemd-escape") is None, reason="needs systemd-escape")
@pytest.mark.parametrize(
    "path", ["/tmp", "/var/spool/cups", "/home/kiosk/.config/chromium", "/var/lib/a-b/c d"]
)
def test_mount_unit_names_match_systemd(path: str) -> None:
    expected = subprocess.run(
        ["systemd-escape", "--path", "--suffix=mount", path],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert mount_unit_name(PurePosixPath(path)) == expected


def exposure(unit: Path) -> float:
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout + out.stderr)
    assert found, out.stdout[-500:] + out.stderr[-500:]
    return float(found.group(1))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_every_service_unit_is_sandboxed(tmp_path: Path) -> None:
    """R30: each rendered fieldkit unit rates at or below the policy's exposure ceiling."""
    policies = load_policies(REPO_POLICIES)
    units = render(policies, "services", "tablet") | render(policies, "services", "hub")
    assert units
    for path, body in units.items():
        unit = tmp_path / path.name
        unit.write_text(body)
        service = path.name.removeprefix("fieldkit-").removesuffix(".service")
        assert exposure(unit) <= policies.services.ceiling(service), path.name
    # The ceiling means something: the same units without the sandbox fail it.
    bare = policies.model_copy(
        update={"services": policies.services.model_copy(update={"sandbox": {}})}
    )
    unsandboxed = tmp_path / "fieldkit-bare.service"
    unsandboxed.write_text(service_unit("monitor", "bare", bare))
    assert exposure(unsandboxed) > policies.services.max_exposure


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_per_service_overrides_stay_under_the_ceiling(tmp_path: Path) -> None:
    policies = load_policies(REPO_POLICIES)
    for name in policies.services.overrides:
        unit = tmp_path / f"fieldkit-{name}.service"
        body = service_unit(name, "override check", policies)
        unit.write_text(body)
        assert exposure(unit) <= policies.services.ceiling(name), name
    sync = service_unit("sync", "x", policies)
    assert "IPAddressAllow=localhost 192.0.2.10" in sync


def test_service_units_say_when_they_are_up_and_that_their_work_thread_lives() -> None:
    """Issue 15 item 5: systemd kills and restarts a hung service, with the runner's setting."""
    policies = load_policies(REPO_POLICIES)
    units = render(policies, "services", "tablet") | render(policies, "services", "hub")
    watchdog = RunnerSection().watchdog_seconds
    assert watchdog > 0
    for path, body in units.items():
        lines = body.splitlines()
        assert "Type=notify" in lines, path.name
        assert f"WatchdogSec={watchdog:g}s" in lines, path.name
        # SIGKILL, not the default SIGABRT: no core dump of a memory that held applicant data.
        assert "WatchdogSignal=SIGKILL" in lines, path.name
        assert "Restart=on-failure" in lines, path.name
    by_name = {path.name: body.splitlines() for path, body in units.items()}
    # Under gunicorn the worker, a child of the unit's main process, notifies.
    assert "NotifyAccess=all" in by_name["fieldkit-kiosk.service"]
    assert "NotifyAccess=all" in by_name["fieldkit-hub-web.service"]
    assert "NotifyAccess=all" in by_name["fieldkit-hub-enrol.service"]
    assert "NotifyAccess=main" in by_name["fieldkit-wipe.service"]
    assert "NotifyAccess=main" in by_name["fieldkit-monitor.service"]


def nft_in_private_netns(script: str) -> subprocess.CompletedProcess[str]:
    # A network namespace of our own: loading the ruleset never touches the host's firewall.
    return subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=False
    )


@pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None, reason="needs nft, unshare"
)
def test_nftables_ruleset_loads_and_drops_by_default(tmp_path: Path) -> None:
    """R16: the rendered ruleset is valid nftables with policy drop on every hook."""
    ruleset = tmp_path / "fieldkit.nft"
    ruleset.write_text(render(load_policies(REPO_POLICIES), "network")[NFTABLES_PATH])
    probe = nft_in_private_netns(f"nft -f {ruleset} && nft list ruleset")
    if probe.returncode != 0 and "Operation not permitted" in probe.stderr:
        pytest.skip("no permission for a private network namespace")
    assert probe.returncode == 0, probe.stderr
    listed = probe.stdout
    assert listed.count("policy drop;") == 3
    assert "192.0.2.10" in listed and "dport 8883" in listed
    assert "policy accept" not in listed


def test_freshclam_conf_comes_from_the_antivirus_policy(policy_dir: Path) -> None:
    """R10: the image's freshclam.conf is the antivirus service's rendering of its policy."""
    from fieldkit.policies import freshclam_conf

    conf = freshclam_conf(REPO_POLICIES)
    assert "PrivateMirror https://" in conf and "DatabaseMirror" not in conf
    values = ansible_vars(load_policies(REPO_POLICIES), "tablet", REPO_POLICIES)
    assert values["antivirus_freshclam_conf"] == conf
    # freshclam's daemon and the antivirus service trust the kit CA alone for the HTTPS mirror:
    # the kit CA as CURL_CA_BUNDLE, and an empty system CA folder in their namespaces.
    from fieldkit.antivirus.engine import freshclam_sandbox
    from fieldkit.policies import antivirus_policy

    policy = antivirus_policy(REPO_POLICIES)
    sandbox = freshclam_sandbox(policy)
    dropin = values["antivirus_freshclam_dropin"].splitlines()
    assert f"Environment=CURL_CA_BUNDLE={policy.mirror_ca}" in dropin
    assert f"TemporaryFileSystem={sandbox['TemporaryFileSystem']}" in dropin
    units = render(load_policies(REPO_POLICIES), "services", "tablet")
    antivirus_unit = next(b for p, b in units.items() if p.name == "fieldkit-antivirus.service")
    assert f"TemporaryFileSystem={sandbox['TemporaryFileSystem']}" in antivirus_unit.splitlines()
    (policy_dir / "antivirus.toml").write_text('[antivirus]\nmirror_url = "ftp://x"\n')
    with pytest.raises(PolicyError, match=r"antivirus\.toml: mirror_url"):
        freshclam_conf(policy_dir)


def test_the_tablet_image_ships_a_device_config_enrolment_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image's /etc/fieldkit/device.toml (rendered once, installed by the role): valid,
    the kiosk's enrolment screen on, the audit trail and roster on the data volume, the
    broker left to mosquitto.service; what enrolment writes replaces the placeholder id."""
    from fieldkit.config import load_config
    from fieldkit.policies import UNENROLLED_ID, image_device_config

    policies = load_policies(REPO_POLICIES)
    text = image_device_config(policies)
    assert ansible_vars(policies, "tablet")["fieldkit_services_device_config"] == text
    # The hub ships its own (test_the_hub_image_listens_where_its_firewall_opens).
    hub_config = ansible_vars(policies, "hub")["fieldkit_services_device_config"]
    assert hub_config == hub_device_config(policies)
    config_file = tmp_path / "device.toml"
    config_file.write_text(text)
    bundle = tmp_path / "bundle"
    monkeypatch.setenv("FIELDKIT_SYNC__BUNDLE", str(bundle))
    fresh = load_config(config_file)
    assert fresh.device.id == UNENROLLED_ID and fresh.enrol.kiosk_screen
    assert not fresh.bus.launch_broker
    volume = policies.erasure.data_volume
    assert volume is not None
    assert fresh.kiosk.audit_log is not None and fresh.kiosk.audit_log.is_relative_to(
        str(volume.mount)
    )
    assert fresh.sync.roster_path().is_relative_to(str(volume.mount))
    bundle.mkdir()
    (bundle / "enrolment.toml").write_text('[device]\nid = "tab-01"\nsite = "会館"\n')
    enrolled = load_config(config_file)
    assert (enrolled.device.id, enrolled.device.site) == ("tab-01", "会館")


def test_a_service_with_its_own_command_runs_it_in_the_image() -> None:
    """The kiosk serves HTTP under gunicorn (its spec's ``command``, as `fieldkit up` runs it):
    its unit runs that command with the device's venv python and tells it the config file;
    the others run ``python -m fieldkit.serve NAME``. (The booted image found the kiosk's unit
    running the bare service: on the bus, but no page to show.)"""
    policies = load_policies(REPO_POLICIES)
    units = {p.name: body for p, body in render(policies, "services", "tablet").items()}
    kiosk = units["fieldkit-kiosk.service"].splitlines()
    assert (
        "ExecStart=/opt/fieldkit/venv/bin/python -m gunicorn --config "
        'python:fieldkit.kiosk.gunicorn_conf "fieldkit.kiosk.app:create_app()"'
    ) in kiosk
    assert "Environment=FIELDKIT_CONFIG=/etc/fieldkit/device.toml" in kiosk
    assert "NotifyAccess=all" in kiosk
    sync = units["fieldkit-sync.service"].splitlines()
    assert (
        "ExecStart=/opt/fieldkit/venv/bin/python -m fieldkit.serve sync "
        "--config /etc/fieldkit/device.toml"
    ) in sync
    assert not any(line.startswith("Environment=FIELDKIT_CONFIG") for line in sync)


def usbguard_verdict(rules: str, interfaces: list[str]) -> str:
    """What the rendered rules do with a device of these interfaces (USBGuard: first match
    wins; ``one-of`` matches any interface, ``match-all`` needs every one; ``*`` a wildcard)."""

    def matches(pattern: str, interface: str) -> bool:
        return all(
            p in ("*", i) for p, i in zip(pattern.split(":"), interface.split(":"), strict=True)
        )

    for line in rules.splitlines():
        found = re.fullmatch(r"(allow|block) with-interface (one-of|match-all) \{ (.+) \}", line)
        if not found:
            continue
        target, mode, patterns = found[1], found[2], found[3].split()
        hits = [any(matches(p, i) for p in patterns) for i in interfaces]
        if any(hits) if mode == "one-of" else all(hits):
            return target
    return "block"  # implicit_policy


@pytest.mark.parametrize(
    ("interfaces", "verdict"),
    [
        (["0b:00:00"], "allow"),  # a CCID smart-card reader (issue 22)
        (["0b:00:00", "03:01:01"], "allow"),  # a reader with a keypad
        (["0b:00:00", "08:06:50"], "block"),  # a reader with a storage function
        (["08:06:50"], "block"),
        (["ff:00:00"], "block"),
    ],
)
def test_the_usb_rules_let_a_card_reader_in_and_nothing_that_stores(
    interfaces: list[str], verdict: str
) -> None:  # R16 R23
    rules = render(load_policies(REPO_POLICIES), "usb")[USBGUARD_RULES_PATH]
    assert usbguard_verdict(rules, interfaces) == verdict


def test_without_the_reader_rule_a_card_reader_is_blocked(policy_dir: Path) -> None:
    """The check can fail: the reader is allowed by its line in usb.yaml, not by chance."""
    data = yaml.safe_load((policy_dir / "usb.yaml").read_text())
    allowed = [i for i in data["allow_interfaces"] if not i["interface"].startswith("0b:")]
    edit(policy_dir, "usb", {"allow_interfaces": allowed})
    rules = render(load_policies(policy_dir), "usb")[USBGUARD_RULES_PATH]
    assert usbguard_verdict(rules, ["0b:00:00"]) == "block"


def test_each_unit_is_handed_only_its_own_bus_password_and_parsers_run_as_their_own_user() -> None:
    """Issue 17 item 5: every unit gets exactly its identity's bus password from systemd
    (``LoadCredential=``; the files under /run are root's), after the boot oneshot made them;
    the services that parse outside input run as a user of their own in the shared group, the
    others as the services' user (the wipe as root). The booted image checks the same live
    (tests/test_image_boot.py::check_bus_credentials)."""
    policies = load_policies(REPO_POLICIES)
    services = policies.services
    assert {"capture", "card", "printing"} <= set(services.own_users)
    for role in ("tablet", "hub"):
        for path, body in render(policies, "services", role).items():
            name = path.name.removeprefix("fieldkit-").removesuffix(".service")
            lines = body.splitlines()
            credentials = [x for x in lines if x.startswith("LoadCredential=")]
            if name == "hub-enrol":  # not on the bus: no password, no wait for the oneshot
                assert credentials == [] and not any("bus-credentials" in x for x in lines)
                continue
            assert credentials == [f"LoadCredential=bus-{name}:/run/fieldkit/credentials/{name}"]
            assert "Wants=fieldkit-bus-credentials.service" in lines, path.name
            assert any(
                x.startswith("After=") and "fieldkit-bus-credentials.service" in x for x in lines
            ), path.name
            user = next(x.removeprefix("User=") for x in lines if x.startswith("User="))
            group = next(x.removeprefix("Group=") for x in lines if x.startswith("Group="))
            if name in services.own_users:
                assert (user, group) == (f"fieldkit-{name}", "fieldkit"), path.name
            elif name == "wipe":
                assert (user, group) == ("root", "root")
            else:
                assert (user, group) == ("fieldkit", "fieldkit"), path.name
            # The enrolment folder's group: the kiosk's and sync's alone (the device's keys);
            # the integrity reports' group: sync's alone (issue 19, read_groups).
            extra = [x for x in lines if x.startswith("SupplementaryGroups=")]
            expected = {
                "kiosk": ["SupplementaryGroups=fieldkit-enrol"],
                "sync": [
                    "SupplementaryGroups=fieldkit-enrol",
                    "SupplementaryGroups=fieldkit-integrity",
                ],
            }
            assert extra == expected.get(name, []), path.name
    # One user per tablet service: the kiosk's is the services' user, every other its own.
    tablet = [p.name for p in render(policies, "services", "tablet")]
    users = [services.user_of(n.removeprefix("fieldkit-").removesuffix(".service")) for n in tablet]
    assert len(set(users)) == len(users), users
    # The image makes those users and the group (ansible/roles/fieldkit_services/tasks/user.yml).
    made = ansible_vars(policies, "tablet")
    assert sorted(made["fieldkit_services_own_users"]) == sorted(
        f"fieldkit-{n}" for n in services.own_users
    )
    assert made["fieldkit_services_shared_groups"] == {
        "fieldkit-enrol": ["fieldkit", "fieldkit-sync"],
        "fieldkit-integrity": ["fieldkit-sync"],
    }


def test_a_shared_group_names_two_services_and_is_not_the_services_own_group() -> None:
    """services.yaml shared_groups: a group of one service shares nothing, and the services'
    group is every service's; both are refused, saying which."""
    policies = load_policies(REPO_POLICIES)
    raw = policies.services.model_dump(mode="json")
    for groups, message in (
        ({"fieldkit-enrol": ["kiosk"]}, "name two services or more"),
        ({"fieldkit": ["kiosk", "sync"]}, "not a group name of its own"),
    ):
        with pytest.raises(ValidationError, match=message):
            type(policies.services).model_validate({**raw, "shared_groups": groups})
    # A read group may have one member, but not a name another group has.
    for groups, message in (
        ({"fieldkit-enrol": ["sync"]}, "not a group name of its own"),
        ({"fieldkit-integrity": []}, "name the services that read"),
    ):
        with pytest.raises(ValidationError, match=message):
            type(policies.services).model_validate({**raw, "read_groups": groups})


def test_a_data_volume_folder_needs_a_group_the_image_makes(policy_dir: Path) -> None:
    """A folder owned by a service's own user takes no group of that name (there is none):
    without ``group:`` the volume's layout unit would fail at boot. Refused, saying which."""
    erasure = yaml.safe_load((policy_dir / "erasure.yaml").read_text())
    outbox = next(d for d in erasure["data_volume"]["directories"] if d["path"].endswith("outbox"))
    del outbox["group"]
    (policy_dir / "erasure.yaml").write_text(yaml.safe_dump(erasure, allow_unicode=True))
    with pytest.raises(PolicyError, match="outbox has group 'fieldkit-sync'"):
        load_policies(policy_dir)


def test_a_service_user_cannot_be_claimed_twice() -> None:
    """A service both in own_users and with a user override is refused, saying which."""
    policies = load_policies(REPO_POLICIES)
    raw = policies.services.model_dump(mode="json")
    raw["own_users"] = [*raw["own_users"], "wipe"]
    with pytest.raises(ValidationError, match="wipe already runs as root"):
        type(policies.services).model_validate(raw)


def test_a_unit_reads_its_bus_password_from_systemds_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under systemd the password is in $CREDENTIALS_DIRECTORY (the runtime dir's file is
    root's); without it (the development runner, root's tools) the runtime dir's file."""
    from fieldkit.bus import BusError, read_password

    runtime, handed = tmp_path / "run", tmp_path / "credentials"
    (runtime / "credentials").mkdir(parents=True)
    handed.mkdir()
    (runtime / "credentials" / "capture").write_text("from-the-runtime-dir\n")
    (handed / "bus-capture").write_text("from-systemd\n")
    assert read_password(runtime, "capture") == "from-the-runtime-dir"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(handed))
    assert read_password(runtime, "capture") == "from-systemd"
    with pytest.raises(BusError, match="no bus credentials for identity 'kiosk'"):
        read_password(runtime, "kiosk")


def test_the_hub_image_listens_where_its_firewall_opens(tmp_path: Path) -> None:
    """Issue 18: the hub image's device config puts each hub service on the port its
    ``hub.inbound`` rule opens, with TLS from the kit PKI; the hub's ruleset holds the hub's
    rules only (none of the tablet's), and each listening service's sandbox lets the site's
    network in; the database has no address (its unix socket only)."""
    from fieldkit.config import load_config

    policies = load_policies(REPO_POLICIES)
    config_file = tmp_path / "device.toml"
    config_file.write_text(hub_device_config(policies))
    config = load_config(config_file)
    network = policies.network
    assert config.device.role == "hub"
    listening = {
        "tablets-mqtt": ("hub-broker", config.hub.broker_port),
        "tablets-enrol": ("hub-enrol", config.enrol.listen_port),
        "tablets-av-mirror": ("av-mirror", config.av_mirror.port),
        "hub-web": ("hub-web", config.hubweb.listen_port),
    }
    units = {p.name: body for p, body in render(policies, "services", "hub").items()}
    for rule_name, (service, port) in listening.items():
        rule = network.rule(rule_name)
        assert rule.ports == [port], rule_name
        allow = next(
            line
            for line in units[f"fieldkit-{service}.service"].splitlines()
            if line.startswith("IPAddressAllow=")
        )
        assert set(rule.addresses) <= set(allow.split("=", 1)[1].split()), service
    assert config.hubweb.tls_cert == config.hub.pki / "hub" / "server.crt"
    # The antivirus mirror: HTTPS with the same certificate; enrolment hands the tablets the
    # policy's https:// URL, whose host the first boot puts in that certificate.
    from fieldkit.policies import antivirus_policy

    assert config.av_mirror.tls_cert == config.hubweb.tls_cert
    assert config.av_mirror.tls_key == config.hubweb.tls_key
    mirror_url = antivirus_policy(REPO_POLICIES).mirror_url
    assert mirror_url is not None and mirror_url.startswith("https://")
    assert config.enrol.antivirus_mirror == mirror_url
    hub_vars = ansible_vars(policies, "hub", REPO_POLICIES)
    names = hub_vars["hub_tls_dns_names"]
    assert names == ["localhost", "hub.fieldkit.lan"] and f"//{names[1]}:" in mirror_url
    # cvdupdate's unit reaches the office's proxy and DNS only (network.yaml's hub rules; the
    # office network's drop-in replaces these placeholders, fieldkit.office).
    official = [*network.rule("hub-proxy").addresses, *network.rule("hub-dns").addresses]
    assert hub_vars["hub_cvd_address_allow"] == sorted(set(official))
    assert config.hubweb.cookie_secure and config.hubweb.proxy_hops == 0
    assert "/run/postgresql" in config.hub.database_url and "@/" in config.hub.database_url
    ruleset = render(policies, "network", "hub")[NFTABLES_PATH]
    for rule in network.hub.inbound + network.hub.outbound:
        assert f'comment "{rule.name}"' in ruleset, rule.name
    for rule in network.inbound + network.outbound:
        assert f'comment "{rule.name}"' not in ruleset, rule.name
    # A tablet's site network never writes the hub services' address lists.
    assert "hub-broker" not in str(render(policies, "network", "tablet"))
