"""Each role installs only what it runs (pyproject's extras; the images install
``fieldkit[tablet]`` or ``fieldkit[hub]``): a tablet has no database libraries, the hub no camera,
marker-search or CUPS libraries. Every module a role starts is imported here with the other
role's libraries made unimportable, as on a device that does not have them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.support.paths import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
# The import name of each role-only distribution.
IMPORT_NAMES = {
    "opencv-python-headless": "cv2",
    "numpy": "numpy",
    "hyperscan": "hyperscan",
    "pyzbar": "pyzbar",
    "zxing-cpp": "zxingcpp",
    "pycups": "cups",
    "pyscard": "smartcard",
    "ai-edge-litert": "ai_edge_litert",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
    "psycopg": "psycopg",
    "openpyxl": "openpyxl",
    "pyotp": "pyotp",
    "segno": "segno",
    "cvdupdate": "cvdupdate",
}
# Services run under gunicorn name their app module in a command, not in their setup.
APPS = {"tablet": ["fieldkit.kiosk.app"], "hub": ["fieldkit.hub.web.app"]}

PROBE = """
import importlib, json, sys

role, blocked, apps = sys.argv[1], set(sys.argv[2].split(",")), sys.argv[3].split(",")


class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


sys.meta_path.insert(0, NotInstalled())
from fieldkit.registry import specs_for_role

modules = ["fieldkit.cli", "fieldkit.serve", *apps]
modules += [s.setup.partition(":")[0] for s in specs_for_role(role) if isinstance(s.setup, str)]
failed = {}
for module in modules:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failed[module] = str(exc)
print(json.dumps({"modules": modules, "failed": failed}))
"""


def names(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower() for r in requirements}


def extra(name: str) -> set[str]:
    return names(PROJECT["optional-dependencies"][name])


def probe(role: str, blocked: set[str]) -> dict[str, object]:
    imports = sorted(IMPORT_NAMES[name] for name in blocked)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, role, ",".join(imports), ",".join(APPS[role])],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
        timeout=120,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_the_roles_share_no_library_and_dev_installs_both() -> None:
    tablet, hub = extra("tablet"), extra("hub")
    assert tablet.isdisjoint(hub)
    assert names(PROJECT["dependencies"]).isdisjoint(tablet | hub)
    assert tablet | hub == set(IMPORT_NAMES)
    dev = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
    assert any(r.name == "fieldkit" and {"tablet", "hub"} <= r.extras for r in dev)


@pytest.mark.parametrize(("role", "other"), [("tablet", "hub"), ("hub", "tablet")])
def test_a_role_runs_without_the_other_roles_libraries(role: str, other: str) -> None:
    result = probe(role, extra(other))
    assert len(result["modules"]) > 3  # type: ignore[arg-type]
    assert result["failed"] == {}


def test_the_probe_sees_a_library_that_is_not_there() -> None:
    """The check can fail: the tablet without its own libraries does not start."""
    failed = probe("tablet", extra("tablet"))["failed"]
    assert "fieldkit.capture.service" in failed  # type: ignore[operator]


@pytest.mark.parametrize("role", ["tablet", "hub"])
def test_the_images_wheelhouse_lock_pins_every_library_of_its_role_with_hashes(role: str) -> None:
    """Issue 14: the image installs from requirements/ROLE.lock, at dev.lock's versions."""

    def pins(name: str) -> dict[str, str]:
        text = (REPO / "requirements" / f"{name}.lock").read_text(encoding="utf-8")
        found = {}
        for block in text.split("\n"):
            if "==" in block and not block.startswith((" ", "#")):
                dist, _, version = block.split(" ")[0].partition("==")
                found[dist.lower().replace("_", "-")] = version
        assert text.count("--hash=sha256:") >= len(found)
        return found

    locked, dev = pins(role), pins("dev")
    wanted = names(PROJECT["dependencies"]) | extra(role)
    assert {n.lower() for n in wanted} <= set(locked), sorted(wanted - set(locked))
    assert {d: v for d, v in locked.items() if dev.get(d) != v} == {}
    other = "hub" if role == "tablet" else "tablet"
    assert not {n.lower() for n in extra(other)} & set(locked)
