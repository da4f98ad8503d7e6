"""The hub drill, run inside the booted hub VM by the image's own venv (see hub_boot.py).

It imports only fieldkit and its dependencies: the VM has no tests package and no pytest.
"""

from __future__ import annotations

import http.client
import json
import re
import ssl
import sys
import time
import urllib.parse
from pathlib import Path

from sqlalchemy import create_engine, func, inspect, select, table
from sqlalchemy.orm import Session

from fieldkit.config import load_config
from fieldkit.pki import KitPki, load_ed25519_private, read_roster

CONFIG = load_config(Path("/etc/fieldkit/device.toml"))
# Through the CA signer, as the hub's services sign (the drill runs as their user, which
# cannot read the CA key: issue 17 item 2).
PKI = KitPki(CONFIG.hub.pki, signer=CONFIG.hub.ca_signer)
WORK = Path("/run/drill")
MUNICIPALITY = "131016"


def say(step, **values):
    print(json.dumps({"step": step, **values}, default=str), flush=True)


def web(username, password):
    """The login page over TLS, then the password step of a login: the cookies it sets."""
    context = ssl.create_default_context(cafile=str(PKI.ca_cert))
    connection = http.client.HTTPSConnection(
        "localhost", CONFIG.hubweb.listen_port, context=context, timeout=60
    )
    connection.request("GET", "/login")
    answer = connection.getresponse()
    page = answer.read().decode("utf-8", "replace")
    certificate = connection.sock.getpeercert()
    cookies = answer.headers.get_all("Set-Cookie") or []
    say(
        "web",
        status=answer.status,
        tls=connection.sock.version(),
        hsts=answer.getheader("Strict-Transport-Security"),
        cookies=cookies,
        issuer=dict(x[0] for x in certificate["issuer"]),
        names=certificate.get("subjectAltName"),
    )
    token = re.search(r'<input[^>]*name="csrf_token"[^>]*value="([^"]+)"', page)
    form = {"username": username, "password": password}
    if token:
        form["csrf_token"] = token.group(1)
    # Over HTTPS the CSRF check wants the page's own origin as the referrer, as a browser sends.
    origin = f"https://localhost:{CONFIG.hubweb.listen_port}"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Referer": f"{origin}/login",
        "Origin": origin,
    }
    if cookies:
        headers["Cookie"] = "; ".join(c.split(";", 1)[0] for c in cookies)
    connection.request("POST", "/login", urllib.parse.urlencode(form), headers)
    answer = connection.getresponse()
    answer.read()
    say(
        "web-login",
        status=answer.status,
        location=answer.getheader("Location"),
        cookies=answer.headers.get_all("Set-Cookie") or [],
    )
    plain = http.client.HTTPConnection("127.0.0.1", CONFIG.hubweb.listen_port, timeout=10)
    try:
        plain.request("GET", "/login")
        say("web-plain-http", status=plain.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        say("web-plain-http", refused=type(exc).__name__)


def mirror(stage):
    """The antivirus mirror over TLS: the kit's database published, fetched with the kit CA
    (as hub.fieldkit.lan, the name the tablets use), refused to the system's CAs and to plain
    HTTP; the hub's own freshclam takes it with the kit CA as CURL_CA_BUNDLE, not without."""
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    from fieldkit.antivirus.database import build_unsigned_database, hex_signature
    from fieldkit.antivirus.mirror import publish_database

    folder, port = CONFIG.av_mirror.directory, CONFIG.av_mirror.port
    if stage == "before-cvd":
        marker = hex_signature("Fieldkit.HubVm.Marker-1", b"FIELDKIT-HUB-VM-MIRROR-MARKER")
        data = build_unsigned_database(
            "fieldkit", {"fieldkit.ndb": (marker + "\n").encode()}, version=1
        )
        publish_database(folder, "fieldkit.cud", data)
    kit = ssl.create_default_context(cafile=str(PKI.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=kit, timeout=60)
    connection.request("GET", "/fieldkit.cud")
    # The mirror answers HTTP/1.0 and closes: http.client drops the socket with the answer.
    version = connection.sock.version()
    answer = connection.getresponse()
    body = answer.read()
    say(
        "mirror-tls",
        stage=stage,
        status=answer.status,
        tls=version,
        same=body == (folder / "fieldkit.cud").read_bytes(),
    )
    if stage != "before-cvd":
        return
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        kit.wrap_socket(raw, server_hostname="hub.fieldkit.lan") as tls,
    ):
        names = tls.getpeercert().get("subjectAltName")
    say("mirror-name", name="hub.fieldkit.lan", names=names)
    try:
        system = ssl.create_default_context()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            system.wrap_socket(raw, server_hostname="localhost").close()
        say("mirror-system-cas", result="accepted")
    except ssl.SSLError as exc:
        say("mirror-system-cas", result=f"refused: {type(exc).__name__}")
    plain = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        plain.request("GET", "/fieldkit.cud")
        say("mirror-plain-http", status=plain.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        say("mirror-plain-http", refused=type(exc).__name__)
    # A copy of freshclam: Debian's profile attaches to /usr/bin/freshclam by path and reads
    # only /etc/clamav's own config, so the real one cannot read the drill's. The drill shows
    # the mirror's TLS, not freshclam's confinement (no freshclam service runs on the hub).
    # /run and /tmp are noexec on the hub: the copy goes to /var/tmp (the root file system).
    program = Path(tempfile.mkdtemp(prefix="fieldkit-drill-", dir="/var/tmp")) / "freshclam"
    shutil.copy2("/usr/bin/freshclam", program)
    for label, bundle in (
        ("kit", PKI.ca_cert),
        ("system", Path("/etc/ssl/certs/ca-certificates.crt")),
    ):
        database = WORK / f"freshclam-{label}"
        database.mkdir(exist_ok=True)
        conf = WORK / f"freshclam-{label}.conf"
        conf.write_text(
            f"DatabaseDirectory {database}\nForeground yes\n"
            f"PrivateMirror https://localhost:{port}\nScriptedUpdates no\nMaxAttempts 1\n"
            "ExcludeDatabase main\nExcludeDatabase daily\nExcludeDatabase bytecode\n"
            f"Bytecode no\nDatabaseCustomURL https://localhost:{port}/fieldkit.cud\n"
        )
        done = subprocess.run(
            [str(program), f"--config-file={conf}", "--stdout", "--no-warnings"],
            capture_output=True,
            text=True,
            env={**os.environ, "CURL_CA_BUNDLE": str(bundle)},
            timeout=300,
            check=False,
        )
        say(
            "mirror-freshclam",
            ca=label,
            code=done.returncode,
            got=(database / "fieldkit.cud").exists(),
            tail=done.stdout.strip().splitlines()[-2:],
        )


def enrol(devices):
    from fieldkit.enrolment.local import enrol_locally

    for device in devices:
        enrol_locally(PKI, device, WORK / device)
    say("enrolled", devices=devices)


def client(device, on_connect=None, on_disconnect=None):
    from fieldkit.sync.link import tls_client, tls_context

    bundle = WORK / device
    made = tls_client(
        f"drill-{device}",
        tls_context(bundle / "ca.crt", bundle / "client.crt", bundle / "client.key"),
    )
    made.on_connect = on_connect
    made.on_disconnect = on_disconnect
    return made


def attempt(device, timeout=20.0):
    """One connection attempt: 'accepted', or why not."""
    result = []
    made = client(
        device,
        on_connect=lambda c, u, f, reason, p: result.append(str(reason)),
        on_disconnect=lambda c, u, f, reason, p: result.append(f"disconnected: {reason}"),
    )
    try:
        made.connect("localhost", CONFIG.hub.broker_port)
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    deadline = time.monotonic() + timeout
    try:
        while not result and time.monotonic() < deadline:
            if made.loop(timeout=0.5) != 0:
                return f"refused: loop error {made.loop(timeout=0.1)}"
    except (OSError, ssl.SSLError) as exc:
        return f"refused: {type(exc).__name__}: {exc}"
    finally:
        made.disconnect()
    if result and result[0] == "Success":
        return "accepted"
    return f"refused: {result[0] if result else 'no answer'}"


def statistics(n):
    return {
        "site": f"site-{n % 3}",
        "date": "2026-08-03",
        "municipality": MUNICIPALITY,
        "sex": "female",
        "age_band": "70-79",
        "mode": "support",
        "outcome": "applied",
    }


def device_records(device, erasures):
    """One tablet's signed records: statistics, an erasure chain, an audit event, health."""
    from fieldkit.sync.courier import new_record_id
    from fieldkit.sync.wire import AuditEvent, DeviceHealth, Record
    from fieldkit.wipe.record import ErasureRecord, EvidenceStore

    key = load_ed25519_private(WORK / device / "signing.key")

    def record(kind, body):
        return Record(
            record_id=new_record_id(),
            device_id=device,
            kind=kind,
            created_at=time.time(),
            body=body,
        ).signed(key)

    records = [record("statistics", statistics(n)) for n in range(5)]
    store = EvidenceStore(WORK / f"{device}-evidence.sqlite")
    for _ in range(erasures):
        now = time.time()
        made = store.append(
            ErasureRecord(kind="daily", device=device, started=now - 1, finished=now, ok=True),
            key,
        )
        body = {
            "at": made.finished,
            "level": made.kind,
            "verified": made.ok,
            "record": made.model_dump(mode="json"),
        }
        records.append(record("erasure", body))
    store.close()
    audit = AuditEvent(at=time.time(), actor="op-01", action="session-start")
    health = DeviceHealth(at=time.time(), services={"sync": "online"})
    records.append(record("audit", audit.model_dump()))
    records.append(record("health", health.model_dump()))
    return records


def send(device, records):
    """Publish over the hub broker (QoS 1) and wait for the broker's PUBACKs."""
    acked = []
    link = client(device, on_connect=lambda c, u, f, reason, p: acked.append(str(reason)))
    link.on_publish = lambda c, u, mid, reason, p: acked.append(mid)
    link.connect("localhost", CONFIG.hub.broker_port)
    link.loop_start()
    for item in records:
        link.publish(f"fieldkit/{device}/up/record", item.encode(), qos=1)
    deadline = time.monotonic() + 60
    while len(acked) < len(records) + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    link.disconnect()
    link.loop_stop()


def publish():
    published = 0
    for device, erasures in (("tab-a", 3), ("tab-b", 2)):
        records = device_records(device, erasures)
        send(device, records)
        published += len(records)
    stored = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stored = rows()["record"]
        if stored >= published:
            break
        time.sleep(0.5)
    say("published", published=published, stored=stored)


def engine():
    return create_engine(CONFIG.hub.database_url)


def rows():
    made = engine()
    try:
        names = inspect(made).get_table_names()
        with made.connect() as connection:
            return {
                name: connection.execute(select(func.count()).select_from(table(name))).scalar_one()
                for name in sorted(names)
            }
    finally:
        made.dispose()


def state(label):
    from fieldkit.hub.web.chains import device_chain

    counted = rows()
    chains = {}
    if "record" in counted:
        made = engine()
        roster = read_roster(PKI.roster)
        with Session(made) as session:
            for device in ("tab-a", "tab-b"):
                chain = device_chain(session, roster, device)
                chains[device] = {
                    "records": chain.records,
                    "head": chain.head,
                    "problems": list(chain.problems),
                }
        made.dispose()
    say("state", label=label, rows=counted, chains=chains)


def hold(device):
    """Connected until the broker drops the link (the CRL restart), then one reconnect."""
    dropped = []
    link = client(device, on_disconnect=lambda c, u, f, reason, p: dropped.append(time.time()))
    link.connect("localhost", CONFIG.hub.broker_port)
    link.loop_start()
    deadline = time.monotonic() + 90
    while not dropped and time.monotonic() < deadline:
        time.sleep(0.1)
    link.loop_stop()
    say("held-link-dropped", device=device, at=dropped[0] if dropped else None)


def after_revoke():
    # tab-a (not revoked) gets back in once the broker is up again on the new CRL; then
    # tab-b tries once.
    deadline = time.monotonic() + 90
    tries = 0
    first = None
    while time.monotonic() < deadline:
        tries += 1
        first = attempt("tab-a", timeout=5)
        if first == "accepted":
            break
        time.sleep(0.5)
    say("reconnect", device="tab-a", result=first, tries=tries, at=time.time())
    say("reconnect", device="tab-b", result=attempt("tab-b"), tries=1, at=time.time())


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "web":
        web(*rest)
    elif command == "mirror":
        mirror(rest[0])
    elif command == "enrol":
        enrol(rest)
    elif command == "publish":
        publish()
    elif command == "state":
        state(rest[0])
    elif command == "connect":
        say("connect", device=rest[0], result=attempt(rest[0]))
        hold(rest[0])
    elif command == "after-revoke":
        after_revoke()
