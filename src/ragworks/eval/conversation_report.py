"""The conversations section of a report: each scorer's mean per turn and each conversation's scores."""

from __future__ import annotations

import html
import math

from ragworks.eval.conversation_summary import CONSISTENCY, RETENTION, ConversationSummary


def conversation_lines(summary: ConversationSummary | None) -> list[str]:
    """Plain-text lines for the summary and Markdown (none without conversations)."""
    return summary.lines() if summary is not None else []


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.3f}"
    return "-" if value is None else html.escape(str(value))


def conversation_html(summary: ConversationSummary | None) -> str:
    """An HTML section: a per-turn table (turn x metric) and a per-conversation table."""
    if summary is None:
        return ""
    names = sorted({name for means in summary.per_turn.values() for name in means})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    turns = "".join(
        f"<tr><td>{turn}</td>{''.join(f'<td>{_cell(means.get(n))}</td>' for n in names)}</tr>"
        for turn, means in sorted(summary.per_turn.items())
    )
    rows = "".join(
        f"<tr><td>{_cell(r['conversation'])}</td><td>{_cell(r['turns'])}</td><td>{_cell(r[CONSISTENCY])}</td>"
        f"<td>{_cell(r['consistency_rationale'])}</td><td>{_cell(r[RETENTION])}</td>"
        f"<td>{_cell(r['retention_rationale'])}</td></tr>"
        for r in summary.rows
    )
    return (
        f"<h2>Conversations</h2><h3>Per turn</h3><table><tr><th>turn</th>{head}</tr>{turns}</table>"
        "<h3>Per conversation</h3><table><tr><th>conversation</th><th>turns</th><th>consistency</th>"
        f"<th>why</th><th>retention</th><th>why</th></tr>{rows}</table>"
    )
