"""Where the repository's own files are, for tests that read them."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REPO_POLICIES = REPO / "policies"
