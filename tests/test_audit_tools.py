"""The auditors' verdicts as the booted tests read them (tests/support/audit_tools.py), on
made-up report sections: the OpenSCAP score counts what the tailored run judged, and a rule
that drops out of the tailored run without being excluded fails the check (the booted hub's
sshd_set_idle_timeout once did, through the data stream's `requires`)."""

from __future__ import annotations

import pytest

from tests.support.audit_tools import OSCAP_EXCLUDED, OSCAP_TARGET, RULE, check_oscap, oscap_result

PASSING = [f"pass_{n}" for n in range(19)]
EXCLUDED = sorted(OSCAP_EXCLUDED)[:2]


def section(results: dict[str, str]) -> str:
    return "\n".join(f"{verdict} {RULE}{rule}" for rule, verdict in results.items())


def sections(tailored: dict[str, str]) -> dict[str, str]:
    shipped = {**dict.fromkeys(PASSING, "pass"), "dependent": "fail"}
    shipped |= dict.fromkeys(EXCLUDED, "fail")
    return {"oscap": section(shipped), "oscap-tailored": section(tailored)}


def test_the_score_is_over_the_rules_judged() -> None:
    found = oscap_result(sections({**dict.fromkeys(PASSING, "pass"), "dependent": "fail",
                                   "iommu": "notapplicable"}), "oscap-tailored")  # fmt: skip
    assert found.score == pytest.approx(95.0) and found.failed == ["dependent"]
    assert OSCAP_TARGET == 90.0


def test_every_shipped_rule_is_judged_again_or_excluded() -> None:
    check_oscap(sections({**dict.fromkeys(PASSING, "pass"), "dependent": "fail"}))
    with pytest.raises(AssertionError, match=r"dropped rules it does not exclude: \['dependent'\]"):
        check_oscap(sections(dict.fromkeys(PASSING, "pass")))
    with pytest.raises(AssertionError, match="the tailoring did not apply"):
        check_oscap(sections({**dict.fromkeys(PASSING, "pass"), "dependent": "fail",
                              EXCLUDED[0]: "fail"}))  # fmt: skip
