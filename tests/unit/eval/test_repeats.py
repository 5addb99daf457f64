"""Repeat judging: flip rate and within-row variance; an LLM judge's repeats are new calls, not cache hits."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ragworks.eval._llm_judge import LLMJudge, make_client
from ragworks.eval.repeats import repeat_judge, repeat_stats
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply


def test_flip_rate_counts_rows_whose_pass_fail_differs() -> None:
    rows = [[1.0, 1.0, 1.0], [0.4, 0.6, 0.6], [0.0, 0.1, 0.2], [1.0, None, 1.0]]
    stats = repeat_stats("faithfulness", rows)
    assert stats.rows == 3 and stats.flipped == 1 and stats.flip_rate == pytest.approx(1 / 3)
    assert stats.within_row_var == pytest.approx((0 + 0.04 / 3 + 0.01) / 3)
    steady = repeat_stats("mrr", [[1.0, 1.0], [0.5, 0.5]])
    assert steady.flip_rate == 0.0 and steady.within_row_var == 0.0
    assert math.isnan(repeat_stats("x", [[None, None]]).flip_rate)


def test_llm_judge_repeats_ask_again_instead_of_reading_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replies = iter([5, 1, 5])

    def responder(body: dict[str, object]) -> StubReply:
        return StubReply(content=f'{{"rating": {next(replies)}, "noncommittal": false, "rationale": "r"}}')

    with OpenAIStub(responder=responder) as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        client = make_client("openai", "judge", cache=tmp_path / "cache.sqlite", max_attempts=1)
        judge = LLMJudge(client, name="openai:judge")
        first = judge.answer_relevance("What is alpha?", "Alpha is a letter.").score
        again = judge.answer_relevance("What is alpha?", "Alpha is a letter.").score
        second = repeat_judge(judge, 1).answer_relevance("What is alpha?", "Alpha is a letter.").score
        third = repeat_judge(judge, 2).answer_relevance("What is alpha?", "Alpha is a letter.").score
        repeat_again = repeat_judge(judge, 1).answer_relevance("What is alpha?", "Alpha is a letter.").score
    assert (first, again, second, third, repeat_again) == (1.0, 1.0, 0.0, 1.0, 0.0)
    assert len(stub.requests) == 3  # the first judging's cache still serves re-runs; each repeat has its own
    assert client.stats.calls == 3 and client.stats.cache_hits == 2  # the twins share the counters
    assert repeat_judge(judge, 0) is judge
