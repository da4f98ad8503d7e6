"""Helpers the tests share that are not fixtures of one part: the QEMU harness that boots a
built image, the browser, the kiosk driven in it, waiting with a deadline, repository paths.
No test module imports another (``tests/test_test_imports.py``); what two tests share is here."""
