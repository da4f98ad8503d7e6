"""Printing: receipts and photo sheets rendered in memory to PDF and printed through CUPS.

Its spec is here and names its setup (``fieldkit.printing.service:setup``) without importing
it; ``fieldkit.printing.messages`` is its bus contract.
"""

from __future__ import annotations

from fieldkit.registry import ServiceSpec

SERVICE = ServiceSpec(
    name="printing",
    summary="printing: receipts and photo sheets through CUPS, spool purged",
    setup="fieldkit.printing.service:setup",
    roles=frozenset({"tablet"}),
    holds_personal_data=True,
)
