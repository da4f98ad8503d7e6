"""A ruleset loaded in a private network namespace (``unshare --net``), with a veth pair for
the site's or office's subnet and a second nftables table (``inet probe``, set ``seen``) that
records what got past the ruleset's output chain; nothing leaves the namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

needs_netns = pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs nft, unshare and root",
)


def seen_in_netns(link: str, ruleset: Path, seen: str, probe: str) -> list[list[Any]]:
    """Run ``link`` (the veth pair's setup), load ``ruleset``, add the ``seen`` table, run
    ``probe``; the recorded set's elements (each a ``concat`` list)."""
    script = f"{link} && nft -f {ruleset} && {seen} && {probe} && nft -j list set inet probe seen"
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("no permission for a private network namespace")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)["nftables"]
    elements = next(item["set"] for item in listing if "set" in item).get("elem", [])
    return [list(e["concat"]) for e in elements]
