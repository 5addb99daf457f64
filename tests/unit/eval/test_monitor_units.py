"""The monitor's pure parts: the sampling rule, durations, sample rates, scorer names, done marks."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
from mlflow.entities import AssessmentSource, Expectation, Feedback

from ragworks.errors import ConfigError
from ragworks.eval._monitor_traces import MONITOR_KEY, SCORED_TAG, done_scorers, expectations_of, sampled
from ragworks.eval.monitor import check_scorer_names, parse_interval, parse_sample


def test_sampling_is_the_documented_hash_rule_and_takes_about_the_share() -> None:
    ids = [f"tr-{i:032x}" for i in range(4000)]
    chosen = [t for t in ids if sampled(t, 0.1)]
    assert 300 < len(chosen) < 500
    for trace_id in ids[:200]:
        value = int(hashlib.sha256(trace_id.encode()).hexdigest()[:16], 16) / 2**64
        assert sampled(trace_id, 0.1) is (value < 0.1)
    assert set(chosen) <= {t for t in ids if sampled(t, 0.2)}  # a larger rate keeps the smaller sample
    assert all(sampled(t, 1.0) for t in ids)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "5x", "", "m", "nan"])
def test_bad_durations_are_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match="positive duration"):
        parse_interval(text)


@pytest.mark.parametrize("text", ["0", "1.5", "-0.1", "inf", "nan", "a tenth"])
def test_bad_sample_rates(text: str) -> None:
    with pytest.raises(ConfigError, match=r"in \(0, 1\]"):
        parse_sample(text)


def test_sample_rates() -> None:
    assert parse_sample("0.1") == 0.1 and parse_sample("1") == 1.0


def test_unknown_scorer_suggests_the_close_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'context_relevance'"):
        check_scorer_names(["context_relevence"])
    assert check_scorer_names(["mrr", "mrr", "faithfulness"]) == ["mrr", "faithfulness"]


def _trace(assessments: list[object], tags: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(assessments=assessments, tags=tags))


def test_done_marks_are_the_monitors_assessments_and_its_tag_only() -> None:
    human = AssessmentSource(source_type="HUMAN", source_id="ada")
    ours = Feedback(name="faithfulness", value=1.0, metadata={MONITOR_KEY: "run-1"})
    someone_elses = Feedback(name="answer_relevance", value=0.0, source=human)
    expected = Expectation(name="expected_facts", value=["alpha"])
    trace = _trace([ours, someone_elses, expected], {SCORED_TAG: "correctness,mrr"})
    assert done_scorers(trace) == {"faithfulness", "correctness", "mrr"}  # type: ignore[arg-type]
    assert expectations_of(trace) == {"expected_facts": ["alpha"]}  # type: ignore[arg-type]
