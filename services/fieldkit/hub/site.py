"""The site's hand-out: what the hub's enrolment server tells every tablet about the site it
works at (the hub's address on the site's network, DNS, time, the official application hosts,
printers, Wi-Fi), set by the provisioning admin on the hub with ``fieldkit hub site``.

The hub image's device config is rendered from ``policies/`` and stays as built (its tests
compare it with a fresh rendering); the site's addresses are the admin's, so they live in a
file of their own, ``[enrol] site_file``, read at every enrolment: a change reaches the next
tablet enrolled, with no restart. Without the file the hub hands out what ``[enrol]`` says
(a development hub sets it there).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import Field

from fieldkit.enrolment.settings import EnrolSection
from fieldkit.models import (
    SiteNetwork,
    Strict,
    read_toml_model,
    site_network_toml,
)
from fieldkit.network import HUB_NAME


class SiteError(Exception):
    """The site file is missing a value or holds a wrong one; the text says which."""


class SiteHandout(Strict):
    # The broker address the tablets are given: by default the name every tablet's hosts file
    # maps to site_network.hub (fieldkit.network), which the kit PKI's hub certificate names.
    broker_host: str = Field(default=HUB_NAME, min_length=1, max_length=253)
    broker_port: int | None = Field(default=None, ge=1, le=65535)
    site_network: SiteNetwork


def handout_toml(handout: SiteHandout) -> str:
    lines = [
        "# Written by `fieldkit hub site`: what every tablet enrolled here is told of the site.",
        f"broker_host = {json.dumps(handout.broker_host)}",
    ]
    if handout.broker_port is not None:
        lines.append(f"broker_port = {handout.broker_port}")
    network = site_network_toml(handout.site_network).replace("[wifi]", "[site_network.wifi]")
    return "\n".join([*lines, "[site_network]", network])


def read_handout(path: Path) -> SiteHandout | None:
    """The site file's hand-out; None when the admin has not written one."""
    try:
        return read_toml_model(path, SiteHandout, what="site file", error=SiteError)
    except FileNotFoundError:
        return None


def site_enrol(enrol: EnrolSection) -> EnrolSection:
    """``[enrol]`` with the site file's hand-out laid over it (read now: the admin's last)."""
    handout = read_handout(enrol.site_file) if enrol.site_file is not None else None
    if handout is None:
        return enrol
    update: dict[str, object] = {
        "broker_host": handout.broker_host,
        "site_network": handout.site_network,
    }
    if handout.broker_port is not None:
        update["broker_port"] = handout.broker_port
    return enrol.model_copy(update=update)


def write_handout(path: Path, handout: SiteHandout) -> None:
    """Replace the site file in one rename, 0600 (it may hold the Wi-Fi passphrase), owned by
    the owner of its folder (the hub's services' user) when written as root."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, handout_toml(handout).encode())
        folder = path.parent.stat()
        if os.geteuid() == 0 and folder.st_uid != 0:
            os.fchown(fd, folder.st_uid, folder.st_gid)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(name)
        raise
    os.close(fd)
    os.replace(name, path)
