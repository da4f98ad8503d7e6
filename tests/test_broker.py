"""The generated broker config: no persistence, no anonymous clients, ACL from the specs. R6 R29"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fieldkit.broker import LocalBroker, hash_password, render_acl
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.config import DeviceConfig
from fieldkit.messages import Ping
from fieldkit.registry import Identity, ServiceSpec, identities_for, load_specs, topic_rights


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def exercise(broker: LocalBroker) -> None:
    """Connect a service with a retained health and some traffic, then stop the broker."""
    bus = Bus("monitor", broker.endpoint, read_password(broker.runtime_dir, "monitor"))
    bus.connect()
    bus.publish("monitor/evt/test", Ping())
    bus.close()


def test_broker_writes_no_persistence_file(kit_config: DeviceConfig, tmp_path: Path) -> None:
    runtime = kit_config.bus.runtime_dir
    runtime.mkdir(parents=True)
    broker = LocalBroker(runtime, identities_for(load_specs()), Endpoint(port=0))
    assert "persistence false" in broker.render_config().splitlines()
    before = files_under(tmp_path)
    with broker:
        exercise(broker)
    created = files_under(tmp_path) - before
    assert not [p for p in created if p.suffix == ".db"], created
    # What stays is only the generated config and ACL; passwords and credentials are gone.
    assert {p.name for p in files_under(runtime)} == {"mosquitto.conf", "acl"}


class PersistentBroker(LocalBroker):
    def render_config(self) -> str:
        config = super().render_config().replace("persistence false", "persistence true")
        return config + f"persistence_location {self.runtime_dir}/\n"


def test_the_persistence_check_catches_a_persistent_broker(kit_config: DeviceConfig) -> None:
    """The check can fail: with persistence on, mosquitto leaves a database behind."""
    runtime = kit_config.bus.runtime_dir
    runtime.mkdir(parents=True)
    with PersistentBroker(runtime, identities_for(load_specs()), Endpoint(port=0)) as broker:
        exercise(broker)
    assert [p for p in files_under(runtime) if p.suffix == ".db"]


def test_password_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    # Same salt, same password → mosquitto_passwd's own line verifies against our hash.
    pwfile = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(pwfile), "svc", "s3cret"], check=True)
    line = pwfile.read_text().strip()
    _, _, iterations, salt, _ = line.split(":", 1)[1].split("$")
    import base64

    assert iterations == "101"
    assert line.split(":", 1)[1] == hash_password("s3cret", base64.b64decode(salt))


def test_acl_lets_a_service_publish_only_under_its_own_name() -> None:
    spec = ServiceSpec(
        name="printing",
        summary="printing",
        setup=lambda ctx: None,
        requests=("sync",),
        listens=("kiosk/evt/#",),
    )
    rights = topic_rights(spec)
    assert all(t.startswith("printing/") or t == "health/printing" for t in rights.writes)
    assert "printing/req/sync/#" in rights.writes
    assert "kiosk/evt/#" in rights.reads
    acl = render_acl([rights])
    assert "user printing" in acl and "topic write printing/evt/#" in acl


def test_the_images_bus_credentials_are_new_at_each_boot_and_root_only(tmp_path: Path) -> None:
    """`fieldkit bus credentials` (the image's boot oneshot, as root): every identity of the
    role but the compliance run's ``audit`` gets a password that verifies against mosquitto's
    hashed file; the credential files are root's alone (folder 0700, files 0400: systemd hands
    each unit its own, LoadCredential=); the password file is root:<broker group> 0640. A
    second run makes new passwords and drops a credential left behind."""
    import base64
    import grp
    import os
    import sys

    import pytest

    from fieldkit.registry import AUDIT, specs_for_role

    if os.geteuid() != 0:
        pytest.skip("the boot oneshot runs as root")
    group = grp.getgrgid(os.getgid()).gr_name
    runtime, passwd = tmp_path / "run", tmp_path / "run" / "broker" / "fieldkit.passwd"
    command = [
        sys.executable, "-m", "fieldkit", "bus", "credentials", "--role", "tablet",
        "--runtime-dir", str(runtime), "--password-file", str(passwd), "--broker-group", group,
    ]  # fmt: skip

    def run() -> dict[str, str]:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {p.name: p.read_text().strip() for p in (runtime / "credentials").iterdir()}

    first = run()
    names = {i.name for i in identities_for(specs_for_role("tablet"))} - {AUDIT.name}
    assert set(first) == names
    hashes = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(hashes) == names
    for name, password in first.items():
        salt = base64.b64decode(hashes[name].split("$")[3])
        assert hash_password(password, salt) == hashes[name], name
        stat = (runtime / "credentials" / name).stat()
        assert (stat.st_mode & 0o777, stat.st_uid) == (0o400, 0), name
    assert passwd.stat().st_mode & 0o777 == 0o640 and passwd.stat().st_gid == os.getgid()
    folder = (runtime / "credentials").stat()
    assert (folder.st_mode & 0o777, folder.st_uid) == (0o700, 0)
    (runtime / "credentials" / AUDIT.name).write_text("left by a compliance run that crashed\n")
    second = run()
    assert set(second) == names
    assert all(second[n] != first[n] for n in names)


def test_the_audit_identity_logs_in_only_while_a_compliance_check_runs(tmp_path: Path) -> None:
    """Issue 17: on a device the read-everything ``audit`` identity has no password at boot;
    `fieldkit bus retained` (root) adds one, has mosquitto reread its password file, reads
    the retained messages and removes it again. Tried on a real mosquitto: outside the run
    audit's last password is refused; with the boot oneshot still making audit's password
    (the protection off) it is accepted, so the check would catch that."""
    import os
    import signal
    import sys
    import textwrap

    import pytest

    from fieldkit.broker import install_device_credentials
    from fieldkit.bus import BusError
    from fieldkit.registry import AUDIT, specs_for_role
    from tests.support.waiting import wait_for

    if os.geteuid() != 0:
        pytest.skip("the device's credentials are root's")
    runtime = tmp_path / "run"
    identities = identities_for(specs_for_role("tablet"))
    broker = LocalBroker(runtime, identities, Endpoint(port=0))
    passwords = broker.conf_dir / "passwords"

    def boot(standing: list[Identity]) -> None:
        """What fieldkit-bus-credentials.service does at boot, then the broker rereads."""
        install_device_credentials(standing, passwords, runtime, os.getgid())
        assert broker.process is not None
        broker.process.send_signal(signal.SIGHUP)  # mosquitto rereads it in its next loop

    def logs_in(identity: str, password: str) -> bool:
        bus = Bus(identity, broker.endpoint, password, announce_health=False)
        try:
            bus.connect(timeout=5)
        except BusError:
            return False
        bus.close()
        return True

    config = tmp_path / "device.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [device]
            id = "tab-1"
            role = "tablet"
            [bus]
            runtime_dir = "{runtime}"
            launch_broker = false
            """
        )
    )
    with broker:
        assert broker.process is not None
        # The protection off: audit standing from boot logs in whenever anyone likes.
        boot(identities)
        standing_audit = read_password(runtime, AUDIT.name)
        wait_for(lambda: logs_in(AUDIT.name, standing_audit), 20, "audit standing from boot")
        # On: at boot audit has no password; its last one is refused.
        boot([i for i in identities if i.name != AUDIT.name])
        wait_for(lambda: not logs_in(AUDIT.name, standing_audit), 20, "audit refused at boot")
        kiosk = Bus("kiosk", broker.endpoint, read_password(runtime, "kiosk"))
        kiosk.connect()  # announces health/kiosk, retained
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "fieldkit",
                    "--config",
                    str(config),
                    "bus",
                    "retained",
                    "--password-file",
                    str(passwords),
                    "--reload-command",
                    f"kill -HUP {broker.process.pid}",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            kiosk.close()
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok   health/kiosk" in done.stdout, done.stdout
        # Afterwards: no audit line, no audit credential, and a login as audit refused.
        assert AUDIT.name not in {x.split(":")[0] for x in passwords.read_text().splitlines()}
        assert not (runtime / "credentials" / AUDIT.name).exists()
        wait_for(lambda: not logs_in(AUDIT.name, standing_audit), 20, "audit refused after")
        assert logs_in("kiosk", read_password(runtime, "kiosk"))  # the others unaffected
