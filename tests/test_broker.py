"""The generated broker config: no persistence, no anonymous clients, ACL from the specs. R6 R29"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fieldkit.broker import LocalBroker, hash_password, render_acl
from fieldkit.bus import Bus, Endpoint, read_password
from fieldkit.config import DeviceConfig
from fieldkit.messages import Ping
from fieldkit.registry import ServiceSpec, identities_for, load_specs, topic_rights


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


def test_the_images_bus_credentials_are_new_at_each_boot_and_each_only_its_owners(
    tmp_path: Path,
) -> None:
    """`fieldkit bus credentials` (the image's boot oneshot, as root): every identity of the
    role gets a password that verifies against mosquitto's hashed file; each credential file
    is 0400 and owned by the user its service runs as (the wipe's and the tools' by root);
    the password file is root:<broker group> 0640. A second run makes new passwords."""
    import base64
    import grp
    import os
    import pwd
    import shutil
    import sys

    from fieldkit.policies import load_policies
    from fieldkit.registry import specs_for_role

    if os.geteuid() != 0:
        import pytest

        pytest.skip("the boot oneshot runs as root")
    # The image's policies, with its service user made one this host has.
    policies = tmp_path / "policies"
    shutil.copytree(Path(__file__).resolve().parents[1] / "policies", policies)
    yaml = policies / "services.yaml"
    yaml.write_text(yaml.read_text().replace("\nuser: fieldkit\n", "\nuser: nobody\n"))
    services = load_policies(policies).services
    assert services.user == "nobody"
    service_uid = pwd.getpwnam("nobody").pw_uid
    group = grp.getgrgid(os.getgid()).gr_name
    runtime, passwd = tmp_path / "run", tmp_path / "run" / "broker" / "fieldkit.passwd"
    command = [
        sys.executable, "-m", "fieldkit", "bus", "credentials", "--role", "tablet",
        "--runtime-dir", str(runtime), "--password-file", str(passwd), "--broker-group", group,
        "--policies", str(policies),
    ]  # fmt: skip

    def run() -> dict[str, str]:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return {p.name: p.read_text().strip() for p in (runtime / "credentials").iterdir()}

    first = run()
    names = {i.name for i in identities_for(specs_for_role("tablet"))}
    assert set(first) == names
    hashes = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(hashes) == names
    for name, password in first.items():
        salt = base64.b64decode(hashes[name].split("$")[3])
        assert hash_password(password, salt) == hashes[name], name
        stat = (runtime / "credentials" / name).stat()
        assert stat.st_mode & 0o777 == 0o400
        override = services.overrides.get(name)
        runs_as_root = name in ("ctl", "audit") or (override is not None and override.user)
        assert stat.st_uid == (0 if runs_as_root else service_uid), name
    assert passwd.stat().st_mode & 0o777 == 0o640 and passwd.stat().st_gid == os.getgid()
    assert (runtime / "credentials").stat().st_mode & 0o777 == 0o711
    second = run()
    assert all(second[n] != first[n] for n in names)
