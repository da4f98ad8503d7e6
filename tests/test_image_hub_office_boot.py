"""The hub image booted in QEMU, fielded on an office network (issue 18; slow).

The VM's only network is QEMU's restricted user network (``restrict=on``): its one way out is a
forward of the "office proxy" address, 10.0.2.100:3128, to a recorder on the host's loopback
that notes each request line and answers 503. Inside, as the provisioning admin would:
``fieldkit network check`` on the built image (placeholders), ``fieldkit hub network`` with the
office's DNS, time and proxy, the check again, the live ruleset, cvdupdate's unit, then apt and
``requests`` (cvdupdate's library, with that unit's environment, as its user) through the proxy,
a direct connection to port 443 refused by the firewall, and the boot unit applying it again.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.image_boot import SCRIPT_HEAD, BootReport, boot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="booting the image's overlay needs root"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="needs QEMU"),
    pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat (QEMU guestfwd)"),
]

PROXY = "10.0.2.100"
OFFICE = f"--dns 10.0.2.3 --time 10.0.2.2 --proxy {PROXY}:3128"
FK = "/opt/fieldkit/venv/bin/fieldkit"
PY = "/opt/fieldkit/venv/bin/python"
REQUESTS = (
    "import requests\n"
    "try:\n"
    "    requests.get('https://database.clamav.net/daily.cvd', timeout=20)\n"
    "except requests.RequestException as exc:\n"
    "    print(type(exc).__name__)\n"
)
# Port 443 of the proxy's host and of "the internet" (10.0.2.101): both are forwarded to the
# recorder too, so a connection the firewall let out would reach it and say so.
WORLD = "10.0.2.101"
DIRECT = (
    "import socket\n"
    f"for host in ('{PROXY}', '{WORLD}'):\n"
    "    try:\n"
    "        with socket.create_connection((host, 443), timeout=10) as s:\n"
    "            s.sendall(f'DIRECT {host}:443\\r\\n'.encode())\n"
    "        print(host, 'connected')\n"
    "    except OSError as exc:\n"
    "        print(host, type(exc).__name__)\n"
)
SCRIPT = (
    SCRIPT_HEAD
    + rf"""section state
timeout 900 systemctl is-system-running --wait
section unit-at-boot
systemctl show -p ActiveState,Result fieldkit-site-network.service
journalctl -b --no-pager -q -o cat -u fieldkit-site-network.service
section check-before
{FK} network check; echo "rc=$?"
section set
{FK} hub network {OFFICE}; echo "rc=$?"
section check-after
{FK} network check; echo "rc=$?"
section live-output
nft list chain inet fieldkit output
section resolv
cat /etc/resolv.conf
section timesync
timedatectl show-timesync -p SystemNTPServers -p FallbackNTPServers
section cvd-unit
systemctl show -p Environment -p IPAddressAllow fieldkit-cvd-update.service
section apt
timeout 180 apt-get -o Acquire::Retries=0 update; echo "rc=$?"
section requests
runuser -u fieldkit -- env $(systemctl show -P Environment fieldkit-cvd-update.service) \
    {PY} -c "{REQUESTS}"
section direct
{PY} -c "{DIRECT}"
section reapply
systemctl restart fieldkit-site-network.service
systemctl show -p ActiveState,Result fieldkit-site-network.service
{FK} network check; echo "rc=$?"
section direct-firewall-off
nft flush ruleset
{PY} -c "{DIRECT}"
section end
sync
systemctl poweroff --no-block
"""
)


class Recorder:
    """The office proxy, as far as the test needs one: the first line of each request, 503."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    data = conn.recv(4096)
                    self.lines.append(data.decode(errors="replace").split("\r\n", 1)[0])
                    conn.sendall(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                        b"Connection: close\r\n\r\n"
                    )
                except OSError:
                    continue


@pytest.fixture(scope="module")
def recorder() -> Iterator[Recorder]:
    found = Recorder()
    yield found
    found.server.close()


@pytest.fixture(scope="module")
def report(
    hub_image_dir: Path, recorder: Recorder, tmp_path_factory: pytest.TempPathFactory
) -> BootReport:
    given = os.environ.get("FIELDKIT_BOOT_WORK")
    work = Path(given) if given else tmp_path_factory.mktemp("hub-office-boot")
    work.mkdir(parents=True, exist_ok=True)
    nic = ",".join(
        [
            "user",
            "model=virtio-net-pci",
            "restrict=on",
            "net=10.0.2.0/24",
            f"guestfwd=tcp:{PROXY}:3128-cmd:socat - TCP:127.0.0.1:{recorder.port}",
            f"guestfwd=tcp:{PROXY}:443-cmd:socat - TCP:127.0.0.1:{recorder.port}",
            f"guestfwd=tcp:{WORLD}:443-cmd:socat - TCP:127.0.0.1:{recorder.port}",
        ]
    )
    found = boot(
        hub_image_dir,
        "hub",
        work,
        timeout=float(os.environ.get("FIELDKIT_BOOT_TIMEOUT", "2400")),
        script=SCRIPT,
        nic=nic,
    )
    print(f"\nhub VM: {found.seconds} s power-on to power-off ({found.accelerator})")
    for name, body in found.sections.items():
        print(f"==> {name}\n{body}")
    print("proxy saw:", recorder.lines)
    return found


def test_the_admin_fields_the_booted_hub_on_the_office_network(
    report: BootReport, recorder: Recorder
) -> None:
    sections = report.sections
    assert "no office network yet" in sections["unit-at-boot"], sections["unit-at-boot"]
    assert "Result=success" in sections["unit-at-boot"]
    assert "rc=1" in sections["check-before"] and "192.0.2.80" in sections["check-before"]
    assert "rc=0" in sections["set"], sections["set"]
    assert "rc=0" in sections["check-after"], sections["check-after"]
    output = sections["live-output"]
    assert f"ip daddr {PROXY} tcp dport 3128 accept" in output, output
    assert "ip daddr 10.0.2.3 udp dport 53 accept" in output
    assert "ip daddr 10.0.2.2 udp dport 123 accept" in output
    assert "443" not in output
    assert "nameserver 10.0.2.3" in sections["resolv"]
    assert "SystemNTPServers=10.0.2.2" in sections["timesync"], sections["timesync"]
    cvd = sections["cvd-unit"]
    assert f"https_proxy=http://{PROXY}:3128/" in cvd and "10.0.2.3" in cvd, cvd
    # Through the proxy: apt's request and cvdupdate's requests' CONNECT reached it.
    assert any(line.startswith("GET http://deb.debian.org/") for line in recorder.lines)
    assert "CONNECT database.clamav.net:443 HTTP/1.0" in recorder.lines, recorder.lines
    assert "ProxyError" in sections["requests"], sections["requests"]
    assert "Result=success" in sections["reapply"] and "rc=0" in sections["reapply"]
    # Port 443 of anything: the firewall drops the SYN (the connect times out) and nothing
    # reaches the recorder; both ways: with the ruleset flushed, the same probe gets through.
    for host in (PROXY, WORLD):
        assert f"{host} TimeoutError" in sections["direct"], sections["direct"]
        assert f"{host} connected" in sections["direct-firewall-off"]
        assert f"DIRECT {host}:443" in recorder.lines, recorder.lines
    assert recorder.lines.count(f"DIRECT {WORLD}:443") == 1
