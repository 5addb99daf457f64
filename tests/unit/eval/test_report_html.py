"""The HTML and Markdown reports: trace links into the MLflow UI, a scrolling rows table, error
columns only when something erred, and agreement / paired results in sections of their own."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import mlflow
import pandas as pd
import pytest
from bs4 import BeautifulSoup

from ragworks.eval._report_rows import shown_columns, trace_url, ui_address
from ragworks.eval._stats import MetricSummary
from ragworks.eval.paired import KEY_COLUMN, compare_tables
from ragworks.eval.report import render_html, render_markdown
from ragworks.eval.runner import SuiteResult


def _result(run_id: str = "", *, errors: int = 0) -> SuiteResult:
    table = pd.DataFrame(
        {
            "trace_id": ["tr-1", "tr-2"],
            KEY_COLUMN: ["k1", "k2"],
            "question": ["What is BM25?", "How do I serve?"],
            "answer": ["BM25 ranks words [1]. " * 80, "Run ragworks serve [1]."],
            "faithfulness": [1.0, 0.5],
            "faithfulness/rationale": ["ok", "half"],
            "faithfulness/error": [None, "JudgeError: timed out" if errors else None],
            "mrr": [1.0, 0.5],
            "mrr/rationale": ["rank 1", "rank 2"],
            "mrr/error": [None, None],
        }
    )
    metrics = {
        name: MetricSummary(name=name, mean=0.75, ci_low=0.5, ci_high=1.0, n=2, errors=count)
        for name, count in (("faithfulness", errors), ("mrr", 0))
    }
    return SuiteResult(
        run_id=run_id,
        suite="docs",
        metrics=metrics,
        values={"faithfulness": [1.0, 0.5], "mrr": [1.0, 0.5]},
        table=table,
        judge="offline:lexical",
    )


@pytest.fixture(autouse=True)
def _no_ui_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAGWORKS_MLFLOW_UI", raising=False)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local store for the module (a local store has no UI address of its own)."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path_factory.mktemp('report')}/mlflow.db")
    experiment = mlflow.set_experiment("report-links")
    with mlflow.start_run() as run:
        pass
    return f"{experiment.experiment_id}:{run.info.run_id}"


def _headers(soup: BeautifulSoup, table_index: int) -> list[str]:
    return [th.get_text() for th in soup.find_all("table")[table_index].find_all("th")]


def test_ui_address_and_the_mlflow_3_trace_route() -> None:
    assert ui_address("http://mlflow.local:5000/") == "http://mlflow.local:5000"
    assert ui_address("HTTPS://x.example/mlflow") == "HTTPS://x.example/mlflow"
    assert ui_address("sqlite:///m.db") is None and ui_address("./mlruns") is None
    assert ui_address(None) is None
    assert ui_address("sqlite:///m.db", "http://ui:5000/") == "http://ui:5000"
    url = urlsplit(trace_url("http://ui:5000", "12", "tr-abc"))
    assert url.path == "/" and url.fragment.startswith("/experiments/12/traces?")
    query = parse_qs(url.fragment.split("?", 1)[1])
    assert query == {"selectedEvaluationId": ["tr-abc"], "traceId": ["tr-abc"]}


def test_trace_ids_link_into_the_ui_when_its_address_is_known(
    tracking: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id, run_id = tracking.split(":")
    plain = BeautifulSoup(render_html(_result(run_id)), "html.parser")
    assert plain.select(".rows a") == [] and "tr-1" in plain.select_one(".rows").get_text()

    monkeypatch.setenv("RAGWORKS_MLFLOW_UI", "http://127.0.0.1:5000/")
    soup = BeautifulSoup(render_html(_result(run_id)), "html.parser")
    links = soup.select(".rows a")
    assert [a.get_text() for a in links] == ["tr-1", "tr-2"]
    assert links[0]["href"] == trace_url("http://127.0.0.1:5000", experiment_id, "tr-1")

    monkeypatch.delenv("RAGWORKS_MLFLOW_UI")
    given = _result(run_id)
    given.ui_url = "https://mlflow.example"  # what `ragworks eval --ui-url` passes
    href = BeautifulSoup(render_html(given), "html.parser").select_one(".rows a")["href"]
    assert href == trace_url("https://mlflow.example", experiment_id, "tr-1")


def test_the_rows_table_scrolls_in_its_own_box() -> None:
    soup = BeautifulSoup(render_html(_result()), "html.parser")
    box = soup.select_one("div.rows")
    assert box is not None and box.find("table") is not None
    css = soup.find("style").get_text()
    assert ".rows{overflow:auto" in css and "max-height" in css
    long_cell = box.find_all("tr")[1].find_all("td")[3].get_text()
    assert long_cell.endswith("...") and len(long_cell) < 700  # a long answer is cut, not the page widened


def test_error_columns_appear_only_when_something_erred() -> None:
    clean = BeautifulSoup(render_html(_result()), "html.parser")
    assert "errors" not in _headers(clean, 0)
    assert not [h for h in _headers(clean, 1) if h.endswith("/error")]
    assert "errors" not in render_markdown(_result()).split("\n")[4]

    soup = BeautifulSoup(render_html(_result(errors=1)), "html.parser")
    assert "errors" in _headers(soup, 0)
    rows_headers = [h for h in _headers(soup, 1) if h.endswith("/error")]
    assert rows_headers == ["faithfulness/error"]  # mrr had none, so its column stays out
    assert "JudgeError: timed out" in soup.select_one(".rows").get_text()
    assert "| errors |" in render_markdown(_result(errors=1))


def test_shown_columns_drop_empty_error_columns_only() -> None:
    table = pd.DataFrame({"a/error": [None, float("nan"), ""], "b/error": [None, "x", None], "c": [None] * 3})
    assert shown_columns(table) == ["b/error", "c"]


def test_agreement_and_paired_results_have_their_own_sections() -> None:
    result = _result()
    base = pd.DataFrame({KEY_COLUMN: ["k1", "k2"], "faithfulness": [1.0, 0.5], "mrr": [1.0, 0.5]})
    result.comparison = compare_tables(base, result.table, ["faithfulness", "mrr"], baseline="r0")
    soup = BeautifulSoup(render_html(result), "html.parser")
    titles = [h.get_text() for h in soup.find_all("h2")]
    assert {"How far to trust these scores", "Paired comparison", "Rows"} <= set(titles)
    trust = soup.find("h2", string="How far to trust these scores").find_next_sibling()
    assert trust.name == "ul" and "how far to trust faithfulness" in trust.get_text()
    assert "mrr" not in trust.get_text()  # a retrieval metric is not judged
    paired = soup.find("h2", string="Paired comparison")
    assert "No regressions" in paired.find_next_sibling("p").find_next_sibling("p").get_text()
    assert titles.index("Paired comparison") < titles.index("Rows")
    markdown = render_markdown(result)
    assert "## How far to trust these scores" in markdown and "## Paired comparison" in markdown
