"""The official ClamAV databases for the hub's mirror: Cisco-Talos' ``cvdupdate`` (``cvd``).

``fieldkit av mirror update`` renders cvd's config (the mirror's folder as its database folder,
its state and logs in a folder of their own), runs ``cvd update`` once, and keeps the outcome in
``last-update.json`` beside them: ``fieldkit av mirror status`` shows it, and the hub's timer
unit (fieldkit-cvd-update.service) fails while the update does, so ``systemctl --failed``
shows it too. A failed update leaves the mirror serving what it has: the mirror is another
process and never waits on this one.

cvd needs ClamAV's servers (a DNS TXT query for the versions, then HTTPS downloads); without
them every run fails with cvd's own reason, which is what is kept.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fieldkit.antivirus.settings import MirrorSection

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
OUTCOME_FILE = "last-update.json"
# cvd's own log lines: "2026-12-05 03:03:09 AM - ERROR:  Failed to update: DNS query failed."
_ERROR = re.compile(r" - (?:ERROR|CRITICAL):\s+(.*)$")
MAX_ERRORS = 5


class OfficialUpdateError(Exception):
    """cvd could not be run at all."""


@dataclass(frozen=True)
class OfficialUpdate:
    """The outcome of one ``cvd update``."""

    ok: bool
    returncode: int
    started_at: float
    finished_at: float
    errors: list[str] = field(default_factory=list)


def cvd_program(settings: MirrorSection) -> str:
    """``[av_mirror] cvd``, or the ``cvd`` beside this Python (the hub's venv)."""
    return settings.cvd or str(Path(sys.executable).parent / "cvd")


def render_cvd_config(settings: MirrorSection) -> str:
    """cvd's config.json: the mirror's folder is the one cvd fills."""
    state = settings.cvd_state_dir
    config = {
        "nameserver": "",
        "max retry": 3,
        "log directory": str(state / "logs"),
        "rotate logs": True,
        "# logs to keep": 30,
        "db directory": str(settings.directory),
        "rotate cdiffs": True,
        "# cdiffs to keep": 30,
        "state file": str(state / STATE_FILE),
    }
    return json.dumps(config, indent=4) + "\n"


def write_cvd_config(settings: MirrorSection) -> Path:
    state = settings.cvd_state_dir
    state.mkdir(parents=True, exist_ok=True)
    settings.directory.mkdir(parents=True, exist_ok=True)
    path = state / CONFIG_FILE
    path.write_text(render_cvd_config(settings), encoding="utf-8")
    return path


def parse_cvd_errors(text: str) -> list[str]:
    errors: list[str] = []
    for line in text.splitlines():
        if (m := _ERROR.search(line.rstrip())) and m.group(1) not in errors:
            errors.append(m.group(1))
    return errors[-MAX_ERRORS:]


def update_official(settings: MirrorSection, timeout: float = 3600.0) -> OfficialUpdate:
    """Run ``cvd update`` once into the mirror's folder; keep and return the outcome."""
    config = write_cvd_config(settings)
    started = time.time()
    try:
        done = subprocess.run(
            [cvd_program(settings), "update", "--config", str(config)],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        returncode, errors = done.returncode, parse_cvd_errors(done.stdout + "\n" + done.stderr)
    except FileNotFoundError:
        raise OfficialUpdateError(f"cvd not found ({cvd_program(settings)})") from None
    except subprocess.TimeoutExpired:
        returncode, errors = -1, [f"cvd update did not finish within {timeout:.0f}s"]
    if returncode != 0 and not errors:
        errors = [f"cvd update exited with status {returncode}"]
    outcome = OfficialUpdate(returncode == 0, returncode, started, time.time(), errors)
    target = settings.cvd_state_dir / OUTCOME_FILE
    staged = target.with_suffix(".tmp")
    staged.write_text(json.dumps(asdict(outcome)) + "\n", encoding="utf-8")
    staged.replace(target)
    return outcome


def last_official_update(settings: MirrorSection) -> OfficialUpdate | None:
    try:
        raw = json.loads((settings.cvd_state_dir / OUTCOME_FILE).read_text(encoding="utf-8"))
        return OfficialUpdate(**raw)
    except (FileNotFoundError, ValueError, TypeError):
        return None
