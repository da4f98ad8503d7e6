"""Printing: receipts and photo sheets rendered in memory to PDF and printed through CUPS.

The service lives in ``fieldkit.printing.service`` (its ``SERVICE`` spec); this package
imports nothing at load time, so ``fieldkit.config`` can import the settings without a cycle.
"""
