"""The tablet's site network (R16, R18): `fieldkit network apply` on a real nftables.

The fielded ruleset is loaded into a network namespace of the test's own, with a veth pair
holding the site's subnet; a second nftables table records each TCP packet that got past the
fielded output chain. Nothing leaves the namespace.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fieldkit.network import (
    APT_PROXY_PATH,
    HOSTS_PATH,
    IWD_DIR,
    RESOLV_PATH,
    TIMESYNCD_PATH,
    NetworkError,
    SiteNetwork,
    enrolment_policy,
    iwd_file_name,
    placeholders_in_ruleset,
    render_site,
    site_policy,
)
from fieldkit.policies import (
    NFTABLES_PATH,
    WIRED_NETWORK_PATH,
    WIRELESS_NETWORK_PATH,
    load_policies,
    render,
)
from tests.support.netns_probe import needs_netns, seen_in_netns

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"

SITE = {
    "hub": "10.20.0.5",
    "dns": ["10.20.0.1"],
    "time": ["10.20.0.1"],
    "official_application_host": ["10.99.0.0/24"],
}


def site_file(tmp_path: Path, **extra: object) -> Path:
    lines = [
        f'hub = "{SITE["hub"]}"',
        f"dns = {SITE['dns']!r}".replace("'", '"'),
        f"time = {SITE['time']!r}".replace("'", '"'),
        f"official_application_host = {SITE['official_application_host']!r}".replace("'", '"'),
    ]
    for key, value in extra.items():
        lines.append(f"{key} = {value}")
    path = tmp_path / "site-network.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fieldkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldkit", *args], capture_output=True, text=True, check=False
    )


def apply_site(site: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return fieldkit(
        "network",
        "apply",
        "--site",
        str(site),
        "--root",
        str(root),
        "--policies",
        str(POLICIES),
        *extra,
    )


def rendered(**site: object) -> dict[object, str]:
    return dict(
        render_site(load_policies(POLICIES).network, SiteNetwork(**(SITE | site)), "tablet-01")
    )


def test_the_site_replaces_every_placeholder() -> None:
    files = rendered()
    ruleset = files[NFTABLES_PATH]
    assert placeholders_in_ruleset(ruleset) == []
    assert "10.20.0.5" in ruleset and "8883" in ruleset and "3142" in ruleset
    assert '"printer"' not in ruleset  # no network printer on this site: no rule for one
    assert "nameserver 10.20.0.1" in files[RESOLV_PATH]
    assert "NTP=10.20.0.1" in files[TIMESYNCD_PATH] and "FallbackNTP=\n" in files[TIMESYNCD_PATH]
    assert "10.20.0.5\thub.fieldkit.lan" in files[HOSTS_PATH]
    assert 'Proxy "http://10.20.0.5:3142/"' in files[APT_PROXY_PATH]
    # DHCP gives the address only; DNS and NTP from DHCP would point past the allowlist.
    assert "UseDNS=no" in files[WIRED_NETWORK_PATH] and "UseNTP=no" in files[WIRED_NETWORK_PATH]
    assert WIRELESS_NETWORK_PATH not in files
    with_printer = rendered(printer=["10.20.0.40"])[NFTABLES_PATH]
    assert "10.20.0.40" in with_printer and "dport { 631 }" in with_printer


def test_a_placeholder_left_in_the_policy_is_refused_and_the_check_sees_it() -> None:
    """Both ways: the build's ruleset has placeholders (the check fails on it); a rule without
    ``site:`` keeps its placeholder, and apply refuses to field it."""
    policies = load_policies(POLICIES)
    build_ruleset = render(policies, "network")[NFTABLES_PATH]
    assert "192.0.2.10" in placeholders_in_ruleset(build_ruleset)
    rule = policies.network.rule("hub-mqtt").model_copy(update={"site": None})
    unsited = policies.network.model_copy(
        update={"outbound": [rule, *policies.network.outbound[1:]]}
    )
    with pytest.raises(
        NetworkError, match=r"placeholder addresses: 192\.0\.2\.10 in rule\(s\) hub-mqtt"
    ):
        site_policy(unsited, SiteNetwork(**SITE))
    with pytest.raises(NetworkError, match=r"203\.0\.113\.7"):
        site_policy(policies.network, SiteNetwork(**(SITE | {"hub": "203.0.113.7"})))


@pytest.mark.parametrize(
    ("ssid", "name"),
    [
        ("Kominkan-WiFi", "Kominkan-WiFi.psk"),
        ("公民館", "=e585ace6b091e9a4a8.psk"),
        ("a.b", "=612e62.psk"),
    ],
)
def test_iwd_file_names(ssid: str, name: str) -> None:
    assert iwd_file_name(ssid) == name


def test_apply_writes_atomically_keeps_the_passphrase_private_and_drops_stale_wifi(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("tablet-07\n")
    wifi = '{ssid = "Kominkan-WiFi", passphrase = "correct horse battery"}'
    done = apply_site(site_file(tmp_path, wifi=wifi), root)
    assert done.returncode == 0, done.stdout + done.stderr
    psk = root / IWD_DIR.relative_to("/") / "Kominkan-WiFi.psk"
    assert "Passphrase=correct horse battery" in psk.read_text()
    assert stat.S_IMODE(psk.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/nftables.conf").stat().st_mode) == 0o700
    assert "127.0.1.1\ttablet-07" in (root / "etc/hosts").read_text()
    assert (root / WIRELESS_NETWORK_PATH.relative_to("/")).is_file()
    # The passphrase never reaches the output.
    assert "correct horse" not in done.stdout + done.stderr
    # The site drops its Wi-Fi: the old network and its passphrase are gone.
    done = apply_site(site_file(tmp_path), root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not psk.exists() and not (root / WIRELESS_NETWORK_PATH.relative_to("/")).exists()
    assert not [p for p in root.rglob(".*") if p.is_file()]  # no temporary file left


def test_the_services_address_lists_follow_the_site(tmp_path: Path) -> None:
    """The units were rendered with the policy's placeholders in ``IPAddressAllow=``; the site
    replaces them with a drop-in per service that names a network rule (sync: the hub's
    broker; the kiosk: the hub's enrolment port; antivirus: the hub's mirror), reset first.
    At boot a tablet not enrolled yet keeps the image's rules and the unit succeeds."""
    policies = load_policies(POLICIES)
    files = render_site(policies.network, SiteNetwork(**SITE), "t", policies.services)
    dropins = {str(p): body for p, body in files.items() if p.name == "site-network.conf"}
    assert set(dropins) == {
        "/etc/systemd/system/fieldkit-sync.service.d/site-network.conf",
        "/etc/systemd/system/fieldkit-kiosk.service.d/site-network.conf",
        "/etc/systemd/system/fieldkit-antivirus.service.d/site-network.conf",
    }
    for body in dropins.values():
        lines = body.splitlines()
        assert lines[lines.index("[Service]") + 1] == "IPAddressAllow="
        allowed = lines[-1].removeprefix("IPAddressAllow=").split()
        assert allowed == ["localhost", "10.20.0.5"], body
    # The image's units, before: the placeholders and the private ranges.
    units = render(policies, "services", "tablet")
    sync = next(b for p, b in units.items() if p.name == "fieldkit-sync.service")
    assert "IPAddressAllow=localhost 192.0.2.10" in sync.splitlines()
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    done = apply_site(site_file(tmp_path), root, "--hostname", "t")
    assert done.returncode == 0, done.stdout
    assert (root / "etc/systemd/system/fieldkit-sync.service.d/site-network.conf").is_file()
    missing = tmp_path / "not-enrolled" / "site-network.toml"
    done = apply_site(missing, tmp_path / "empty", "--boot")
    assert done.returncode == 0 and "no site network yet" in done.stdout, done.stdout
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"hub": '"hub.example.jp"'}, "'hub.example.jp' is not an IP address"),
        ({"dns": "[]"}, "dns: List should have at least 1 item"),
        ({"wifi": '{ssid = "x", passphrase = "short"}'}, "wifi.passphrase"),
        ({"official_application_host": '["0.0.0.0/0"]'}, "whole address space"),
        ({"gateway": '"10.0.0.1"'}, "gateway"),
    ],
)
def test_a_bad_site_file_changes_nothing(
    tmp_path: Path, extra: dict[str, str], message: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    path = site_file(tmp_path)
    text = path.read_text()
    for key, value in extra.items():
        lines = [ln for ln in text.splitlines() if not ln.startswith(f"{key} =")]
        text = "\n".join([*lines, f"{key} = {value}"]) + "\n"
    path.write_text(text)
    done = apply_site(path, root, "--hostname", "t")
    assert done.returncode == 2
    assert "network not applied, nothing changed" in done.stdout
    assert message in done.stdout
    assert list(root.iterdir()) == []


def test_check_fails_on_the_build_ruleset_and_passes_on_the_fielded_one(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    build = fieldkit(
        "policy", "--policies", str(POLICIES), "render", "network", "--root", str(root)
    )
    assert build.returncode == 0, build.stderr
    done = fieldkit("network", "check", "--root", str(root))
    assert done.returncode == 1 and "192.0.2.10" in done.stdout
    applied = apply_site(site_file(tmp_path), root, "--hostname", "t")
    assert applied.returncode == 0, applied.stdout
    assert fieldkit("network", "check", "--root", str(root)).returncode == 0


PROBE = textwrap.dedent(
    """
    import socket, sys
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.3)
            try:
                s.connect((host, int(port)))
            except OSError:
                pass  # nobody answers on the veth peer; what counts is what left
    """
)
# A second table, after the fielded one: it records every TCP packet that got past the
# fielded output chain (postrouting sees only what the output hook accepted).
SEEN = (
    "nft add table inet probe"
    " && nft add set inet probe seen '{ type ipv4_addr . inet_service; flags dynamic; }'"
    " && nft add chain inet probe post '{ type filter hook postrouting priority 100; }'"
    " && nft add rule inet probe post meta l4proto tcp update @seen '{ ip daddr . tcp dport }'"
)


@needs_netns
def test_the_fielded_firewall_lets_out_only_the_sites_servers(tmp_path: Path) -> None:
    ruleset = tmp_path / "fielded.nft"
    ruleset.write_text(rendered(printer=["10.20.0.40"])[NFTABLES_PATH])
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    allowed = {
        "10.20.0.5:8883",  # hub broker
        "10.20.0.5:3142",  # hub apt proxy
        "10.20.0.40:631",  # network printer
        "10.99.0.8:443",  # official application host
    }
    dropped = {
        "10.20.0.5:22",  # hub, a port the policy does not list
        "10.20.0.9:443",  # another host on the site network
        "10.99.0.8:80",  # the application host, not over TLS
    }
    link = (
        "ip link add fk0 type veth peer name fk1 && ip addr add 10.20.0.2/16 dev fk0"
        " && ip link set fk0 up && ip link set fk1 up && ip route add 10.99.0.0/24 dev fk0"
    )
    command = f"{sys.executable} {probe} {' '.join(sorted(allowed | dropped))}"
    left = {f"{a}:{p}" for a, p in seen_in_netns(link, ruleset, SEEN, command)}
    assert left == allowed


def test_before_enrolment_only_the_hubs_enrolment_port_is_open() -> None:
    policy = enrolment_policy(load_policies(POLICIES).network, "10.20.0.5")
    assert [(r.name, r.addresses, r.ports) for r in policy.outbound] == [
        ("hub-enrol", ["10.20.0.5"], [8443])
    ]
    assert policy.inbound == [] and policy.default == "drop"
    with pytest.raises(ValueError, match="not an IP address"):
        enrolment_policy(load_policies(POLICIES).network, "hub.example.jp")


ESP_SYNC = REPO / "ansible/roles/base/files/fieldkit-esp-sync"


def test_a_kernel_update_reaches_the_esp_and_an_older_kernel_never_replaces_it(
    tmp_path: Path,
) -> None:
    boot, esp = tmp_path / "boot", tmp_path / "esp"
    boot.mkdir()
    esp.mkdir()
    env = os.environ | {"FIELDKIT_BOOT": str(boot), "FIELDKIT_ESP": str(esp)}

    def install(version: str, initrd: bool = True) -> None:
        (boot / f"vmlinuz-{version}").write_text(f"kernel {version}")
        if initrd:
            (boot / f"initrd.img-{version}").write_text(f"initrd {version}")

    def hook(version: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(ESP_SYNC), version], env=env, capture_output=True, text=True, check=False
        )

    install("6.1.0-25-amd64")
    assert hook("6.1.0-25-amd64").returncode == 0
    assert (esp / "fieldkit/vmlinuz").read_text() == "kernel 6.1.0-25-amd64"
    # The security update: the kernel's hook runs before its initrd exists, then the
    # initramfs hook runs; the ESP changes only when both are there, both at once.
    install("6.1.0-28-amd64", initrd=False)
    assert hook("6.1.0-28-amd64").returncode == 0
    assert (esp / "fieldkit/vmlinuz").read_text() == "kernel 6.1.0-25-amd64"
    install("6.1.0-28-amd64")
    assert hook("6.1.0-28-amd64").returncode == 0
    assert (esp / "fieldkit/vmlinuz").read_text() == "kernel 6.1.0-28-amd64"
    assert (esp / "fieldkit/initrd.img").read_text() == "initrd 6.1.0-28-amd64"
    # An older kernel rebuilt or reinstalled does not take the newest one's place.
    assert hook("6.1.0-25-amd64").returncode == 0
    assert (esp / "fieldkit/vmlinuz").read_text() == "kernel 6.1.0-28-amd64"
    assert sorted(p.name for p in (esp / "fieldkit").iterdir()) == ["initrd.img", "vmlinuz"]
