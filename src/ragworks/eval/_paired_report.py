"""The report's sections for a paired comparison with a baseline run and for repeat judging (HTML)."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from ragworks.eval.repeats import PASS_AT

if TYPE_CHECKING:
    from ragworks.eval.paired import PairedComparison
    from ragworks.eval.runner import SuiteResult

_COLOURS = {"regression": "#b91c1c", "improvement": "#15803d", "no change": "#444"}


def _num(value: float, fmt: str = ".3f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def comparison_html(result: SuiteResult) -> str:
    """The paired-comparison and repeat-judging sections (empty when the run had neither)."""
    parts = []
    if result.comparison is not None:
        parts.append(_comparison(result.comparison))
    if result.repeats:
        parts.append(_repeats(result))
    return "".join(parts)


def _comparison(comparison: PairedComparison) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(m.metric)}</td><td>{m.n}</td><td>{_num(m.baseline)}</td><td>{_num(m.current)}</td>"
        f"<td>{_num(m.mean_diff, '+.3f')}</td><td>[{_num(m.ci_low, '+.3f')}, {_num(m.ci_high, '+.3f')}]</td>"
        f"<td>{m.worse} / {m.better}</td><td>{esc(m.test)}</td><td>{_num(m.p_value)}</td>"
        f"<td style='color:{_COLOURS[m.verdict]}'><b>{m.verdict}</b></td></tr>"
        for m in comparison.metrics
    )
    alpha = comparison.metrics[0].alpha if comparison.metrics else 0.05
    regressed = ", ".join(m.metric for m in comparison.regressions)
    headline = f"Significant regressions: {esc(regressed)}" if regressed else "No regressions"
    notes = "".join(f"<li>{esc(line)}</li>" for line in comparison.lines() if line.startswith("metric "))
    return (
        f"<h2>Paired comparison</h2><p>Baseline run <code>{esc(comparison.baseline)}</code>: "
        f"{comparison.paired} rows paired by their inputs. Paired tests (McNemar exact for 0/1 values, "
        f"Wilcoxon signed-rank otherwise), two-sided, alpha {alpha} per metric.</p>"
        f"<p><b>{headline}</b></p><ul>{notes}</ul>"
        "<table><tr><th>metric</th><th>pairs</th><th>baseline</th><th>this run</th><th>diff</th>"
        "<th>95% CI of diff</th><th>rows worse / better</th><th>test</th><th>p</th><th>verdict</th></tr>"
        f"{rows}</table>"
    )


def _repeats(result: SuiteResult) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s.metric)}</td><td>{s.repeats}</td><td>{s.rows}</td><td>{s.flipped}</td>"
        f"<td>{_num(s.flip_rate)}</td><td>{_num(s.within_row_var, '.4f')}</td><td>{s.errors}</td></tr>"
        for s in result.repeats.values()
    )
    return (
        f"<h2>Repeat judging</h2><p>Each row judged several times; a row flips when its pass/fail "
        f"(value at least {PASS_AT}) differs between repeats.</p>"
        "<table><tr><th>metric</th><th>repeats</th><th>rows</th><th>rows flipped</th><th>flip rate</th>"
        f"<th>within-row variance</th><th>errors</th></tr>{rows}</table>"
    )
