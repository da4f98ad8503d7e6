"""``policies/erasure.toml``: the settings a tablet must enforce, as a validated model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JournaldPolicy(Strict):
    storage: Literal["volatile", "none"] = "volatile"


class CoredumpPolicy(Strict):
    storage: Literal["none"] = "none"
    core_pattern: str = "|/bin/false"


class SwapPolicy(Strict):
    allowed: bool = False


class CupsPolicy(Strict):
    preserve_job_files: bool = False
    preserve_job_history: bool = False


class BrokerPolicy(Strict):
    persistence: bool = False


class BrowserPolicy(Strict):
    managed_dir: str = "etc/chromium/policies/managed"
    required: dict[str, bool | int | str] = {}


class ErasurePolicy(Strict):
    journald: JournaldPolicy = JournaldPolicy()
    coredump: CoredumpPolicy = CoredumpPolicy()
    swap: SwapPolicy = SwapPolicy()
    cups: CupsPolicy = CupsPolicy()
    broker: BrokerPolicy = BrokerPolicy()
    browser: BrowserPolicy = BrowserPolicy()


class PolicyError(Exception):
    """A policy file is missing or invalid; the message names the file and the key."""


def load_erasure_policy(path: Path) -> ErasurePolicy:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from None
    try:
        return ErasurePolicy.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in problems)
        raise PolicyError(f"policy file {path}: {text}") from None
