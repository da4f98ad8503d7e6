"""Helpers the tests share that are not fixtures: the QEMU harness that boots a built image."""
