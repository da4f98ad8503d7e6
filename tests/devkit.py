"""The development kit as `./dev.sh run` starts it, in a temporary folder, for tests.

``DevKit`` copies ``etc/dev-tablet.toml`` (the file `./dev.sh run` uses), moves its ports to
free ones, gives it fresh antivirus definitions instead of the development hub's mirror and a
camera that shows what the test puts in front of it, and runs ``fieldkit up`` in the folder:
the supervisor, the local mosquitto, the kiosk under gunicorn, capture, printing (its own cupsd
and ippeveprinter), sync, wipe, antivirus and monitor, each in its own process, with the
``var/...`` paths of the config under the folder, as they are under a checkout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fieldkit.broker import free_loopback_port
from fieldkit.runner import SUPERVISOR_REPORT
from tests.antivirus_fixtures import fresh_definitions

REPO = Path(__file__).resolve().parent.parent
FIELDKIT = [sys.executable, "-m", "fieldkit"]
DEV_TABLET = REPO / "etc" / "dev-tablet.toml"
OPERATOR = "demo-01"
OPERATOR_PASSWORD = "demo-pass-2026"  # the demo operator of etc/dev-tablet.toml


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Enough TOML for a device config: tables, arrays of tables, scalars and lists."""
    lines = [f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [
        f"{k} = {toml_value(v)}"
        for k, v in data.items()
        if isinstance(v, list) and not (v and isinstance(v[0], dict))
    ]
    out = "\n".join(lines) + "\n"
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += f"\n[{name}]\n" + to_toml(value, f"{name}.")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for item in value:
                out += f"\n[[{name}]]\n" + to_toml(item, f"{name}.")
    return out


class DevKit:
    """`fieldkit up` on a copy of the development tablet config, in ``root``."""

    def __init__(
        self,
        root: Path,
        camera: Path,
        *,
        runner: Mapping[str, Any] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        environment: Mapping[str, str] | None = None,
    ):
        """``settings`` overrides keys of the config's sections; ``environment`` is added to
        the environment `fieldkit up` (and so every process of the kit) starts with."""
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.camera = camera
        self.scrub = bool((runner or {}).get("scrub_freed_memory", True))
        self.config = root / "dev-tablet.toml"
        self.kiosk_port = free_loopback_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.environment = dict(environment or {})
        data = tomllib.loads(DEV_TABLET.read_text(encoding="utf-8"))
        data["bus"]["port"] = free_loopback_port()
        data["kiosk"]["listen_port"] = self.kiosk_port
        data["sync"]["hub_port"] = free_loopback_port()  # no hub: records wait in the outbox
        definitions = tomllib.loads(fresh_definitions(root, 1.0))
        data["antivirus"] = definitions["antivirus"]
        data["capture"] = {"source": f"images:{camera.parent}", "fps": 10, "auto_capture_frames": 2}
        # The kit's own temp folder, never the machine's /tmp (which other tests share).
        data["wipe"]["temp_dirs"] = ["var/tmp"]
        # This machine runs other tests at the same time: a wider time budget per location
        # than the 2 s a tablet gets, so a scan cut short by the load does not fail a test
        # about something else (a budget that runs out still fails the record).
        data["wipe"]["session_location_budget_seconds"] = 15.0
        data["runner"] = {"backoff_initial": 0.2, "backoff_max": 1.0, **(runner or {})}
        for section, values in (settings or {}).items():
            data.setdefault(section, {}).update(values)
        self.config.write_text(to_toml(data), encoding="utf-8")
        (root / "var" / "tmp").mkdir(parents=True, exist_ok=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.kiosk_port}"

    def supervisor_report(self) -> dict[str, dict[str, Any]]:
        """What each service last told the supervisor's watchdog (empty before the first)."""
        data = tomllib.loads(self.config.read_text(encoding="utf-8"))
        path = self.root / data["bus"]["runtime_dir"] / SUPERVISOR_REPORT
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    def unsettled(self, within: float) -> list[str]:
        """The services whose watchdog heartbeat is not fresh: none beat in the last
        ``within`` seconds, or their last status says why not."""
        now = time.monotonic()
        return [
            f"{name}: {child['status'] or 'no beat yet'}"
            for name, child in self.supervisor_report().items()
            if child["heard_monotonic"] is None
            or now - child["heard_monotonic"] > within
            or child["status"].startswith("no heartbeat")
        ]

    def fieldkit(self, *args: str) -> None:
        subprocess.run([*FIELDKIT, *args], cwd=self.root, check=True, capture_output=True)

    def start(self, timeout: float = 120.0) -> None:
        """The PKI `./dev.sh run` makes, then `fieldkit up`; returns once the kiosk answers."""
        self.fieldkit("pki", "--dir", "var/pki", "init", "--dns", "localhost")
        passphrase = self.root / "var" / "municipality" / "passphrase"
        passphrase.parent.mkdir(parents=True, exist_ok=True)
        passphrase.write_text("demo municipality passphrase 2026\n")
        for code in ("202011", "202029"):
            keygen = subprocess.run(
                [
                    *(*FIELDKIT, "packet", "keygen", "--out", f"var/municipality/{code}"),
                    *("--passphrase-file", str(passphrase)),
                ],
                cwd=self.root,
                check=True,
                capture_output=True,
                text=True,
            )
            fingerprint = keygen.stdout.rsplit(": ", 1)[1].strip()
            public = f"var/municipality/{code}/sealing-public.pem"
            self.fieldkit(
                *("pki", "--dir", "var/pki", "receiver", "import", code, public),
                *("--fingerprint", fingerprint),
            )
        self.fieldkit("--config", str(self.config), "enrol", "--local-pki", "var/pki")
        self.process = subprocess.Popen(
            [*FIELDKIT, "--config", str(self.config), "up"],
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.environment},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"fieldkit up exited with {self.process.returncode}")
            status = subprocess.run(
                [*FIELDKIT, "--config", str(self.config), "status", "--json", "--wait", "0.5"],
                cwd=self.root,
                capture_output=True,
                check=False,
            )
            if status.returncode == 0:
                return
            time.sleep(1.0)
        raise AssertionError("the kit did not come up with every service online")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def processes(self) -> dict[int, str]:
        """Every process of the kit: the supervisor and all its descendants, by command name."""
        if self.process is None:
            return {}
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm_end = stat.rindex(")")
            names[int(entry.name)] = stat[stat.index("(") + 1 : comm_end]
            parents[int(entry.name)] = int(stat[comm_end + 2 :].split()[1])
        kit = {self.process.pid}
        grew = True
        while grew:
            more = {pid for pid, parent in parents.items() if parent in kit} - kit
            kit |= more
            grew = bool(more)
        return {pid: names[pid] for pid in sorted(kit) if pid in names}
