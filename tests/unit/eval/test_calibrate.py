"""Judge calibration: agreement statistics, labels files, the MLflow run, thresholds the judges read."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from typer.testing import CliRunner

from ragworks.cli import app
from ragworks.errors import ConfigError, EvalError
from ragworks.eval._agreement_stats import auroc, best_threshold, bootstrap, kappa
from ragworks.eval._labels import load_labels
from ragworks.eval._thresholds import ThresholdJudge, load_thresholds, write_thresholds
from ragworks.eval.calibrate import agreement, calibrate
from ragworks.eval.judges import get_judge

BEGIN = Path(__file__).resolve().parents[4] / "shared" / "data" / "begin-dev" / "begin_dev_wow.tsv"
CONTEXT = "BM25 ranks chunks by the rare words they share with the query. Dense search compares vectors."
# A small hand-labelled slice: faithful answers quote the context, unfaithful ones invent.
ROWS = [
    ("How does BM25 rank?", "BM25 ranks chunks by the rare words they share with the query.", True),
    ("What does dense search compare?", "Dense search compares vectors.", True),
    ("How does BM25 rank?", "BM25 ranks chunks by rare words.", True),
    ("What is dense search?", "Dense search compares vectors of chunks.", True),
    ("How does BM25 rank?", "BM25 was invented at Microsoft in 1994 by a team in Redmond.", False),
    ("What does dense search compare?", "Dense search compares images using a GPU cluster in Oslo.", False),
    ("What is BM25?", "BM25 is a neural network trained on Wikipedia for translation.", False),
    ("What is dense search?", "It is a Python library that Google released for robots.", False),
]


def _write_jsonl(path: Path) -> Path:
    lines = []
    for question, answer, faithful in ROWS:
        labels = {"faithfulness": faithful, "answer_relevance": True}
        lines.append(
            json.dumps({"question": question, "answer": answer, "context": [CONTEXT], "labels": labels})
        )
    lines.append(
        json.dumps(
            {
                "question": "What is BM25?",
                "answer": "See the blog post.",
                "context": CONTEXT,
                "labels": {"answer_relevance": False, "faithfulness": False},
            }
        )
    )
    lines.append(
        json.dumps(
            {
                "question": "How does BM25 rank?",
                "answer": "pip install bm25s",
                "context": CONTEXT,
                "labels": {"answer_relevance": "no", "faithfulness": False},
            }
        )
    )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_statistics_match_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.4
    scores = np.round(labels * 0.3 + rng.random(200), 2)  # ties included
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    predicted = scores >= 0.6
    assert kappa(labels, predicted) == pytest.approx(cohen_kappa_score(labels, predicted), abs=1e-12)
    threshold, best = best_threshold(labels, scores)
    brute = max(cohen_kappa_score(labels, scores >= t) for t in np.unique(scores))
    assert best == pytest.approx(brute, abs=1e-9)
    assert cohen_kappa_score(labels, scores >= threshold) == pytest.approx(best, abs=1e-9)


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_more_rows() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(400) < 0.5
    scores = labels * 0.5 + rng.random(400)
    wide = bootstrap(labels[:40], scores[:40], 0.75)
    narrow = bootstrap(labels, scores, 0.75)
    for name in ("auroc", "kappa", "accuracy"):
        assert narrow[name].low <= narrow[name].value <= narrow[name].high
        assert narrow[name].high - narrow[name].low < wide[name].high - wide[name].low


def test_numeric_labels_are_cut_at_the_middle_of_their_range_and_get_a_rank_correlation() -> None:
    result = agreement("answer_relevance", [1, 2, 4, 5, 5], [0.1, 0.3, 0.6, 0.9, 0.8])
    assert result.label_cutoff == 3.0 and result.positives == 3
    assert result.auroc.value == 1.0 and result.kappa.value == 1.0
    assert result.spearman == pytest.approx(0.9747, abs=1e-3)


def test_one_class_of_labels_is_refused() -> None:
    with pytest.raises(EvalError, match="labels of both kinds"):
        agreement("faithfulness", [True, True], [0.2, 0.9])


def test_labels_from_csv_and_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "answer", "context", "label_faithfulness", "label_answer_relevance"])
        writer.writerow(["q1", "a1", '["c1", "c2"]', "yes", ""])
        writer.writerow(["q2", "a2", "plain text", "0", "0.5"])
    rows = load_labels(path)
    assert rows[0].contexts == ("c1", "c2") and rows[0].labels == {"faithfulness": True}
    assert rows[1].contexts == ("plain text",) and rows[1].labels == {
        "faithfulness": 0.0,
        "answer_relevance": 0.5,
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "labels": {"faithfulness": true}}\nnot json\n')
    with pytest.raises(EvalError, match=r"bad.jsonl:2: not JSON"):
        load_labels(bad)
    bad.write_text('{"question": "q", "answer": "a", "labels": {"faithfulness": "maybe"}}\n')
    with pytest.raises(EvalError, match=r"bad\.jsonl:1, label 'faithfulness'"):
        load_labels(bad)


def test_calibrate_logs_agreement_to_an_mlflow_run(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl")
    report = calibrate(labels, judge="offline:lexical", experiment="calibrate-test")
    faith = report.metrics["faithfulness"]
    assert faith.n == 10 and faith.positives == 4
    assert faith.auroc.value > 0.9 and faith.kappa.value > 0.5
    assert report.metrics["answer_relevance"].auroc.value == 1.0  # the two non-answers rank last
    run = mlflow.get_run(report.run_id)
    assert run.data.params["judge"] == "offline:lexical" and run.data.params["rows"] == "10"
    assert run.data.metrics["faithfulness/auroc"] == pytest.approx(faith.auroc.value)
    assert run.data.metrics["faithfulness/threshold"] == pytest.approx(faith.threshold)
    assert run.data.metrics["faithfulness/kappa_ci_low"] <= faith.kappa.value
    artifact = mlflow.artifacts.load_text(f"runs:/{report.run_id}/calibration.json")
    assert json.loads(artifact)["faithfulness"]["threshold"] == faith.threshold


def test_cli_json_and_thresholds_file_that_the_judge_reads(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl")
    out = tmp_path / "thresholds.json"
    args = ["eval", "calibrate", str(labels), "--judge", "offline:lexical", "-s", "faithfulness", "--json"]
    result = CliRunner().invoke(app, [*args, "--thresholds-out", str(out)])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert set(body) == {"faithfulness"}
    assert {"auroc", "kappa", "accuracy", "threshold", "n", "auroc_ci"} <= set(body["faithfulness"])
    thresholds = load_thresholds(out, judge="offline:lexical")
    assert thresholds == {"faithfulness": body["faithfulness"]["threshold"]}
    judge = ThresholdJudge(get_judge("offline:lexical"), thresholds)
    good = judge.faithfulness("q", ROWS[0][1], [CONTEXT])
    bad = judge.faithfulness("q", ROWS[4][1], [CONTEXT])
    assert good.details["passed"] is True and bad.details["passed"] is False
    assert bad.rationale.startswith("FAIL (faithfulness")
    with pytest.raises(ConfigError, match="calibrated for judge 'offline:lexical', not 'openai:x'"):
        load_thresholds(out, judge="openai:x")


def test_cli_refuses_a_metric_the_labels_lack(tmp_path: Path) -> None:
    labels = _write_jsonl(tmp_path / "labels.jsonl")
    result = CliRunner().invoke(app, ["eval", "calibrate", str(labels), "-s", "correctness"])
    assert result.exit_code == 1
    assert "no 'correctness' labels" in result.output


def test_thresholds_file_errors_say_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--thresholds-out"):
        load_thresholds(tmp_path / "missing.json")
    write_thresholds(tmp_path / "t.json", {"faithfulness": 0.4}, judge="offline:lexical", labels="x")
    assert load_thresholds(tmp_path / "t.json") == {"faithfulness": 0.4}


@pytest.mark.skipif(not BEGIN.is_file(), reason="needs ../shared/data/begin-dev")
def test_calibrate_reproduces_the_begin_benchmark_auroc_on_a_slice(tmp_path: Path) -> None:
    with BEGIN.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:80]
    labels = [r["begin_label"] == "Fully attributable" for r in rows]
    judge = get_judge("offline:lexical")
    # The benchmark's way (benchmarks/offline_judge_begin.py): scikit-learn on the judge's scores.
    scores = [judge.faithfulness(r["message"], r["response"], [r["knowledge"]]).score for r in rows]
    path = tmp_path / "begin.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "question": r["message"],
                    "answer": r["response"],
                    "context": [r["knowledge"]],
                    "labels": {"faithfulness": y},
                }
            )
            for r, y in zip(rows, labels, strict=True)
        )
    )
    report = calibrate(path, judge="offline:lexical")
    assert report.metrics["faithfulness"].auroc.value == pytest.approx(
        roc_auc_score(labels, scores), abs=0.005
    )


def test_run_suite_wraps_the_judge_with_thresholds_and_the_scorer_logs_the_verdict(tmp_path: Path) -> None:
    from ragworks.eval._thresholds import with_thresholds
    from ragworks.eval.scorers import make_scorer

    path = tmp_path / "t.json"
    write_thresholds(path, {"answer_relevance": 0.5}, judge="offline:lexical", labels="x")
    assert with_thresholds("offline:lexical", None) == "offline:lexical"
    wrapped = with_thresholds("offline:lexical", path)
    assert isinstance(wrapped, ThresholdJudge) and wrapped.name == "offline:lexical"
    with pytest.raises(ConfigError, match="calibrated for judge"):
        with_thresholds(get_judge("offline:lexical").__class__(dense=True), path)
    scorer = make_scorer("answer_relevance", judge=wrapped)
    feedback = scorer(inputs={"question": "What is BM25?"}, outputs="See the blog post.")
    details = json.loads(feedback.metadata["details"])
    assert details["passed"] is False and details["threshold"] == 0.5
    assert feedback.rationale.startswith("FAIL (answer_relevance 0.000 < calibrated threshold 0.5)")
