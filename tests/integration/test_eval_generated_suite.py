"""A generated suite runs through the real eval runner: its questions retrieve their own documents."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from ragworks.eval.generate import generate_suite, write_suite
from ragworks.eval.runner import run_suite
from ragworks.eval.suite import EvalSuite
from ragworks.retrieval.local import LocalIndex

# Measured by benchmarks/generated_suites.py on the shipped docs: recall@5 1.000, hashing embeddings.
RECALL_FLOOR = 0.9


@pytest.fixture(scope="module")
def shipped_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("generated-docs")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    return root / "index"


@pytest.mark.slow
def test_generated_suite_scores_through_the_runner(shipped_index: Path, tmp_path: Path) -> None:
    from ragworks.agents import build_agent

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_experiment(experiment_id="0")
    generated = generate_suite(LocalIndex.load(shipped_index).chunks(), 8, seed=3).suite
    write_suite(generated, tmp_path / "generated.yaml")
    agent = build_agent({"retriever": {"type": "local", "index": str(shipped_index), "k": 5}})
    scorers = ["recall_at_k", "correctness"]
    result = run_suite(
        agent, EvalSuite.load(tmp_path / "generated.yaml"), judge="offline:lexical", scorers=scorers
    )
    assert result.metrics["recall_at_k"].n == 8
    assert result.metrics["recall_at_k"].mean >= RECALL_FLOOR
    assert result.metrics["correctness"].mean > 0.5  # the offline answer states the sentence's key terms
