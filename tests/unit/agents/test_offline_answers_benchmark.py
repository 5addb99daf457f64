"""The SQuAD metric and the measurement of benchmarks/offline_answers.py on a tiny set."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from ragworks.agents.prompts import NOT_FOUND

BENCHMARKS = Path(__file__).resolve().parents[3] / "benchmarks"


@pytest.fixture(scope="module")
def bench():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("offline_answers", BENCHMARKS / "offline_answers.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["offline_answers"] = module  # dataclasses look their module up while the file loads
    spec.loader.exec_module(module)
    return module


def test_squad_normalisation_and_token_f1(bench) -> None:  # type: ignore[no-untyped-def]
    assert bench.normalize("The  Normans, in 1066!") == "normans in 1066"
    assert bench.token_f1("the Normans", "Normans") == 1.0
    assert bench.token_f1("Normans of France", "Normans") == pytest.approx(0.5)
    assert bench.token_f1("Vikings", "Normans") == 0.0


def test_measure_counts_abstention_recall_and_length(bench) -> None:  # type: ignore[no-untyped-def]
    sources = [(1, "The Normans came from Normandy.")]
    items = [
        (bench.Question("Where were the Normans from?", ("Normandy",), "a"), sources),
        (bench.Question("Who ruled the Vikings?", ("Rollo",), "a"), sources),
        (bench.Question("Where were the Franks from?", (), "a"), sources),
    ]

    def model(question: str, _: object) -> str:
        return "The Normans came from Normandy [1]." if "Normans" in question else NOT_FOUND

    m = bench.measure(model, items)
    assert m["gold_recall"] == 0.5
    assert m["abstain_answerable"] == 0.5
    assert m["abstain_unanswerable"] == 1.0
    assert m["median_words"] == 5
    assert m["exact_match"] == 0.0
    assert m["token_f1"] == pytest.approx((2 * 0.25 * 1 / 1.25) / 2)
