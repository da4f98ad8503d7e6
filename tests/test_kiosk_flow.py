"""The applicant session's state machine (R1-R8): explicit states, audited, forgetting."""

from __future__ import annotations

import pytest

from fieldkit.kiosk.flow import AuditEvent, Counter, FlowError, Outcome, Step

APPLICATION_ID = "98765432109876543210987"  # synthetic
PHOTO = b"\xff\xd8\xff\xe0synthetic-jpeg\xff\xd9"


@pytest.fixture
def audit() -> list[AuditEvent]:
    return []


@pytest.fixture
def counter(audit: list[AuditEvent]) -> Counter:
    return Counter(audit=audit.append)


def walk_to_review(counter: Counter) -> None:
    counter.start("op-01", "support")
    counter.set_application_id(APPLICATION_ID)
    counter.answer_terms("2026-04", True)
    counter.set_photo(PHOTO, PHOTO)
    counter.set_options(e_certificate=True, braille=False)
    counter.set_statistics("202011", "female", "80-89")


def test_a_full_session_walks_every_step_and_is_audited_without_personal_data(
    counter: Counter, audit: list[AuditEvent]
) -> None:
    walk_to_review(counter)
    session = counter.submit()
    counter.printed()
    counter.finish()
    stats = session.statistics()
    assert stats.outcome is Outcome.SUBMITTED and stats.municipality == "202011"
    assert stats.e_certificate is True and stats.braille is False
    assert APPLICATION_ID not in repr(session)  # repr never shows personal fields
    closed = counter.close()
    assert closed is session and counter.current is None
    steps = [e.step_to for e in audit if e.step_to]
    assert steps == ["mode", "scan", "terms", "photo", "options", "statistics", "review",
                     "print", "done", "ended"]  # fmt: skip
    # R14: who did what, never whose data.
    assert all(APPLICATION_ID not in repr(e) for e in audit)
    assert {e.operator for e in audit} == {"op-01"}


def test_close_zeroes_the_photo_and_drops_the_id(counter: Counter) -> None:
    walk_to_review(counter)
    session = counter.current
    assert session is not None and session.photo is not None
    photo_buffer = session.photo
    counter.abandon("button")
    counter.close()
    assert session.application_id is None and session.photo is None  # R6
    assert bytes(photo_buffer) == bytes(len(PHOTO))  # the buffer itself was zeroed


def test_no_agreement_no_application(counter: Counter) -> None:  # R2
    counter.start("op-01", "municipal")
    counter.set_application_id(APPLICATION_ID)
    counter.answer_terms("2026-04", False)
    session = counter.current
    assert session is not None and session.step is Step.ENDED
    assert session.outcome is Outcome.DECLINED
    with pytest.raises(FlowError):
        counter.set_photo(PHOTO, PHOTO)


def test_unknown_id_is_forwarded_and_counted_per_municipality(counter: Counter) -> None:  # R8
    counter.start("op-01", "support")
    counter.forward()
    session = counter.record_forward("202029")
    stats = session.statistics()
    assert stats.outcome is Outcome.FORWARDED and stats.municipality == "202029"
    assert stats.e_certificate is None


def test_steps_cannot_be_skipped_and_going_back_is_limited(counter: Counter) -> None:
    counter.start("op-01", "support")
    with pytest.raises(FlowError, match="at scan, not review"):
        counter.submit()
    walk_to_review_from_scan(counter)
    counter.go_back(Step.OPTIONS)
    counter.set_options(e_certificate=False, braille=True)
    counter.set_statistics(None, "no-answer", "no-answer")
    counter.submit()
    with pytest.raises(FlowError):
        counter.go_back(Step.OPTIONS)  # submitted: no revising


def walk_to_review_from_scan(counter: Counter) -> None:
    counter.set_application_id(APPLICATION_ID)
    counter.answer_terms("2026-04", True)
    counter.set_photo(PHOTO, PHOTO)
    counter.set_options(e_certificate=True, braille=False)
    counter.set_statistics("202011", "male", "70-79")


def test_one_session_at_a_time_and_abandon_from_anywhere(counter: Counter) -> None:
    counter.start("op-01", "support")
    with pytest.raises(FlowError, match="already open"):
        counter.start("op-02", "support")
    counter.set_application_id(APPLICATION_ID)
    session = counter.abandon("idle")
    assert session is not None and session.outcome is Outcome.ABANDONED
    counter.close()
    counter.start("op-02", "support")


def test_unknown_age_band_is_refused(counter: Counter) -> None:
    counter.start("op-01", "support")
    walk_to_review_from_scan(counter)
    counter.go_back(Step.STATISTICS)
    with pytest.raises(FlowError, match="age band"):
        counter.set_statistics(None, "no-answer", "100-109")
