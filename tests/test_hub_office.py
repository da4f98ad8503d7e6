"""The hub's own office network (issue 18, R16, R18, R30): `fieldkit hub network` and
`fieldkit network apply` on the hub, on a real nftables, apt-config and requests.

The hub reaches the office's DNS, the office's time servers and the office's HTTP(S) proxy,
nothing else: no port 443 to the world. The fielded ruleset is loaded into a network namespace
of the test's own (as tests/test_network.py does for the tablet); nothing leaves it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import ValidationError

from fieldkit.network import (
    APT_PROXY_PATH,
    RESOLV_PATH,
    TIMESYNCD_PATH,
    NetworkError,
    placeholders_in_ruleset,
)
from fieldkit.office import (
    CVD_DROPIN_PATH,
    OFFICE_FILE,
    OfficeNetwork,
    office_policy,
    render_office,
)
from fieldkit.policies import (
    NFTABLES_PATH,
    PolicyError,
    ansible_vars,
    load_policies,
    nftables_ruleset,
    render,
)
from tests.support.netns_probe import needs_netns, seen_in_netns

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "policies"
OFFICE = {"dns": ["10.1.0.53"], "time": ["10.1.0.123"], "proxy": {"host": "10.1.0.8", "port": 8080}}
OFFICE_ARGS = ["--dns", "10.1.0.53", "--time", "10.1.0.123", "--proxy", "10.1.0.8:8080"]


def fieldkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldkit", *args], capture_output=True, text=True, check=False
    )


def hub_network(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fieldkit("hub", "network", "--root", str(root), "--policies", str(POLICIES), *args)


def rendered(**office: object) -> dict[object, str]:
    return dict(render_office(load_policies(POLICIES).network, OfficeNetwork(**(OFFICE | office))))


def outbound_rules(ruleset: str) -> list[str]:
    chain = ruleset[ruleset.index("chain output") :]
    return [line.strip() for line in chain.splitlines() if line.strip().endswith('"')]


def test_the_office_network_replaces_every_hub_placeholder() -> None:
    """Fielded: the office's DNS, time and proxy (its port too), nothing else out; the same
    inbound rules as the image; DNS, time, apt and cvdupdate pointed at the office's."""
    files = rendered()
    ruleset = files[NFTABLES_PATH]
    assert placeholders_in_ruleset(ruleset) == []
    assert outbound_rules(ruleset) == [
        'udp sport 68 udp dport 67 accept comment "dhcp"',
        'ip daddr { 10.1.0.53 } udp dport { 53 } accept comment "hub-dns"',
        'ip daddr { 10.1.0.123 } udp dport { 123 } accept comment "hub-time"',
        'ip daddr { 10.1.0.8 } tcp dport { 8080 } accept comment "hub-proxy"',
    ]
    image = render(load_policies(POLICIES), "network", "hub")[NFTABLES_PATH]
    assert ruleset[: ruleset.index("chain output")] == image[: image.index("chain output")]
    assert "443 }" not in ruleset[ruleset.index("chain output") :]
    assert "nameserver 10.1.0.53" in files[RESOLV_PATH].splitlines()
    assert "NTP=10.1.0.123" in files[TIMESYNCD_PATH] and "FallbackNTP=\n" in files[TIMESYNCD_PATH]
    assert 'Acquire::http::Proxy "http://10.1.0.8:8080/";' in files[APT_PROXY_PATH]
    assert 'Acquire::https::Proxy "http://10.1.0.8:8080/";' in files[APT_PROXY_PATH]
    dropin = files[CVD_DROPIN_PATH].splitlines()
    assert '"https_proxy=http://10.1.0.8:8080/"' in dropin[2]
    assert dropin[3:] == ["IPAddressAllow=", "IPAddressAllow=10.1.0.53 10.1.0.8"]
    # IPv6 office servers: the proxy's URL in brackets.
    six = rendered(dns=["fd00::53"], proxy={"host": "fd00::8", "port": 3128})
    assert 'Proxy "http://[fd00::8]:3128/"' in six[APT_PROXY_PATH]
    assert (
        'ip6 daddr { fd00::8 } tcp dport { 3128 } accept comment "hub-proxy"' in six[NFTABLES_PATH]
    )


def test_without_a_proxy_nothing_goes_to_the_internet_and_the_check_says_so(
    tmp_path: Path,
) -> None:
    files = rendered(proxy=None)
    assert [r.rsplit('"', 2)[1] for r in outbound_rules(files[NFTABLES_PATH])] == [
        "dhcp",
        "hub-dns",
        "hub-time",
    ]
    assert "Proxy" not in files[APT_PROXY_PATH].replace("--proxy", "")
    assert "proxy=" not in files[CVD_DROPIN_PATH]
    assert files[CVD_DROPIN_PATH].splitlines()[-1] == "IPAddressAllow=10.1.0.53"
    root = tmp_path / "root"
    # The admin must say so: no --proxy and no --no-proxy is refused.
    done = hub_network(root, "--dns", "10.1.0.53", "--time", "10.1.0.123", "--no-reload")
    assert done.returncode == 2 and "--no-proxy" in done.stdout, done.stdout
    assert not root.exists()
    done = hub_network(root, "--dns", "10.1.0.53", "--time", "10.1.0.123", "--no-proxy")
    assert done.returncode == 0, done.stdout
    assert "no security updates" in done.stdout
    check = fieldkit("network", "check", "--root", str(root))
    assert check.returncode == 1 and "names no proxy" in check.stdout, check.stdout
    assert hub_network(root, *OFFICE_ARGS, "--no-reload").returncode == 0
    assert fieldkit("network", "check", "--root", str(root)).returncode == 0


def test_the_hub_policy_has_no_way_out_but_the_offices(tmp_path: Path) -> None:
    """Both ways: the repo's hub rules each take an office address; a rule to the world (the
    old official-databases rule, port 443 to a fixed network) is refused by the policy loader,
    and one slipped past it is refused with its placeholder by the office's apply."""
    network = load_policies(POLICIES).network
    assert {(r.name, r.site) for r in network.hub.outbound} == {
        ("hub-dns", "dns"),
        ("hub-time", "time"),
        ("hub-proxy", "proxy"),
    }
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    path = policies / "network.yaml"
    world = (
        '    - {name: av-official, addresses: ["151.101.0.0/16"], protocol: tcp, ports: [443]}\n'
    )
    text = path.read_text()
    # the rule goes into the hub's outbound list, wherever that stands in the file
    first = "    - {name: hub-dns, site: dns,"
    assert text.count(first) == 1
    path.write_text(text.replace(first, world + first))
    with pytest.raises(PolicyError, match=r"hub\.outbound rule av-official: the hub reaches only"):
        load_policies(policies)
    path.write_text(path.read_text().replace(world, "").replace("site: printer", "site: proxy"))
    with pytest.raises(PolicyError, match="site 'proxy' is the hub's"):
        load_policies(policies)
    unsited = network.hub.outbound[0].model_copy(update={"site": None})
    bypassed = network.model_copy(
        update={"hub": network.hub.model_copy(update={"outbound": [unsited]})}
    )
    with pytest.raises(NetworkError, match=r"fielded hub .* 192\.0\.2\.53 in rule\(s\) hub-dns"):
        office_policy(bypassed, OfficeNetwork(**OFFICE))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dns", "192.0.2.53"], "192.0.2.53 is a documentation placeholder"),
        (["--time", "ntp.office.example"], "'ntp.office.example' is not an IP address"),
        (["--proxy", "198.51.100.8:3128"], "198.51.100.8 is a documentation placeholder"),
        (["--proxy", "proxy.office:3128"], "'proxy.office' is not an IP address"),
        (["--proxy", "10.1.0.8"], "is not IP:PORT"),
        (["--proxy", "10.1.0.8:0"], "proxy.port: Input should be greater than or equal to 1"),
        (["--dns", "224.0.0.251"], "224.0.0.251 is not a host's address"),
        (["--dns", "10.1.0.300"], "'10.1.0.300' is not an IP address"),
    ],
)
def test_a_bad_office_address_changes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    given = dict(zip(OFFICE_ARGS[::2], OFFICE_ARGS[1::2], strict=True))
    given.update(dict(zip(args[::2], args[1::2], strict=True)))
    done = hub_network(root, *(x for pair in given.items() for x in pair))
    assert done.returncode == 2, done.stdout
    assert "office network not set, nothing changed" in done.stdout
    assert message in done.stdout, done.stdout
    assert list(root.iterdir()) == []


def test_network_apply_on_the_hub_fields_the_image_and_the_boot_reapplies(tmp_path: Path) -> None:
    """The built image's ruleset fails the check; the admin's command fields it; at boot the
    unit applies the kept file again (before it exists: the image's rules stay); a broken file
    changes nothing."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    built = fieldkit(
        "policy", "--policies", str(POLICIES), "render", "network", "--role", "hub",
        "--root", str(root),
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    image_ruleset = (root / "etc/nftables.conf").read_text()
    check = fieldkit("network", "check", "--root", str(root))
    assert check.returncode == 1 and "192.0.2.80" in check.stdout
    boot = ["network", "apply", "--role", "hub", "--boot", "--root", str(root), "--no-reload"]
    done = fieldkit(*boot, "--policies", str(POLICIES))
    assert done.returncode == 0 and "no office network yet" in done.stdout, done.stdout
    assert (root / "etc/nftables.conf").read_text() == image_ruleset
    done = hub_network(root, *OFFICE_ARGS, "--no-apply")
    assert done.returncode == 0, done.stdout
    kept = root / OFFICE_FILE.relative_to("/")
    assert (kept.stat().st_mode & 0o777) == 0o644
    assert (root / "etc/nftables.conf").read_text() == image_ruleset  # kept, not applied
    done = fieldkit(*boot, "--policies", str(POLICIES))
    assert done.returncode == 0, done.stdout
    assert (root / "etc/nftables.conf").read_text() == rendered()[NFTABLES_PATH]
    assert (root / CVD_DROPIN_PATH.relative_to("/")).is_file()
    assert fieldkit("network", "check", "--root", str(root)).returncode == 0
    shown = fieldkit("hub", "network", "--root", str(root))
    assert shown.returncode == 0 and "port = 8080" in shown.stdout, shown.stdout
    # A file broken by hand: refused, the fielded network stays as it was.
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    kept.write_text(kept.read_text().replace("10.1.0.53", "192.0.2.53"))
    done = fieldkit(*boot, "--policies", str(POLICIES))
    assert done.returncode == 2 and "nothing changed" in done.stdout
    assert "dns: Value error, 192.0.2.53 is a documentation placeholder" in done.stdout
    after = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p != kept}
    assert after == {p: b for p, b in before.items() if p != kept}
    assert fieldkit("network", "check", "--root", str(root)).returncode == 1


def test_the_hub_image_carries_the_boot_unit_and_cvdupdate_waits_for_it() -> None:
    hub = ansible_vars(load_policies(POLICIES), "hub", POLICIES)
    unit = hub["firewall_site_network_unit"]
    assert (
        "ExecStart=/opt/fieldkit/venv/bin/python -m fieldkit network apply --boot --role hub"
        in unit
    )
    assert "datavol" not in unit
    tablet = ansible_vars(load_policies(POLICIES), "tablet", POLICIES)["firewall_site_network_unit"]
    assert "--role" not in tablet and "datavol" in tablet
    template = (REPO / "ansible/roles/hub/templates/fieldkit-cvd-update.service.j2").read_text()
    assert (
        "After=network-online.target fieldkit-hub-setup.service fieldkit-site-network.service"
        in (template)
    )
    # The image's cvdupdate unit: the placeholders of the proxy and DNS rules, nothing else.
    assert hub["hub_cvd_address_allow"] == ["192.0.2.53", "192.0.2.80"]


@pytest.mark.skipif(shutil.which("apt-config") is None, reason="needs apt-config")
def test_apt_reads_the_office_proxy(tmp_path: Path) -> None:
    conf = tmp_path / "30fieldkit-proxy"
    conf.write_text(rendered()[APT_PROXY_PATH])
    done = subprocess.run(
        ["apt-config", "-c", str(conf), "dump", "Acquire"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert 'Acquire::http::Proxy "http://10.1.0.8:8080/";' in done.stdout.splitlines()
    assert 'Acquire::https::Proxy "http://10.1.0.8:8080/";' in done.stdout.splitlines()


# cvdupdate downloads with requests; with the drop-in's environment its HTTPS request goes to
# the proxy (CONNECT), without it straight to the name (which, in an empty namespace, fails).
REQUESTS_PROBE = textwrap.dedent(
    """
    import json, os, socket, sys, threading
    import requests
    server = socket.socket()
    server.bind(("127.0.0.1", int(sys.argv[1])))
    server.listen()
    seen = []
    def answer():
        while True:
            conn, _ = server.accept()
            seen.append(conn.recv(200).decode().splitlines()[0])
            conn.close()
    threading.Thread(target=answer, daemon=True).start()
    environment = json.loads(sys.argv[2])
    for use in (True, False):
        for key in environment:
            os.environ.pop(key, None)
        if use:
            os.environ.update(environment)
        try:
            requests.get("https://database.clamav.net/daily.cvd", timeout=3)
        except requests.RequestException:
            pass
        print(json.dumps({"proxy": use, "seen": seen[:]}))
        seen.clear()
    """
)


@needs_netns
def test_cvdupdates_requests_goes_through_the_office_proxy(tmp_path: Path) -> None:
    import shlex

    pytest.importorskip("cvdupdate")
    port = 3128
    body = rendered(proxy={"host": "127.0.0.1", "port": port})[CVD_DROPIN_PATH]
    line = next(ln for ln in body.splitlines() if ln.startswith("Environment="))
    environment = dict(
        item.split("=", 1) for item in shlex.split(line.removeprefix("Environment="))
    )
    assert environment["https_proxy"] == f"http://127.0.0.1:{port}/"
    probe = tmp_path / "probe.py"
    probe.write_text(REQUESTS_PROBE)
    script = f"ip link set lo up && {sys.executable} {probe} {port} '{json.dumps(environment)}'"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    runs = [json.loads(line) for line in done.stdout.splitlines()]
    assert runs == [
        {"proxy": True, "seen": ["CONNECT database.clamav.net:443 HTTP/1.0"]},
        {"proxy": False, "seen": []},
    ]


PROBE = textwrap.dedent(
    """
    import socket, sys
    for target in sys.argv[1:]:
        proto, host, port = target.split(":")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as s:
            s.settimeout(0.3)
            try:
                s.connect((host, int(port)))
                s.send(b"x")
            except OSError:
                pass  # nobody answers on the veth peer; what counts is what left
    """
)
# A second table, after the fielded one: it records every TCP and UDP packet that got past
# the fielded output chain (postrouting sees only what the output hook accepted).
SEEN = (
    "nft add table inet probe"
    " && nft add set inet probe seen"
    " '{ type inet_proto . ipv4_addr . inet_service; flags dynamic; }'"
    " && nft add chain inet probe post '{ type filter hook postrouting priority 100; }'"
    " && nft add rule inet probe post meta l4proto '{ tcp, udp }'"
    " update @seen '{ meta l4proto . ip daddr . th dport }'"
)
ALLOWED = {"udp:10.1.0.53:53", "udp:10.1.0.123:123", "tcp:10.1.0.8:8080"}
DROPPED = {
    "tcp:151.101.2.132:443",  # the internet's HTTPS (e.g. ClamAV's CDN), not via the proxy
    "tcp:151.101.2.132:80",
    "tcp:10.1.0.8:443",  # the proxy's host, another port
    "tcp:10.1.0.9:443",  # another host of the office
    "tcp:10.1.0.53:53",  # DNS over TCP: not in the policy
    "udp:10.1.0.9:53",  # another DNS server
    "udp:151.101.2.132:123",  # a time server on the internet (Debian's pool)
}


def left_the_hub(tmp_path: Path, ruleset: str) -> set[str]:
    """What got past ``ruleset``'s output chain, in a private network namespace."""
    path = tmp_path / "fielded.nft"
    path.write_text(ruleset)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    link = (
        "ip link add fk0 type veth peer name fk1 && ip addr add 10.1.0.2/16 dev fk0"
        " && ip link set fk0 up && ip link set fk1 up && ip route add default dev fk0"
    )
    command = f"{sys.executable} {probe} {' '.join(sorted(ALLOWED | DROPPED))}"
    names = {6: "tcp", 17: "udp"}
    return {
        f"{names.get(proto, proto)}:{address}:{port}"
        for proto, address, port in seen_in_netns(link, path, SEEN, command)
    }


@needs_netns
def test_the_fielded_hub_lets_out_only_the_offices_dns_time_and_proxy(tmp_path: Path) -> None:
    """Both ways: the fielded ruleset lets out exactly the office's three; the same probe on a
    ruleset with the old rule to the internet's 443 back sees that packet leave."""
    fielded = rendered()[NFTABLES_PATH]
    assert left_the_hub(tmp_path, fielded) == ALLOWED
    network = office_policy(load_policies(POLICIES).network, OfficeNetwork(**OFFICE))
    world = network.outbound[0].model_copy(
        update={
            "name": "av-official",
            "addresses": ["151.101.0.0/16"],
            "protocol": "tcp",
            "ports": [443],
        }
    )
    holed = network.model_copy(update={"outbound": [*network.outbound, world]})
    assert left_the_hub(tmp_path, nftables_ruleset(holed)) == ALLOWED | {"tcp:151.101.2.132:443"}


def test_a_bad_office_file_is_refused_by_the_model() -> None:
    with pytest.raises(ValidationError, match="dns"):
        OfficeNetwork(dns=[], time=["10.1.0.123"])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        OfficeNetwork.model_validate(OFFICE | {"gateway": "10.1.0.1"})


def test_network_apply_takes_the_role_from_the_device_config(tmp_path: Path) -> None:
    """On the hub, plain `fieldkit network apply` (the admin's, and the same command on a
    tablet) applies the office network: the role is the device config's."""
    from fieldkit.policies import hub_device_config

    config = tmp_path / "device.toml"
    config.write_text(hub_device_config(load_policies(POLICIES)))
    root = tmp_path / "root"
    assert hub_network(root, *OFFICE_ARGS, "--no-apply").returncode == 0
    done = fieldkit(
        "--config", str(config), "network", "apply", "--root", str(root),
        "--policies", str(POLICIES), "--no-reload",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "etc/nftables.conf").read_text() == rendered()[NFTABLES_PATH]
