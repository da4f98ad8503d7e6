"""The log formatter masks application IDs and My Numbers, tracebacks included. R6 R23"""

from __future__ import annotations

import io
import logging

import pytest

from fieldkit.logs import FORMAT, RedactingFormatter, redact

APPLICATION_ID = "12345678901234567890123"  # synthetic: 23 digits, like a 申請書ID


def log_with(formatter: logging.Formatter) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger("test.redaction")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.warning("scan failed for %s", APPLICATION_ID)
    try:
        raise ValueError(f"bad id {APPLICATION_ID}")
    except ValueError:
        logger.exception("while handling")
    return stream.getvalue()


def test_redacting_formatter_masks_ids_in_messages_and_tracebacks() -> None:
    text = log_with(RedactingFormatter(FORMAT))
    assert APPLICATION_ID not in text
    assert text.count("[digits masked]") == 2  # the message and the exception text


def test_without_the_formatter_the_id_leaks() -> None:
    """The protection is needed: a plain formatter lets the ID through."""
    assert APPLICATION_ID in log_with(logging.Formatter(FORMAT))


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("id 1234 5678 9012", True),  # a My Number written in groups
        ("port 18830 pid 4729", False),
        ("2026-11-23T06:01:34", False),
    ],
)
def test_redact_masks_long_digit_runs_only(text: str, masked: bool) -> None:
    assert ("[digits masked]" in redact(text)) is masked


def test_a_log_line_after_stderr_was_swapped_goes_to_the_new_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thread that outlives a swap of stderr (pytest's capture, a test calling `main`) must
    not write to the closed stream ("--- Logging error ---" in the run)."""
    import io
    import logging
    import sys

    from fieldkit.logs import configure_logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("fieldkit.test").warning("after the swap")
    assert "after the swap" in second.getvalue()
