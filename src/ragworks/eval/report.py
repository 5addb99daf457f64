"""Reports of a suite run: a plain-text summary, Markdown, and HTML with a score histogram per metric."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

from ragworks.eval._paired_report import comparison_html
from ragworks.eval._report_rows import ROWS_CSS, link_base, rows_html
from ragworks.eval.agreement import trust_html, trust_lines
from ragworks.eval.conversation_report import conversation_html, conversation_lines
from ragworks.eval.repeats import repeat_lines

if TYPE_CHECKING:
    from ragworks.eval.runner import SuiteResult

BINS = 10


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def verdict(result: SuiteResult) -> str:
    """PASSED, PASSED with the errors it was allowed, or FAILED."""
    if not result.passed:
        return "FAILED"
    return "PASSED (errors allowed)" if result.errors else "PASSED"


def summary_table(result: SuiteResult) -> str:
    """Metrics as an aligned text table, then the thresholds / regressions verdict."""
    width = max([len("metric"), *(len(n) for n in result.metrics)])
    lines = [f"{'metric':<{width}}  {'mean':>6}  {'95% CI':>15}  {'n':>4}  {'errors':>6}"]
    for name, m in result.metrics.items():
        ci = f"[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
        lines.append(f"{name:<{width}}  {_fmt(m.mean):>6}  {ci:>15}  {m.n:>4}  {m.errors:>6}")
    if result.judge_stats:
        stats = ", ".join(f"{k} {v}" for k, v in result.judge_stats.items())
        lines.append(f"judge {result.judge}: {stats}")
    lines.extend(trust_lines(result.judge, result.metrics))
    lines.extend(f"FAIL {f}" for f in result.failures)
    lines.extend(f"{'ALLOWED ERROR' if result.allow_errors else 'ERROR'} {e}" for e in result.errors)
    if result.comparison is not None:
        lines.extend(result.comparison.lines())
    lines.extend(repeat_lines(result.repeats))
    lines.extend(conversation_lines(result.conversations))
    lines.append(verdict(result))
    return "\n".join(lines)


def histogram(values: list[float], bins: int = BINS) -> list[int]:
    """Counts of values in equal-width bins over [0, 1] (the last bin includes 1.0)."""
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int(value * bins)))] += 1
    return counts


def _svg(values: list[float]) -> str:
    counts, width, height = histogram(values), 220, 60
    top = max(counts) or 1
    bar = width / len(counts)
    rects = "".join(
        f'<rect x="{i * bar + 1:.1f}" y="{height - c / top * height:.1f}" width="{bar - 2:.1f}" '
        f'height="{c / top * height:.1f}" fill="#3b82f6">'
        f"<title>{i / BINS:.1f}-{(i + 1) / BINS:.1f}: {c}</title></rect>"
        for i, c in enumerate(counts)
    )
    return (
        f'<svg width="{width}" height="{height + 14}" role="img">{rects}<text x="0" y="{height + 12}" '
        f'font-size="10">0</text><text x="{width - 8}" y="{height + 12}" font-size="10">1</text></svg>'
    )


def render_markdown(result: SuiteResult) -> str:
    """The report as Markdown: metrics table, verdict, and the lowest-scoring rows."""
    erred = any(m.errors for m in result.metrics.values())
    lines = [
        f"# Eval report: {result.suite}",
        "",
        f"Run `{result.run_id}`, judge `{result.judge}`.",
        "",
        "| metric | mean | 95% CI | n |" + (" errors |" if erred else ""),
        "|---|---|---|---|" + ("---|" if erred else ""),
    ]
    for name, m in result.metrics.items():
        errors = f" {m.errors} |" if erred else ""
        lines.append(f"| {name} | {_fmt(m.mean)} | [{_fmt(m.ci_low)}, {_fmt(m.ci_high)}] | {m.n} |{errors}")
    trust = trust_lines(result.judge, result.metrics)
    if trust:
        lines += ["", "## How far to trust these scores", "", *(f"- {line}" for line in trust)]
    lines += ["", f"**{verdict(result)}**"]
    lines += [f"- {f}" for f in result.failures]
    lines += [f"- error {e}" for e in result.errors]
    lines += [f"- regression {r.metric}: {r.baseline:.3f} -> {r.current:.3f}" for r in result.regressions]
    if result.comparison is not None:
        lines += ["", "## Paired comparison", "", "```", *result.comparison.lines(), "```"]
    if result.repeats:
        lines += ["", "## Repeat judging", "", *(f"- {line}" for line in repeat_lines(result.repeats))]
    if result.conversations is not None:
        talks = conversation_lines(result.conversations)
        lines += ["", "## Conversations", "", *(f"- {line}" for line in talks)]
    return "\n".join(lines) + "\n"


def render_html(result: SuiteResult) -> str:
    """The report as one self-contained HTML page with a histogram per metric and the rows table."""
    esc = html.escape
    erred = any(m.errors for m in result.metrics.values())
    rows = []
    for name, m in result.metrics.items():
        errors = f"<td>{m.errors}</td>" if erred else ""
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{_fmt(m.mean)}</td><td>[{_fmt(m.ci_low)}, {_fmt(m.ci_high)}]"
            f"</td><td>{m.n}</td>{errors}<td>{_svg(result.values.get(name, []))}</td></tr>"
        )
    problems = "".join(f"<li>{esc(f)}</li>" for f in [*result.failures, *result.errors]) + "".join(
        f"<li>regression {esc(r.metric)}: {r.baseline:.3f} -&gt; {r.current:.3f}</li>"
        for r in result.regressions
    )
    table = rows_html(result.table, link_base(result))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Eval report: {esc(result.suite)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd;"
        "vertical-align:top;font-size:13px}table{border-collapse:collapse}"
        f"{ROWS_CSS}</style></head><body>"
        f"<h1>Eval report: {esc(result.suite)}</h1><p>Run <code>{esc(result.run_id)}</code>, judge "
        f"<code>{esc(result.judge)}</code>, {result.elapsed_s:.1f}s.</p>"
        f"<h2>{verdict(result)}</h2><ul>{problems}</ul>"
        "<table><tr><th>metric</th><th>mean</th><th>95% CI</th><th>n</th>"
        f"{'<th>errors</th>' if erred else ''}<th>histogram</th></tr>"
        f"{''.join(rows)}</table>{trust_html(result.judge, result.metrics)}{comparison_html(result)}"
        f"{conversation_html(result.conversations)}<h2>Rows</h2>{table}</body></html>"
    )


def render(result: SuiteResult, *, fmt: str = "html") -> str:
    """The report in `html` or `md`."""
    return render_markdown(result) if fmt == "md" else render_html(result)
