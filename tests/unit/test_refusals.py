import pytest

from trocr_serving.refusals import KINDS, REASONS, Refusal, refusal


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.__name__)
def test_a_refusal_passed_between_models_keeps_its_kind_reason_and_status(kind):
    original = kind("why")
    passed = refusal(original.reason, str(original), original.status)
    assert type(passed) is kind
    assert (passed.reason, passed.status, str(passed)) == (original.reason, original.status, "why")


def test_an_unknown_reason_stays_a_refusal_with_its_status():
    passed = refusal("from-a-newer-model", "why", "UNAVAILABLE")
    assert type(passed) is Refusal and passed.status == "UNAVAILABLE"


def test_every_reason_is_distinct():
    assert len(set(REASONS)) == len(REASONS)
