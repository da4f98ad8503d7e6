"""The built tablet in the field: a hub on the host, the tablet enrolled through its own kiosk.

The VM's network is QEMU's user network with ``restrict=on``: DHCP gives the tablet
10.0.2.15, and its only ways out are the hub's ports at :data:`HUB_ADDRESS`, each forwarded
(``guestfwd``, one ``socat`` per connection) to a port on the host's loopback where the
development hub listens. Nothing else is reachable, from the VM or through it.

Two boots of one overlay, one TPM state (one device):

1. :data:`FIRST_BOOT`: the standard report (the kiosk on its enrolment screen, every service
   up before enrolment), then staff's part, done as the kiosk's browser would: the enrolment
   page fetched from the kiosk, the hub address and the one-time code (handed over fw_cfg)
   posted with its CSRF token. The kiosk says to restart the tablet; the VM powers off.
2. :data:`SECOND_BOOT`: the standard report again, now enrolled (every unit running), plus
   the site network applied at boot, the services' address lists, sync's link to the hub,
   and the compliance run on the live device (its data volume and firewall as the kernel
   has them).
"""

from __future__ import annotations

import re
from fnmatch import fnmatch

from fieldkit.policies import PolicySet
from tests.support.image_boot import EXTRA_MARK, NOT_SERVICES, REPORT_SCRIPT, BootReport

HUB_ADDRESS = "10.0.2.100"
# Guest port -> what listens behind it on the host (named; the test picks the host ports).
HUB_PORTS = {"enrol": 8443, "broker": 8883, "mirror": 8081}
FW = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.fieldkit"
VENV_PYTHON = "/opt/fieldkit/venv/bin/python"


def field_nic(host_ports: dict[str, int]) -> str:
    """QEMU ``-nic``: a user network whose only exits are the hub's ports on the host."""
    parts = ["user", "model=virtio-net-pci", "restrict=on", "net=10.0.2.0/24"]
    for name, guest_port in HUB_PORTS.items():
        if name in host_ports:
            parts.append(
                f"guestfwd=tcp:{HUB_ADDRESS}:{guest_port}"
                f"-cmd:socat - TCP:127.0.0.1:{host_ports[name]}"
            )
    return ",".join(parts)


# Staff at the enrolment screen: the page, its CSRF token, the form posted (the kiosk's own
# HTTP, on the tablet's loopback). Prints the status, whether the kiosk said "enrolled", and
# its refusal if any.
ENROL_PY = r"""
import http.cookiejar, re, sys, urllib.error, urllib.parse, urllib.request
hub, code = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
first = opener.open("http://127.0.0.1:8080/", timeout=120)
print("first page", first.status, first.url)
page = first.read().decode()
token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
form = {"hub": hub, "code": code, "csrf_token": token.group(1) if token else ""}
try:
    body = urllib.parse.urlencode(form).encode()
    answer = opener.open("http://127.0.0.1:8080/enrol", body, timeout=300)
    status, body = answer.status, answer.read().decode()
except urllib.error.HTTPError as exc:
    status, body = exc.code, exc.read().decode()
print("status", status)
print("enrolled" if 'id="enrolled"' in body else "not enrolled")
refusal = re.search(r'id="enrol-error">([^<]*)<', body)
print("refusal", refusal.group(1) if refusal else "-")
"""

VOLUME_WAIT = r"""
section datavol-wait
wait_for 300 mountpoint -q /var/lib/fieldkit && echo mounted || echo "not mounted"
"""

FIRST = (
    VOLUME_WAIT
    + rf"""
section enrol-before
test -e /var/lib/fieldkit/enrol/bundle && echo enrolled || echo "not enrolled"
section enrol
cat > /run/enrol.py <<'PY'
{ENROL_PY}
PY
{VENV_PYTHON} /run/enrol.py {HUB_ADDRESS}:{HUB_PORTS["enrol"]} "$(cat {FW}/enrol-code/raw)"
section enrol-files
stat -c '%U %G %a %n' /etc/fieldkit/bundle /var/lib/fieldkit/enrol /var/lib/fieldkit/enrol/bundle \
    /var/lib/fieldkit/enrol/bundle/* /var/lib/fieldkit/enrol/operators.json 2>&1
readlink /etc/fieldkit/bundle
section enrol-kiosk-journal
journalctl -b --no-pager -q -o cat -u fieldkit-kiosk.service | tail -n 30
section service-journals
for unit in $(units 'fieldkit-*.service'); do
    [ "$(systemctl show -P NRestarts "$unit")" = 0 ] && continue
    echo "--- $unit"
    journalctl -b --no-pager -q -o cat -u "$unit" | tail -n 40
done
section seccomp
journalctl -b --no-pager -q -k -o cat | grep "type=1326" | tail -n 20 || echo none
"""
)

# The end of the second boot: a canary in three encodings written where sync keeps its outbox
# (on the volume, as a session's packets are), then the contract-end purge of the enrolled
# tablet, signed with its enrolled key; the host then scans the whole disk.
PURGE = rf"""
section canary-write
c=$(cat {FW}/canary/raw)
d=/var/lib/fieldkit/outbox
printf '%s' "$c" > "$d/canary-ascii.txt"
printf '%s' "$c" | iconv -f ASCII -t UTF-16LE > "$d/canary-utf16le.txt"
cat {FW}/canary.jpg/raw > "$d/canary.jpg"
sync
ls "$d" | grep -c canary
section wipe
start=$(date +%s)
/opt/fieldkit/venv/bin/fieldkit wipe device --yes --sanitized-by "field test" --org fieldkit
echo "exit $?"
echo "seconds $(($(date +%s) - start))"
section certificate
cat /var/lib/fieldkit-certificates/*.json
section after
cryptsetup isLuks /dev/disk/by-partlabel/fieldkit-data && echo "still LUKS" || echo "no LUKS"
findmnt -n /var/lib/fieldkit || echo "not mounted"
"""

SECOND = (
    VOLUME_WAIT
    + r"""
section site-network
systemctl show --no-pager -p ActiveState,Result fieldkit-site-network.service
journalctl -b --no-pager -q -o cat -u fieldkit-site-network.service
section address-allow
for unit in fieldkit-sync.service fieldkit-kiosk.service fieldkit-antivirus.service; do
    echo "$unit $(systemctl show -P IPAddressAllow "$unit")"
done
section network-check
/opt/fieldkit/venv/bin/fieldkit network check
section sync-link
linked() {
    journalctl -b -q -o cat -u fieldkit-sync.service | grep -q "connected to the hub broker"
}
wait_for 300 linked && echo connected || echo "not connected"
section sync-journal
journalctl -b --no-pager -q -o cat -u fieldkit-sync.service | tail -n 40
section status
/opt/fieldkit/venv/bin/fieldkit status
section enrolled-config
/opt/fieldkit/venv/bin/fieldkit config check
section listening
/opt/fieldkit/venv/bin/python -c '
from fieldkit.network import listening_sockets
for sock in listening_sockets():
    print(sock)
'
section enabled-units
systemctl list-unit-files --state=enabled --no-legend --no-pager | awk '{print $1}'
section sysctl
sysctl -a 2>/dev/null | grep -E '^(kernel|fs|net|dev)\.' | sed 's/\t/ /g'
section mdns
avahi=avahi-daemon.service
echo "$(systemctl is-enabled $avahi 2>&1) $(systemctl is-active $avahi 2>&1)"
section installed-services
systemctl list-units --all --type=service --no-legend --no-pager --plain | awk '{print $1, $3, $4}'
section compliance
/opt/fieldkit/venv/bin/fieldkit compliance run --json /run/compliance.json
echo "exit $?"
section compliance-checks
/opt/fieldkit/venv/bin/python -c '
import json
for c in json.load(open("/run/compliance.json"))["checks"]:
    print(c["verdict"], c["name"], "|", c["detail"])
'
"""
    + r"""
section service-journals
for unit in $(units 'fieldkit-*.service'); do
    [ "$(systemctl show -P NRestarts "$unit")" = 0 ] && continue
    echo "--- $unit"
    journalctl -b --no-pager -q -o cat -u "$unit" | tail -n 40
done
section seccomp
journalctl -b --no-pager -q -k -o cat | grep "type=1326" | tail -n 20 || echo none
"""
)
# The enrolled tablet's checks (before the purge); tests/support/kit_vms.py adds its own.
SECOND_CHECKS = SECOND
SECOND = SECOND_CHECKS + PURGE

FIRST_BOOT = REPORT_SCRIPT.replace(EXTRA_MARK, FIRST)
SECOND_BOOT = REPORT_SCRIPT.replace(EXTRA_MARK, SECOND)


def show_units(report: BootReport) -> dict[str, dict[str, str]]:
    units: dict[str, dict[str, str]] = {}
    for block in report.sections.get("fieldkit-show", "").split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            units[props["Id"]] = props
    return units


def live_exposure(report: BootReport) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(
            r"Overall exposure level for (\S+): ([0-9.]+)", report.sections.get("security", "")
        )
    }


def check_every_service_running(report: BootReport, policies: PolicySet) -> None:
    """Every fieldkit service unit active (running), never restarted, its live exposure at or
    below its ceiling; the boot finished with no failed unit."""
    assert report.lines("state") == ["running"], report.sections.get("failed")
    assert report.lines("settle")[:1] == ["settled"], report.sections.get("settle")
    units = {u: p for u, p in show_units(report).items() if u.endswith(".service")}
    services = {
        unit: props
        for unit, props in units.items()
        if not any(fnmatch(unit, pattern) for pattern in NOT_SERVICES)
    }
    expected = {f"fieldkit-{name}.service" for name in policies_services(policies)}
    assert set(services) == expected, sorted(services)
    for props in services.values():
        assert (props["ActiveState"], props["SubState"]) == ("active", "running"), props
        assert props["NRestarts"] == "0", props
    exposure = live_exposure(report)
    for unit in services:
        name = unit.removeprefix("fieldkit-").removesuffix(".service")
        assert exposure[unit] <= policies.services.ceiling(name), (unit, exposure[unit])


def policies_services(policies: PolicySet) -> list[str]:
    from fieldkit.registry import specs_for_role

    return [s.name for s in specs_for_role("tablet")]
