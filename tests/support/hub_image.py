"""The hub image's broker against the tested development hub's (issue 18 item 1).

The hub-broker service renders mosquitto's config and ACL at every start with
``fieldkit.hub.broker`` (``HubBroker.from_settings``), the code the development hub and the
tests run. What could make the image's broker differ from the tested one: the image's copy of
that code, the image's device config, or a second listener configured beside it. The check
renders the broker's files twice: inside the rootfs, with the image's own venv and config
(``fieldkit hub broker-config`` in a chroot), and here, with this tree's code and a fresh
rendering of the image's device config; then it compares them, and looks for any other
mosquitto listener in the image.

``mount_over`` puts files over the rootfs's (bind mounts in a private mount namespace, gone
with it; the rootfs is never written): the test that shows the check can fail uses it.
"""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

from fieldkit.hub.broker import HubBroker
from fieldkit.policies import PolicySet, hub_device_config

VENV = Path("/opt/fieldkit/venv")
DEVICE_CONFIG = Path("/etc/fieldkit/device.toml")
# What makes the broker the tested one (R15, R16): each must be in the rendering.
REQUIRED = (
    "require_certificate true",
    "use_identity_as_username true",
    "use_username_as_clientid true",
    "allow_anonymous false",
    "tls_version tlsv1.2",
    "crlfile ",
    "acl_file ",
    "pattern write fieldkit/%u/up/#",
    "pattern read fieldkit/%u/down/#",
)


def development_rendering(policies: PolicySet, user: str) -> str:
    """The development hub's rendering, by this tree's code, for the image's device config."""
    from fieldkit.config import load_config

    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "device.toml"
        config.write_text(hub_device_config(policies))
        broker = HubBroker.from_settings(load_config(config).hub, user=user)
        return "".join(
            f"# ==> {path} <==\n{body}" for path, body in broker.rendered_files().items()
        )


def image_rendering(rootfs: Path, user: str, mount_over: dict[Path, Path] | None = None) -> str:
    """What the image's own fieldkit renders, from the image's own device config."""
    mounts = "".join(
        f"mount --bind {shlex.quote(str(source))} "
        f"{shlex.quote(str(rootfs / str(target).lstrip('/')))} && "
        for target, source in (mount_over or {}).items()
    )
    command = (
        f"{mounts}chroot {shlex.quote(str(rootfs))} {VENV}/bin/python -m fieldkit "
        f"--config {DEVICE_CONFIG} hub broker-config --user {shlex.quote(user)}"
    )
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if done.returncode != 0:
        return f"(the image's fieldkit failed, exit {done.returncode}: {done.stderr.strip()})"
    return done.stdout


def other_listeners(rootfs: Path) -> list[str]:
    """mosquitto config lines in the image, beside the local bus's, that open a listener."""
    found = []
    for path in sorted((rootfs / "etc/mosquitto").rglob("*.conf")):
        for line in path.read_text(errors="replace").splitlines():
            words = line.split()
            if words and words[0] in ("listener", "port") and path.name != "mosquitto.conf":
                found.append(f"{path.relative_to(rootfs)}: {line.strip()}")
    return found


def broker_drift(
    rootfs: Path, policies: PolicySet, user: str, mount_over: dict[Path, Path] | None = None
) -> list[str]:
    """Every way the image's device broker differs from the tested one (empty: none)."""
    problems = []
    tested = development_rendering(policies, user)
    image = image_rendering(rootfs, user, mount_over)
    if image != tested:
        image_lines, tested_lines = set(image.splitlines()), set(tested.splitlines())
        problems.append(
            "the image's broker files differ from the tested rendering: "
            f"only in the image {sorted(image_lines - tested_lines)}, "
            f"only in the tested {sorted(tested_lines - image_lines)}"
        )
    problems += [f"not rendered: {line!r}" for line in REQUIRED if line not in image]
    problems += [f"another listener: {line}" for line in other_listeners(rootfs)]
    return problems


# The test hub's provisioning admin (issue 18): a key pair and a password made here, as the
# admin makes them on their own machine; only the public key and the hash go into the image.
ADMIN_PASSWORD = "hub image test admin, sudo only"


def admin_files(folder: Path) -> tuple[Path, Path]:
    """(authorized_keys, password hash) for ``fieldkit image build hub``, made once."""
    folder.mkdir(parents=True, exist_ok=True)
    key = folder / "id_ed25519"
    if not key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fkadmin@test", "-f", str(key)],
            check=True,
            timeout=60,
        )
    hashed = folder / "password.hash"
    if not hashed.exists():
        made = subprocess.run(
            ["openssl", "passwd", "-6", "-stdin"],
            input=f"{ADMIN_PASSWORD}\n",
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        hashed.write_text(made.stdout)
    return key.with_suffix(".pub"), hashed
