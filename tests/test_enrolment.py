"""Enrolment on the device (R16, R31; issue 16 item 1, issue 17 items 2 and 10): a one-time
code from the hub, keys made on the tablet, EST simple enrolment over TLS pinned to the kit
CA, served by the real hub enrolment server under gunicorn; and every refusal staff can meet,
each with words they understand and nothing half-written on the tablet."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from fieldkit.config import load_config
from fieldkit.enrolment.protocol import CACERTS, REFUSALS, SIMPLEENROLL
from fieldkit.hub.db import make_engine
from fieldkit.hub.records import erasure_signed
from fieldkit.hub.web.models import EnrolmentCodeRow
from fieldkit.pki import KitPki, load_ed25519_private, public_half_file, raw_public, read_roster
from fieldkit.sync.wire import ErasureEvidence
from fieldkit.wipe.record import ErasureRecord, EvidenceStore, follow_chain, load_device_key
from tests.enrolkit import EnrolmentHub, Tablet, add_hub_operator, https, make_tablet, start_hub
from tests.hubkit import MUNICIPALITY, DeviceClient
from tests.support.wallclock import Wallclock

FIELDKIT = [sys.executable, "-m", "fieldkit"]
DAY = 86_400


def refused_with(run: subprocess.CompletedProcess[str], reason: str) -> bool:
    ja, en = REFUSALS[reason]
    return run.returncode == 1 and ja in run.stderr and en in run.stderr


def add_operator(hub: EnrolmentHub) -> None:
    add_hub_operator(hub.database_url)


def test_a_tablet_enrols_with_a_one_time_code_and_keys_it_made_itself(
    enrolment_hub: EnrolmentHub, tablet: Tablet, pki: KitPki, hub_broker: object
) -> None:
    """R16 R31: the whole exchange, then the tablet's certificate opens the hub broker."""
    add_operator(enrolment_hub)
    code = enrolment_hub.code("tab-c", "--valid", "24h", "--site", "松本市福祉会館")
    run = tablet.enrol(enrolment_hub.address, code.lower())  # typed in any case
    assert run.returncode == 0, run.stderr
    assert "登録しました" in run.stdout
    files = tablet.enrolment
    for key in ("client.key", "signing.key"):
        assert stat.S_IMODE((files / key).stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate((files / "client.crt").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=tab-c"
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    # The hub registered the signing key the tablet made, and keeps no private key of it.
    signing = load_ed25519_private(files / "signing.key")
    assert read_roster(pki.roster)["tab-c"].signing_public == raw_public(signing.public_key())
    hub_keys = {p.name for p in pki.root.rglob("*.key")}
    hub_own = {"ca.key", "server.key", "ingest.key", "downlink.key", "evidence-signing.key"}
    assert hub_keys == hub_own
    # The hub's downlink key is pinned: the tablet refuses acks and rosters signed otherwise.
    assert (files / "hub-downlink.pem").read_bytes() == pki.downlink_public.read_bytes()
    # The device config, roster and receivers came with it, and the config file uses them.
    assert (files / "receivers" / f"{MUNICIPALITY}.pem").exists()
    config = load_config(tablet.config)
    assert (config.device.id, config.device.site) == ("tab-c", "松本市福祉会館")
    assert config.antivirus.mirror_url == "https://hub.kit.lan:8081"
    assert config.sync.hub_port == 8883
    roster = (tablet.root / "outbox" / "operators.json").read_text()
    assert (
        "op-07" in roster
        and stat.S_IMODE((tablet.root / "outbox" / "operators.json").stat().st_mode) == 0o600
    )
    # The hub's audit log has the code made, used and the config sent; never the code.
    actions = [(a, t) for a, t, _ in enrolment_hub.audit()]
    assert ("enrol-code-created", "tab-c") in actions
    assert ("enrol-issued", "tab-c") in actions
    assert ("enrol-config-sent", "tab-c") in actions
    assert code.replace("-", "")[4:] not in repr(enrolment_hub.audit())
    # The certificate the tablet got is what the hub broker accepts (mutual TLS).
    client = DeviceClient(pki, "tab-c", hub_broker.port, bundle=files)  # type: ignore[attr-defined]
    client.connect()
    client.close()
    assert client.connect_result == ["Success"]


def test_enrolling_as_root_keeps_the_images_link_and_gives_the_bundle_to_the_services_user(
    enrolment_hub: EnrolmentHub, tmp_path: Path, pki: KitPki
) -> None:
    """On the image ``/etc/fieldkit/bundle`` is a link into the data volume's enrolment folder,
    which belongs to the services' user: `fieldkit enrol` run as root replaces the bundle where
    the link points (the link stays) and hands every file to that user, who must read the
    keys; the kiosk's screen, running as that user, writes the same way."""
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("as root, the way an admin enrols from a shell")
    nobody = pwd.getpwnam("nobody")
    tablet = make_tablet(tmp_path / "tablet", pki.ca_cert)
    volume = tmp_path / "volume" / "enrol"
    volume.mkdir(parents=True)
    os.chown(volume, nobody.pw_uid, nobody.pw_gid)
    tablet.enrolment.symlink_to(volume / "bundle")
    run = tablet.enrol(enrolment_hub.address, enrolment_hub.code("tab-l"))
    assert run.returncode == 0, run.stderr
    assert tablet.enrolment.is_symlink() and (volume / "bundle" / "client.crt").is_file()
    for path in [volume / "bundle", *(volume / "bundle").rglob("*")]:
        assert (path.stat().st_uid, path.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), path
    assert not [p for p in volume.iterdir() if p.name.startswith(".")]  # no staging left


def test_in_the_kiosk_and_syncs_shared_folder_their_group_alone_reads_the_keys_and_roster(
    enrolment_hub: EnrolmentHub, tmp_path: Path, pki: KitPki, request: pytest.FixtureRequest
) -> None:
    """Issue 17 item 5: on the image the kiosk (which enrols) and sync (which connects and signs)
    are two users sharing the set-group-ID enrolment folder (services.yaml shared_groups,
    erasure.yaml). What enrolment writes there takes the folder's group: the private keys and
    the roster are readable by that group, the public files by path to every service, and the
    folder is not listable by the others. Both ways: in a folder that is not shared (the test
    above, a development kit) the keys stay 0600, and the same group reader is refused."""
    import os

    if os.geteuid() != 0:
        pytest.skip("as root: other users' access is tried with setpriv")
    kiosk, enrol_group, sync, services = 64101, 64102, 64103, 64104
    tablet = make_tablet(tmp_path / "tablet", pki.ca_cert)
    # pytest's temporary folders are root's alone (0700): the other users need a way in.
    shared = Path(tempfile.mkdtemp(prefix="fieldkit-shared-"))
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    shared.chmod(0o755)
    volume = shared / "enrol"
    volume.mkdir()
    os.chown(volume, kiosk, enrol_group)
    volume.chmod(0o2771)
    tablet.enrolment.symlink_to(volume / "bundle")
    roster = volume / "operators.json"
    text = tablet.config.read_text().replace("[sync]\n", f'[sync]\nroster = "{roster}"\n')
    tablet.config.write_text(text)
    add_operator(enrolment_hub)
    run = tablet.enrol(enrolment_hub.address, enrolment_hub.code("tab-s"))
    assert run.returncode == 0, run.stderr
    bundle = volume / "bundle"

    def mode(path: Path) -> tuple[int, int]:
        return stat.S_IMODE(path.stat().st_mode), path.stat().st_gid

    # The group came from the set-group-ID folder, never from a chmod with that bit: the
    # tablet's units run with RestrictSUIDSGID=yes, which refused exactly that in the booted
    # image (EPERM: nothing enrolled). A bit left here is one the code set.
    assert mode(bundle) == (0o751, enrol_group)
    # Written by sync too (the roster's receiver keys, issue 21): the group's to write.
    assert mode(bundle / "receivers") == (0o775, enrol_group)
    for private in (bundle / "client.key", bundle / "signing.key", roster):
        assert mode(private) == (0o640, enrol_group), private

    def reads(path: Path, uid: int, *groups: int) -> bool:
        joined = ",".join(map(str, groups)) if groups else ""
        who = ["--groups", joined] if groups else ["--clear-groups"]
        run = subprocess.run(
            ["setpriv", "--reuid", str(uid), "--regid", str(services), *who, "cat", str(path)],
            capture_output=True,
            check=False,
        )
        return run.returncode == 0

    # sync (the group's other member) reads the keys and the roster; capture (the services'
    # group only) reads the device's public files by path, never a key or the folder's list.
    for private in (bundle / "client.key", bundle / "signing.key", roster):
        assert reads(private, sync, enrol_group), private
        assert not reads(private, 64105), private
    assert reads(bundle / "enrolment.toml", 64105) and reads(bundle / "client.crt", 64105)

    # sync rewrites the receivers' keys from the hub's roster (issue 21): it may write there,
    # replacing a key the kiosk wrote at enrolment; capture may not.
    def writes(uid: int, *groups: int) -> bool:
        joined = ",".join(map(str, groups)) if groups else ""
        who = ["--groups", joined] if groups else ["--clear-groups"]
        folder = bundle / "receivers"
        script = f"printf k > {folder}/.probe.tmp && mv -f {folder}/.probe.tmp {folder}/probe"
        run = subprocess.run(
            ["setpriv", "--reuid", str(uid), "--regid", str(services), *who, "sh", "-c", script],
            capture_output=True,
            check=False,
        )
        return run.returncode == 0

    (bundle / "receivers" / "probe").write_text("the kiosk's")
    os.chown(bundle / "receivers" / "probe", kiosk, enrol_group)
    assert not writes(64105)
    assert writes(sync, enrol_group)
    assert (bundle / "receivers" / "probe").read_text() == "k"
    (bundle / "receivers" / "probe").unlink()
    listing = ["setpriv", "--reuid", "64105", "--regid", str(services), "--clear-groups"]
    assert subprocess.run([*listing, "ls", str(volume)], capture_output=True).returncode != 0
    # Not shared (no set-group-ID): the same files are the owner's alone.
    (volume / "plain").mkdir()
    os.chown(volume / "plain", kiosk, enrol_group)
    (volume / "plain").chmod(0o771)
    tablet2 = make_tablet(tmp_path / "tablet2", pki.ca_cert)
    tablet2.enrolment.symlink_to(volume / "plain" / "bundle")
    run = tablet2.enrol(enrolment_hub.address, enrolment_hub.code("tab-t"))
    assert run.returncode == 0, run.stderr
    plain = volume / "plain" / "bundle"
    assert mode(plain / "signing.key")[0] == 0o600
    assert not reads(plain / "signing.key", sync, enrol_group)


SITE_NETWORK = (
    '{hub = "10.20.0.5", dns = ["10.20.0.1"], time = ["10.20.0.1"], '
    'official_application_host = ["10.99.0.0/24"], '
    'wifi = {ssid = "Kominkan-WiFi", passphrase = "correct horse battery"}}'
)


def test_the_site_network_comes_with_the_enrolment_and_fields_the_firewall(
    tmp_path: Path, pki: KitPki, sqlite_url: str, tablet: Tablet
) -> None:
    """R16 R18: the hub hands the site's addresses over the enrolment; the tablet keeps them
    0600 (a Wi-Fi passphrase) and `fieldkit network apply` fields its firewall from them."""
    with start_hub(tmp_path / "hub", pki, sqlite_url, site_network=SITE_NETWORK) as hub:
        run = tablet.enrol(hub.address, hub.code("tab-c"))
    assert run.returncode == 0, run.stderr
    site = tablet.enrolment / "site-network.toml"
    assert stat.S_IMODE(site.stat().st_mode) == 0o600
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("tab-c\n")
    applied = subprocess.run(
        [*FIELDKIT, "--config", str(tablet.config), "network", "apply", "--root", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    ruleset = (root / "etc/nftables.conf").read_text()
    assert "10.20.0.5" in ruleset and "192.0.2.10" not in ruleset
    assert (root / "var/lib/iwd/Kominkan-WiFi.psk").is_file()
    assert "correct horse" not in run.stdout + run.stderr + applied.stdout + applied.stderr


def test_the_admin_sets_the_site_on_the_hub_and_the_next_tablet_is_given_it(
    tmp_path: Path, pki: KitPki, sqlite_url: str, tablet: Tablet
) -> None:
    """Issue 18: the hub image's config is the image's; the site's addresses are the admin's,
    set with `fieldkit hub site` into ``[enrol] site_file`` and read at every enrolment (no
    restart). A wrong value is refused by the command with what was wrong, nothing written; a
    site file broken by hand refuses enrolment before the code is spent."""
    site_file = tmp_path / "hub-state" / "site.toml"
    passphrase = tmp_path / "psk"
    passphrase.write_text("correct horse battery\n")
    with start_hub(tmp_path / "hub", pki, sqlite_url, site_file=f'"{site_file}"') as hub:
        site = [*FIELDKIT, "--config", str(hub.config), "hub", "site"]
        shown = subprocess.run(site, capture_output=True, text=True, timeout=60, check=True)
        assert "no site set yet" in shown.stdout
        wrong = subprocess.run(
            [*site, "--hub", "10.20.0.300", "--dns", "10.20.0.1", "--time", "10.20.0.1"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert wrong.returncode == 2 and "site not set, nothing changed" in wrong.stderr
        assert "official_application_host" in wrong.stderr and "hub" in wrong.stderr
        assert not site_file.exists()
        setting = [
            *site,
            *("--hub", "10.20.0.5", "--dns", "10.20.0.1", "--time", "10.20.0.2"),
            *("--official-host", "10.99.0.0/24", "--printer", "10.20.0.9"),
            *("--wifi-ssid", "Kominkan-WiFi", "--wifi-passphrase-file", str(passphrase)),
        ]
        done = subprocess.run(setting, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert stat.S_IMODE(site_file.stat().st_mode) == 0o600
        shown = subprocess.run(site, capture_output=True, text=True, timeout=60, check=True)
        assert "10.20.0.5" in shown.stdout and "correct horse" not in shown.stdout
        run = tablet.enrol(hub.address, hub.code("tab-c"))
        assert run.returncode == 0, run.stderr
        config = load_config(tablet.config)
        assert (config.sync.hub_host, config.sync.hub_port) == ("hub.fieldkit.lan", 8883)
        handed = (tablet.enrolment / "site-network.toml").read_text()
        assert '"10.20.0.5"' in handed and '"10.20.0.9"' in handed and "Kominkan-WiFi" in handed
        # Broken by hand: the next enrolment is refused, and its code stays unspent.
        site_file.write_text('broker_host = "hub.fieldkit.lan"\n[site_network]\nhub = "x"\n')
        code = hub.code("tab-d")
        other = make_tablet(tmp_path / "tablet-d", pki.ca_cert)
        assert refused_with(other.enrol(hub.address, code), "hub-error")
        assert other.untouched()
        site_file.unlink()
        assert other.enrol(hub.address, code).returncode == 0
    assert "hub-error" in hub.refusals()


def test_a_used_code_is_refused(enrolment_hub: EnrolmentHub, tmp_path: Path) -> None:
    code = enrolment_hub.code("tab-c")
    first = make_tablet(tmp_path / "t1", enrolment_hub.pki.ca_cert)
    assert first.enrol(enrolment_hub.address, code).returncode == 0
    second = make_tablet(tmp_path / "t2", enrolment_hub.pki.ca_cert)
    run = second.enrol(enrolment_hub.address, code)
    assert refused_with(run, "code-used"), run.stderr
    assert second.untouched()
    assert enrolment_hub.refusals() == ["code-used"]


def test_a_wrong_code_is_refused_and_guessing_is_throttled(
    tmp_path: Path, pki: KitPki, sqlite_url: str, tablet: Tablet
) -> None:
    """A wrong code says so; wrong codes from one address are throttled, and wrong secrets
    against one code spend it (it cannot be guessed slowly from many addresses either)."""
    with start_hub(tmp_path / "hub", pki, sqlite_url, address_failures="4") as hub:
        code = hub.code("tab-c")
        lookup = code[:4]
        wrong = f"{lookup}-0000-0000-0000-0000"
        run = tablet.enrol(hub.address, wrong)
        assert refused_with(run, "bad-code"), run.stderr
        assert tablet.untouched()
        for _ in range(3):
            tablet.enrol(hub.address, wrong)
        # The address is now throttled: even the right code waits.
        run = tablet.enrol(hub.address, code)
        assert refused_with(run, "too-many-attempts"), run.stderr
        assert tablet.untouched()
        assert hub.refusals() == ["bad-code"] * 4 + ["too-many-attempts"]
        # Four wrong secrets counted against the code; one more and it is spent for good.
        engine = make_engine(sqlite_url)
        with Session(engine) as session:
            assert session.scalars(select(EnrolmentCodeRow.failures)).one() == 4
        engine.dispose()
    # A new server (a new address window) still refuses the code once it is spent.
    hub.sql(update(EnrolmentCodeRow).values(failures=5))
    with start_hub(tmp_path / "hub2", pki, sqlite_url) as again:
        run = tablet.enrol(again.address, code)
    assert refused_with(run, "too-many-attempts"), run.stderr
    assert tablet.untouched()


def test_an_expired_code_is_refused(enrolment_hub: EnrolmentHub, tablet: Tablet) -> None:
    code = enrolment_hub.code("tab-c", "--valid", "1h")
    enrolment_hub.sql(update(EnrolmentCodeRow).values(expires_at=time.time() - 1))
    run = tablet.enrol(enrolment_hub.address, code)
    assert refused_with(run, "code-expired"), run.stderr
    assert tablet.untouched()
    assert enrolment_hub.refusals() == ["code-expired"]


def test_an_active_device_must_be_revoked_before_it_enrols_again(
    enrolment_hub: EnrolmentHub, tablet: Tablet, pki: KitPki
) -> None:
    """tab-a is enrolled: its code is refused until it is revoked; then the same code works,
    and the old signing key stays known for the older records (RosterEntry.earlier_signing).
    The re-enrolment pins the hub's downlink key as it is then (rotated here)."""
    before = read_roster(pki.roster)["tab-a"]
    code = enrolment_hub.code("tab-a")
    run = tablet.enrol(enrolment_hub.address, code)
    assert refused_with(run, "device-active"), run.stderr
    assert tablet.untouched()
    assert read_roster(pki.roster)["tab-a"] == before
    subprocess.run(
        [*FIELDKIT, "pki", "--dir", str(pki.root), "revoke", "tab-a"], check=True, timeout=60
    )
    # The hub's downlink key rotated meanwhile: enrolling again pins the new one.
    old_key = pki.downlink_public.read_bytes()
    subprocess.run(
        [*FIELDKIT, "pki", "--dir", str(pki.root), "downlink-key", "--rotate"],
        check=True,
        timeout=60,
    )
    run = tablet.enrol(enrolment_hub.address, code)
    assert run.returncode == 0, run.stderr
    pinned = (tablet.enrolment / "hub-downlink.pem").read_bytes()
    assert pinned == pki.downlink_public.read_bytes() != old_key
    after = read_roster(pki.roster)["tab-a"]
    assert not after.revoked and after.serial != before.serial
    assert after.earlier_signing == (before.signing_public,)
    assert before.serial in pki.revoked_serials()
    assert enrolment_hub.refusals() == ["device-active"]


def wipe_records(store: EvidenceStore, key: Ed25519PrivateKey, count: int) -> list[ErasureRecord]:
    now = time.time()
    return [
        store.append(
            ErasureRecord(kind="daily", device="tab-a", started=now - 2, finished=now, ok=True),
            key,
        )
        for _ in range(count)
    ]


def evidence(record: ErasureRecord) -> ErasureEvidence:
    return ErasureEvidence(
        at=record.finished, level="daily", verified=True, record=record.model_dump()
    )


@pytest.mark.parametrize("named", [True, False], ids=["key-named", "key-withheld"])
def test_records_the_wipe_signed_before_enrolment_verify_at_the_hub(
    enrolment_hub: EnrolmentHub, tablet: Tablet, pki: KitPki, named: bool
) -> None:
    """Finding 5 of the kit in two VMs (issue 18): the first boot's wipe signs with its own
    device key, before the tablet is enrolled. The enrolment names that key's public half (the
    kiosk reads it beside the key, which it may not read), so the hub registers it among the
    device's earlier keys: each such record shows as signed at the hub, and the chain through
    them to the enrolled key's records is intact. Withheld (the public half gone), the same
    records are "signed by another key" there: the check sees the difference."""
    subprocess.run(
        [*FIELDKIT, "pki", "--dir", str(pki.root), "revoke", "tab-a"], check=True, timeout=60
    )
    config = load_config(tablet.config)
    store = EvidenceStore(tablet.root / "evidence.sqlite")
    before = wipe_records(store, load_device_key(config.wipe.device_key), 2)
    public_half = public_half_file(config.wipe.device_key)
    assert stat.S_IMODE(public_half.stat().st_mode) == 0o644
    if not named:
        public_half.unlink()
    run = tablet.enrol(enrolment_hub.address, enrolment_hub.code("tab-a"))
    assert run.returncode == 0, run.stderr
    after = wipe_records(store, load_ed25519_private(tablet.enrolment / "signing.key"), 2)
    store.close()
    entry = read_roster(pki.roster)["tab-a"]
    prior = raw_public(load_device_key(config.wipe.device_key).public_key())
    assert (prior in entry.earlier_signing) is named
    keys = entry.signing_keys_hex()
    signed = [erasure_signed(evidence(r), keys) for r in before]
    assert signed == [named, named]
    assert all(erasure_signed(evidence(r), keys) for r in after)
    chain = follow_chain([*before, *after], keys)
    assert chain.records == 4
    if named:
        assert chain.intact, chain.problems
    else:
        assert sum("signed by another key" in p for p in chain.problems) == 2, chain.problems


def test_a_hub_certificate_from_another_ca_is_refused(
    enrolment_hub: EnrolmentHub, tmp_path: Path
) -> None:
    """The tablet trusts the kit CA baked into it, nothing else: another CA's hub (or a
    man in the middle) gets no request, so the code is not spent."""
    other = KitPki(tmp_path / "other" / "pki")
    other.init("someone else's CA")
    stranger = make_tablet(tmp_path / "stranger", other.ca_cert)
    code = enrolment_hub.code("tab-c")
    run = stranger.enrol(enrolment_hub.address, code)
    assert refused_with(run, "foreign-ca"), run.stderr
    assert stranger.untouched()
    assert enrolment_hub.audit()[-1][0] == "enrol-code-created"  # nothing reached the hub


@pytest.fixture(scope="module")
def wallclock(tmp_path_factory: pytest.TempPathFactory) -> Wallclock:
    return Wallclock(tmp_path_factory.mktemp("shim"))


@pytest.mark.parametrize(
    "offset",
    [-DAY, 2 * 3600, 900 * DAY],
    ids=["a-day-behind", "two-hours-ahead", "years-ahead"],
)
def test_a_tablet_clock_far_off_is_refused(
    enrolment_hub: EnrolmentHub, tablet: Tablet, wallclock: Wallclock, offset: int
) -> None:
    """A day behind: the hub's new certificate is not yet valid; years ahead: it has expired
    (both seen by TLS); two hours ahead: the certificates pass, the hub's Date does not."""
    wallclock.step(offset)
    code = enrolment_hub.code("tab-c")
    run = tablet.enrol(enrolment_hub.address, code, env=wallclock.environment)
    assert refused_with(run, "clock-off"), run.stderr
    assert tablet.untouched()
    # The code is not spent: with the clock set right, it works.
    wallclock.step(0)
    assert tablet.enrol(enrolment_hub.address, code).returncode == 0


def test_the_est_endpoint_speaks_rfc_7030(enrolment_hub: EnrolmentHub) -> None:
    """cacerts is certs-only PKCS#7 with the kit CA; simpleenroll without credentials asks for
    HTTP Basic; a body that is no PKCS#10 is a 4xx with a reason, and the server stays up."""
    from cryptography.hazmat.primitives.serialization import pkcs7

    status, headers, body = https(enrolment_hub, "GET", CACERTS)
    assert status == 200 and headers["Content-Type"].startswith("application/pkcs7-mime")
    (ca,) = pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))
    assert ca.public_bytes(serialization.Encoding.PEM) == enrolment_hub.pki.ca_cert.read_bytes()
    status, headers, _ = https(enrolment_hub, "POST", SIMPLEENROLL, b"x")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    code = enrolment_hub.code("tab-c")
    auth = base64.b64encode(f"tablet:{code}".encode()).decode()
    status, headers, _ = https(
        enrolment_hub,
        "POST",
        SIMPLEENROLL,
        b"not a request",
        **{"Content-Type": "application/pkcs10", "Authorization": f"Basic {auth}"},
    )
    assert status == 400 and headers["X-Fieldkit-Refusal"] == "bad-request"
    # Still serving; and the code was not spent by the bad request.
    assert https(enrolment_hub, "GET", CACERTS)[0] == 200
    engine = make_engine(enrolment_hub.database_url)
    with Session(engine) as session:
        assert session.scalars(select(EnrolmentCodeRow.used_at)).one() is None
    engine.dispose()


def test_two_tablets_racing_with_one_code_on_postgresql_get_one_certificate(
    tmp_path: Path, pki: KitPki, postgres: Any
) -> None:
    """The code is spent in one conditional UPDATE: of two tablets that send it at once
    (PostgreSQL, the production database), one is enrolled and the other told it is used."""
    url = postgres.create_database()
    with start_hub(tmp_path / "hub", pki, url) as hub:
        code = hub.code("tab-r")
        tablets = [make_tablet(tmp_path / f"t{n}", pki.ca_cert) for n in range(2)]
        with ThreadPoolExecutor(2) as pool:
            runs = list(pool.map(lambda t: t.enrol(hub.address, code), tablets))
        refusals = hub.refusals()
    assert sorted(r.returncode for r in runs) == [0, 1], [r.stderr for r in runs]
    loser = next(t for t, r in zip(tablets, runs, strict=True) if r.returncode == 1)
    assert loser.untouched()
    # Which words the loser gets depends on how far the winner was: the code spent, or the
    # device already active with its certificate. Never a second certificate.
    assert refusals in (["code-used"], ["device-active"])
    issued = [a for a, t, _ in hub.audit() if a == "enrol-issued" and t == "tab-r"]
    assert len(issued) == 1
