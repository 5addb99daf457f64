"""How far to trust a judged score: the shipped agreement of our offline judges with people.

`ragworks/data/judge_agreement.yaml` holds what `ragworks eval calibrate` measured for each offline
judge on public human-labelled sets (written by `benchmarks/judge_agreement.py`); reports print
the line `trust_note` makes next to each judged metric.

Example:
    >>> trust_note("offline:lexical", "faithfulness")  # doctest: +ELLIPSIS
    'agreement with people: AUROC 0.96 [0.95, 0.98], kappa 0.82 on BEGIN dev...'
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

DATA_FILE = "judge_agreement.yaml"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class Agreement:
    """One judge on one metric against one labelled set."""

    judge: str
    metric: str
    dataset: str
    n: int
    auroc: float
    auroc_ci: tuple[float, float]
    kappa: float
    threshold: float
    """The kappa-maximising threshold on that set (a score at or above it agrees with a positive label)."""


@lru_cache(maxsize=1)
def shipped_agreement() -> tuple[Agreement, ...]:
    """Every entry of the shipped agreement file."""
    source = resources.files("ragworks.data").joinpath(DATA_FILE)
    if not source.is_file():  # a broken install: reports then say "not measured" rather than fail
        logger.warning("%s is missing from the ragworks package; reinstall it.", DATA_FILE)
        return ()
    entries = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    return tuple(
        Agreement(
            judge=e["judge"],
            metric=e["metric"],
            dataset=e["dataset"],
            n=int(e["n"]),
            auroc=float(e["auroc"]),
            auroc_ci=(float(e["auroc_ci"][0]), float(e["auroc_ci"][1])),
            kappa=float(e["kappa"]),
            threshold=float(e["threshold"]),
        )
        for e in entries.get("agreement", [])
    )


def agreement_of(judge: str, metric: str) -> list[Agreement]:
    """The shipped measurements of `judge` on `metric` (empty when none was made)."""
    return [a for a in shipped_agreement() if a.judge == judge and a.metric == metric]


def trust_note(judge: str, metric: str) -> str:
    """One line saying how far the judge's score on `metric` agrees with people, or that it is unmeasured."""
    found = agreement_of(judge, metric)
    if not found:
        return (
            f"agreement with people: not measured for {judge} on {metric} "
            f"(measure it: ragworks eval calibrate LABELS --judge {judge})"
        )
    parts = [
        f"AUROC {a.auroc:.2f} [{a.auroc_ci[0]:.2f}, {a.auroc_ci[1]:.2f}], kappa {a.kappa:.2f} on {a.dataset} "
        f"({a.n} rows)"
        for a in found
    ]
    return "agreement with people: " + "; ".join(parts)


def trust_lines(judge: str, metrics: Iterable[str]) -> list[str]:
    """`how far to trust <metric>: ...` for each judged metric among `metrics` (not retrieval ones)."""
    from ragworks.eval.scorers import JUDGE_SCORERS

    return [f"how far to trust {m}: {trust_note(judge, m)}" for m in metrics if m in JUDGE_SCORERS]


def trust_html(judge: str, metrics: Iterable[str]) -> str:
    """The trust lines as an HTML section (empty when no judged metric ran)."""
    lines = trust_lines(judge, metrics)
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return f"<h2>How far to trust these scores</h2><ul>{items}</ul>"
