"""The report's rows table (HTML): trace ids that link into the MLflow UI, error columns only when used.

The MLflow UI is a hash-routed single page; a trace opens in its experiment's Traces tab from
`{ui}/#/experiments/{experiment_id}/traces?selectedEvaluationId={trace_id}&traceId={trace_id}`,
the link MLflow 3's own "View trace" button builds. The UI's address is `RAGWORKS_MLFLOW_UI` when
set, else the tracking URI when it is an http(s) server (which serves the UI too); a local store
(sqlite:, a folder) has no UI address, and trace ids stay plain text.

Example:
    >>> trace_url("http://mlflow:5000/", "7", "tr-1")
    'http://mlflow:5000/#/experiments/7/traces?selectedEvaluationId=tr-1&traceId=tr-1'
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

if TYPE_CHECKING:
    import pandas as pd

    from ragworks.eval.runner import SuiteResult

logger = logging.getLogger(__name__)
MAX_ROWS = 500
"""Rows shown in the HTML table (the full table is the run's eval_results.json)."""
CELL_CHARS = 600
ROWS_CSS = (
    ".rows{overflow:auto;max-height:75vh;border:1px solid #ddd}"
    ".rows table{min-width:100%}.rows th{position:sticky;top:0;background:#f8f8f8}"
    ".rows td{max-width:32em;overflow-wrap:anywhere}"
)
"""The rows table scrolls inside its box (both ways) instead of running off the page."""


def ui_address(tracking_uri: str | None, configured: str | None = None) -> str | None:
    """The MLflow UI's base address: `configured`, else an http(s) tracking URI, else None."""
    for candidate in (configured, tracking_uri):
        if candidate and candidate.strip().lower().startswith(("http://", "https://")):
            return candidate.strip().rstrip("/")
    return None


def trace_url(ui: str, experiment_id: str, trace_id: str) -> str:
    """The MLflow UI page of one trace in its experiment's Traces tab."""
    query = urlencode({"selectedEvaluationId": trace_id, "traceId": trace_id})
    return f"{ui.rstrip('/')}/#/experiments/{quote(experiment_id, safe='')}/traces?{query}"


def link_base(result: SuiteResult) -> tuple[str, str] | None:
    """(UI address, experiment id) for the run's trace links, or None when the UI's address is unknown."""
    import mlflow

    from ragworks.config import get_settings

    ui = ui_address(mlflow.get_tracking_uri(), result.ui_url or get_settings().mlflow_ui)
    if ui is None or not result.run_id:
        return None
    try:
        experiment_id = mlflow.get_run(result.run_id).info.experiment_id
    except Exception as exc:  # a report without links beats no report
        logger.info("No trace links in the report: run %s not found (%s).", result.run_id, exc)
        return None
    return ui, str(experiment_id)


def shown_columns(table: pd.DataFrame) -> list[str]:
    """The table's columns, less the `<metric>/error` ones no row has a value in."""
    return [
        c for c in table.columns if not (str(c).endswith("/error") and not any(map(_present, table[c])))
    ]


def _present(value: object) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(str(value).strip())


def _cell(value: object) -> str:
    if not _present(value):
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return html.escape(text if len(text) <= CELL_CHARS else text[:CELL_CHARS] + "...")


def _trace_cell(value: object, base: tuple[str, str] | None) -> str:
    if not _present(value) or base is None:
        return _cell(value)
    url = trace_url(base[0], base[1], str(value))
    return f'<a href="{html.escape(url)}" target="_blank" rel="noopener">{html.escape(str(value))}</a>'


def rows_html(table: pd.DataFrame, base: tuple[str, str] | None) -> str:
    """The rows table in a scrolling box; trace ids link to the UI when `base` is known."""
    if not len(table):
        return "<p>No rows.</p>"
    columns: Sequence[str] = shown_columns(table)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = []
    for _, row in table.head(MAX_ROWS).iterrows():
        cells = (_trace_cell(row[c], base) if c == "trace_id" else _cell(row[c]) for c in columns)
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    note = f"<p>First {MAX_ROWS} of {len(table)} rows.</p>" if len(table) > MAX_ROWS else ""
    return f'{note}<div class="rows"><table><tr>{head}</tr>{"".join(body)}</table></div>'
