"""Evaluation: suites, judges, MLflow scorers and the runner.

Example:
    >>> from ragworks.eval import run_suite
    >>> result = run_suite("agent.yaml", "suite.yaml", fail_under={"faithfulness": 0.8})  # doctest: +SKIP
    >>> print(result.summary())                                                           # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragworks._imports import lazy_attributes

# Loaded on first use: scorers and the runner import MLflow.
_LAZY = {
    "EvalRow": "ragworks.eval.suite",
    "EvalSuite": "ragworks.eval.suite",
    "Expectations": "ragworks.eval.suite",
    "Judge": "ragworks.eval.judges",
    "Judgement": "ragworks.eval.judges",
    "MetricSummary": "ragworks.eval.runner",
    "PairedComparison": "ragworks.eval.paired",
    "PairedMetric": "ragworks.eval.paired",
    "SCORER_NAMES": "ragworks.eval.scorers",
    "SuiteResult": "ragworks.eval.runner",
    "example_suite": "ragworks.eval.suite",
    "get_judge": "ragworks.eval.judges",
    "make_scorer": "ragworks.eval.scorers",
    "make_scorers": "ragworks.eval.scorers",
    "run_example_suite": "ragworks.eval.runner",
    "run_suite": "ragworks.eval.runner",
}

if TYPE_CHECKING:
    from ragworks.eval.judges import Judge, Judgement, get_judge
    from ragworks.eval.paired import PairedComparison, PairedMetric
    from ragworks.eval.runner import MetricSummary, SuiteResult, run_example_suite, run_suite
    from ragworks.eval.scorers import SCORER_NAMES, make_scorer, make_scorers
    from ragworks.eval.suite import EvalRow, EvalSuite, Expectations, example_suite


__getattr__ = lazy_attributes("ragworks.eval", _LAZY)


__all__ = [
    "SCORER_NAMES",
    "EvalRow",
    "EvalSuite",
    "Expectations",
    "Judge",
    "Judgement",
    "MetricSummary",
    "PairedComparison",
    "PairedMetric",
    "SuiteResult",
    "example_suite",
    "get_judge",
    "make_scorer",
    "make_scorers",
    "run_example_suite",
    "run_suite",
]
