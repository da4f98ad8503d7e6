"""The shared leaf every model builds on: the two strict bases, the kit's ID patterns, and how a
validation error is told. It imports nothing of fieldkit, so any module may import it.

- ``Strict``: frozen, unknown keys refused — bus messages, records, policies, reports.
- ``Section``: unknown keys refused, not frozen — a config section (``[capture]``, …), so a
  typo in ``device.toml`` is an error, not a silently ignored setting.
- ``SESSION_ID_PATTERN``: an applicant session's ID as the kiosk makes it (128 random bits,
  hex); every service's messages hold the same rule.
- ``RECORD_ID_PATTERN``: a record's ID (outbox, hub, evidence, certificates).
- ``OPERATOR_ID_PATTERN``: a counter operator's ID.
- ``describe_validation_error``: one ``key: what is wrong`` per problem, never the value
  (a value may be personal data).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

SESSION_ID_PATTERN = r"^[0-9a-f]{32}$"
RECORD_ID_PATTERN = r"^[0-9a-f]{32}$"
# A counter operator's ID (the kiosk's roster and the hub's, which sync carries down).
OPERATOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{1,31}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def problem_keys(error: ValidationError, top: str = "(top level)") -> list[str]:
    """The dotted key of each problem, in order."""
    problems = error.errors(include_input=False, include_url=False)
    return [".".join(str(part) for part in p["loc"]) or top for p in problems]


def describe_validation_error(
    error: ValidationError, *, prefix: str = "", top: str = "(top level)"
) -> str:
    """One ``key: what is wrong`` per problem, joined by "; ". Never the offending value."""
    problems = error.errors(include_input=False, include_url=False)
    keys = problem_keys(error, top)
    return "; ".join(f"{prefix}{key}: {p['msg']}" for key, p in zip(keys, problems, strict=True))
