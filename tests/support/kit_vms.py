"""The whole kit in two VMs (issue 18 item 4): the hub image and a tablet image side by side.

The network: each VM has a QEMU user network with ``restrict=on`` (nothing leaves it on its
own). The hub VM's only ways in are its inbound ports (enrolment 8443, broker 8883, mirror
8081, web 8444), each forwarded from a port on the host's loopback (47000-47999). The tablet's
only ways out are the hub's ports at the policy's hub address (10.0.2.100, the address on the
kit PKI's hub certificate), each relayed (``guestfwd``, socat) to the hub VM's forward: the
tablet reaches the hub VM and nothing else; the host reaches the hub's web app as the
municipality's browser would. No traffic leaves the host's loopback.

The hub VM runs :func:`hub_script`: every hub unit up (``hub_boot.HUB_UP``), then the kit's
site set-up as the provisioning admin does it (the kit PKI the tablet image was built for, from
fw_cfg, in place of the one the first boot made; the enrolment hand-out of the site's network;
a municipality user; a one-time code for the tablet), then it waits on its third serial port
for the host's word and reports what the hub holds of the tablet before powering off.
"""

from __future__ import annotations

import socket
import tarfile
import time
from pathlib import Path
from typing import Any

from tests.support.field_boot import FIRST, HUB_ADDRESS, HUB_PORTS, PURGE, SECOND_CHECKS
from tests.support.hub_boot import HUB_UP
from tests.support.image_boot import EXTRA_MARK, REPORT_SCRIPT

PORT_RANGE = range(47000, 48000)
# The hub's inbound ports (network.yaml hub.inbound) forwarded from the host.
HUB_GUEST_PORTS = {**HUB_PORTS, "web": 8444}
MUNICIPALITY = "131016"
# The VMs' throwaway web accounts (made in the hub VM, gone with its overlay).
ADMIN = ("kit-admin", "kit-vm-admin-2026-pass")
CLERK = ("kit-clerk", "kit-vm-clerk-2026-pass")
VENV_PYTHON = "/opt/fieldkit/venv/bin/python"
FW = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.fieldkit"


def free_ports(count: int) -> list[int]:
    """``count`` ports in :data:`PORT_RANGE` nothing listens on now."""
    found: list[int] = []
    for port in PORT_RANGE:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise RuntimeError("no free ports in 47000-47999")


def hub_nic(host_ports: dict[str, int]) -> str:
    """The hub VM's ``-nic``: restricted, its inbound ports forwarded from the host's loopback."""
    parts = ["user", "model=virtio-net-pci", "restrict=on", "net=10.0.3.0/24"]
    for name, guest in HUB_GUEST_PORTS.items():
        parts.append(f"hostfwd=tcp:127.0.0.1:{host_ports[name]}-:{guest}")
    return ",".join(parts)


def pki_tar(pki_root: Path, out: Path) -> Path:
    """The kit PKI the tablet image trusts (its CA, the hub's certificates, the roster), as the
    provisioning admin carries it to the hub."""
    with tarfile.open(out, "w") as tar:
        for name in ("ca", "hub", "roster.json"):
            if (pki_root / name).exists():
                tar.add(pki_root / name, arcname=name)
    return out


def hub_script(device: str) -> str:
    """The hub VM's report script for the kit test (see the module's docstring)."""
    return (
        HUB_UP
        + rf"""fk() {{
    runuser -u fieldkit -- {VENV_PYTHON} -m fieldkit --config /etc/fieldkit/device.toml "$@"
}}
section kit-pki
hub_units=$(units --state=running 'fieldkit-*.service')
echo "restarting: $hub_units"
systemctl stop $hub_units
rm -rf /var/lib/fieldkit/pki
install -d -m 0750 /var/lib/fieldkit/pki
tar -xf {FW}/kit-pki.tar/raw -C /var/lib/fieldkit/pki --no-same-owner
# The site's enrolment hand-out, set by the admin (as root, as with sudo): where the tablets
# find the hub (hub.fieldkit.lan, mapped to the site address), and the site's network.
{VENV_PYTHON} -m fieldkit --config /etc/fieldkit/device.toml hub site {site_arguments()}
{VENV_PYTHON} -m fieldkit --config /etc/fieldkit/device.toml hub site
stat -c '%a %U %n' /var/lib/fieldkit/site.toml
systemctl restart fieldkit-hub-setup.service
echo "setup $(systemctl show -P Result fieldkit-hub-setup.service)"
systemctl start $hub_units
wait_for 600 hub_settled && echo settled || echo "not settled"
openssl x509 -in /var/lib/fieldkit/pki/hub/server.crt -noout -issuer -ext subjectAltName
systemctl list-units --all --full --plain --no-legend --no-pager 'fieldkit-*.service'
section kit-accounts
# fw_cfg files are root's: the services' user gets its own copies.
install -d -o fieldkit -g fieldkit -m 0700 /run/kit
for name in kit-accounts.py kit-holds.py; do
    install -o fieldkit -g fieldkit -m 0600 {FW}/$name/raw /run/kit/$name
done
FIELDKIT_ADMIN_PASSWORD="{ADMIN[1]}" fk hub create-admin {ADMIN[0]}
runuser -u fieldkit -- {VENV_PYTHON} /run/kit/kit-accounts.py
section enrol-code
fk pki code {device}
section hub-ready
date +%s
section host-done
stty -F /dev/ttyS2 raw -echo
timeout 5400 head -n 1 /dev/ttyS2
section hub-holds
runuser -u fieldkit -- {VENV_PYTHON} /run/kit/kit-holds.py {device}
section hub-broker-journal
journalctl -b --no-pager -q -o cat -u fieldkit-hub-broker.service | grep -F "{device}" | tail
section hub-enrol-journal
journalctl -b --no-pager -q -o cat -u fieldkit-hub-enrol.service | tail -n 20
section journal-errors
journalctl -b --no-pager -q -p err -o short-monotonic
section end
sync
systemctl poweroff --no-block
"""
    )


def site_arguments() -> str:
    """`fieldkit hub site`'s arguments for this site (the admin's set-up): the hub's address
    on the tablets' network and the site's DNS, time and official application host."""
    return f"--hub {HUB_ADDRESS} --dns 10.0.2.3 --time 10.0.2.2 --official-host 10.99.0.0/24"


# Run in the hub VM by the image's venv as the services' user (over fw_cfg).
KIT_ACCOUNTS = f"""
from sqlalchemy.orm import Session
from pathlib import Path
from sqlalchemy.orm import Session
from fieldkit.config import load_config
from fieldkit.hub.db import make_engine
from fieldkit.hub.web.auth import create_account

engine = make_engine(load_config(Path("/etc/fieldkit/device.toml")).hub.database_url)
with Session(engine) as session:
    create_account(
        session, "{CLERK[0]}", "{CLERK[1]}", "municipality", ["{MUNICIPALITY}"], actor="kit-test"
    )
    session.commit()
print("municipality user {CLERK[0]} created")
"""

# What the hub holds of one device, each a line ``name value``.
KIT_HOLDS = """
import sys
from pathlib import Path
from sqlalchemy import text
from fieldkit.config import load_config
from fieldkit.hub.db import make_engine
from fieldkit.pki import read_roster

device = sys.argv[1]
config = load_config(Path("/etc/fieldkit/device.toml"))
engine = make_engine(config.hub.database_url)
queries = {
    "records": "SELECT kind, count(*) FROM record WHERE device_id = :d GROUP BY kind",
    "erasure": "SELECT count(*), coalesce(bool_and(signed), true) FROM erasure_record"
    " WHERE device_id = :d",
    "certificate": "SELECT result, signed, chain_ok, uploaded_by FROM sanitization_certificate"
    " WHERE device_id = :d",
    "chain-note": "SELECT chain_note FROM sanitization_certificate WHERE device_id = :d",
    "enrolled": "SELECT count(*) FROM enrolment_code WHERE device_id = :d AND used_at IS NOT NULL",
    "packets": "SELECT count(*) FROM sealed_packet WHERE device_id = :d",
}
with engine.connect() as connection:
    for name, query in queries.items():
        rows = connection.execute(text(query), {"d": device}).all()
        print(name, " ".join(";".join(str(v) for v in row) for row in rows))
# The kit roster as the hub's code reads it (its file keeps the devices under "devices").
print("roster", device in read_roster(config.hub.pki / "roster.json"))
"""


def hub_files(work: Path, pki_root: Path) -> dict[str, Path]:
    """The hub VM's fw_cfg files: the kit PKI, the site's enrolment lines, the helpers."""
    files = {"kit-pki.tar": pki_tar(pki_root, work / "kit-pki.tar")}
    for name, text in (
        ("kit-accounts.py", KIT_ACCOUNTS),
        ("kit-holds.py", KIT_HOLDS),
    ):
        (work / name).write_text(text)
        files[name] = work / name
    return files


# The tablet's second boot in the kit: the field test's checks, then the antivirus gate a
# session start asks (the kiosk refuses the session when it says no), sync's delivery to the
# hub VM, then the purge (the field test's, with its canary).
SESSION_GATE = r"""
section session-gate
/opt/fieldkit/venv/bin/fieldkit av definitions
echo "exit $?"
section outbox
sleep 30
ls /var/lib/fieldkit/outbox | wc -l
journalctl -b --no-pager -q -o cat -u fieldkit-sync.service | tail -n 15
"""


def tablet_first_boot() -> str:
    return REPORT_SCRIPT.replace(EXTRA_MARK, FIRST)


def tablet_second_boot() -> str:
    return REPORT_SCRIPT.replace(EXTRA_MARK, SECOND_CHECKS + SESSION_GATE + PURGE)


def spki_pin(certificate: Path) -> str:
    """Chromium's pin for one certificate's key (base64 SHA-256 of its SubjectPublicKeyInfo)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    cert = x509.load_pem_x509_certificate(certificate.read_bytes())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def tls_peer(port: int, ca: Path) -> dict[str, str]:
    """The hub web's TLS from the host, verified against the kit CA (Python's own check)."""
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        peer = tls.getpeercert() or {}
        issuer = dict(x[0] for x in peer.get("issuer", ()))  # type: ignore[misc]
        return {"version": str(tls.version()), "issuer": str(issuer.get("commonName"))}


# The second-factor secrets people set up in this run, by user (their authenticator app): the
# first login shows the secret once; a later login (the HTTP client after the browser) uses it.
AUTHENTICATOR: dict[str, str] = {}


def totp_code(secret: str) -> str:
    """A code from a time step no login has used yet (the hub refuses a code used twice)."""
    import pyotp

    time.sleep(31 - time.time() % 30)
    return str(pyotp.TOTP(secret).now())


def web_login(p: Any, base: str, user: str, password: str) -> str:
    """Log in as a person does on a first login: password, then the second factor set up from
    the secret the page shows (as their authenticator app reads it). Returns the URL reached."""
    import pyotp

    p.goto(f"{base}/login")
    p.get_by_label("ユーザー名").fill(user)
    p.get_by_label("パスワード").fill(password)
    p.get_by_role("button", name="ログイン").click()
    p.wait_for_url(f"{base}/login/code")
    secret = p.locator("code.secret").inner_text().strip()
    AUTHENTICATOR[user] = secret
    p.get_by_label("確認コード（6桁）").fill(pyotp.TOTP(secret).now())
    p.get_by_role("button", name="確認").click()
    p.wait_for_url(f"{base}/")
    return str(p.url)


class HubWebClient:
    """The hub web app from the host over the forwarded TLS port, verified against the kit CA:
    what a browser sends (its cookies, the form's CSRF token, the page's own origin as the
    referrer), with Python's HTTP client."""

    def __init__(self, port: int, ca: Path) -> None:
        import http.cookiejar
        import ssl
        import urllib.request

        self.base = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(ca))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
        )

    def request(
        self, path: str, form: dict[str, str] | None = None, file: tuple[str, bytes] | None = None
    ) -> tuple[int, str, str]:
        """GET, or POST ``form`` (and ``file`` as field ``certificate``); status, URL, page."""
        import urllib.error
        import urllib.parse
        import urllib.request

        headers = {"Referer": f"{self.base}{path}", "Origin": self.base}
        body = None
        if file is not None:
            boundary = secrets_token()
            parts = [
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                f"{value}\r\n".encode()
                for name, value in (form or {}).items()
            ]
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="certificate"; '
                f'filename="{file[0]}"\r\nContent-Type: application/json\r\n\r\n'.encode()
                + file[1]
                + f"\r\n--{boundary}--\r\n".encode()
            )
            body = b"".join(parts)
            headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        elif form is not None:
            body = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        # https to the hub only (self.base)
        asked = urllib.request.Request(f"{self.base}{path}", data=body, headers=headers)  # noqa: S310
        try:
            with self.opener.open(asked, timeout=300) as answer:
                return int(answer.status), str(answer.url), answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return int(exc.code), str(exc.url), exc.read().decode("utf-8", "replace")

    def token(self, page: str) -> str:
        import re

        found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
        return found.group(1) if found else ""

    def login(self, user: str, password: str) -> str:
        """Password, then the second factor set up from the secret the page shows."""
        import html
        import re

        import pyotp

        _, _, page = self.request("/login")
        form = {"username": user, "password": password, "csrf_token": self.token(page)}
        status, url, page = self.request("/login", form)
        if not url.endswith("/login/code"):
            return f"refused at the password ({status} {url})"
        shown = re.search(r'<code class="secret">([^<]+)</code>', page)
        if shown is not None:  # a first login: the secret is set up now
            AUTHENTICATOR[user] = html.unescape(shown.group(1)).strip()
            code = pyotp.TOTP(AUTHENTICATOR[user]).now()
        elif user in AUTHENTICATOR:  # set up earlier in this run (the browser's login)
            code = totp_code(AUTHENTICATOR[user])
        else:
            return "no second-factor secret on the page"
        _, url, _ = self.request("/login/code", {"code": code, "csrf_token": self.token(page)})
        return url


def secrets_token() -> str:
    import secrets

    return secrets.token_hex(16)


def hub_holds(lines: list[str]) -> dict[str, list[str]]:
    """The hub-holds section: each line's name, and its values (``;``-separated)."""
    held = {}
    for line in lines:
        name, _, values = line.partition(" ")
        held[name] = values.split(";") if values else []
    return held
