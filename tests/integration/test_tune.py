"""`ragworks tune` on real suites: nested MLflow runs, a held-back check, a best config that runs.

Offline throughout: hashing embeddings, the offline lexical judge, a temporary SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import typer
import yaml
from typer.testing import CliRunner

from ragworks.config import AgentConfig
from ragworks.eval import commands as eval_commands
from ragworks.eval import tune_commands
from ragworks.eval.suite import EvalSuite, example_suite_path
from ragworks.eval.tune import TuneResult, tune
from ragworks.eval.tune_space import parse_space

pytestmark = pytest.mark.slow
SCIFACT = Path(__file__).resolve().parents[3] / "shared" / "data" / "scifact"
JUDGE = "offline:lexical"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One SQLite store for the module (creating one costs seconds); each test has its own experiment."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('tune-store')}/mlflow.db"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(before)


@pytest.fixture
def experiment(store: str, request: pytest.FixtureRequest) -> str:
    """A fresh experiment name for this test's study."""
    mlflow.set_experiment(experiment_id="0")  # forget an experiment set against another store
    return f"tune-{request.node.name}"


@pytest.fixture(scope="module")
def shipped_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    root = tmp_path_factory.mktemp("tune-docs")
    ingest([shipped_docs()], root / "index", embeddings="hashing")
    return root / "index"


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    tune_commands.register(app)
    eval_commands.register(app)
    return app


def _weak_start(path: Path, index: Path | None = None) -> Path:
    """A plausible first config that tuning should improve on: dense search alone, few chunks."""
    retriever: dict[str, object] = {"type": "local", "k": 2, "mode": "dense"}
    if index is not None:
        retriever["index"] = str(index)
    data = {
        "retriever": retriever,
        "ingest": {"embeddings": "hashing", "chunk_size": 300, "chunk_overlap": 0},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _runs_by_role(parent_id: str) -> dict[str, list[mlflow.entities.Run]]:
    """The study's run, the runs nested under it, and the runs nested under those, by their role tag."""
    client = mlflow.MlflowClient()
    study = client.get_run(parent_id)
    experiments = [study.info.experiment_id]

    def children(run_id: str) -> list[mlflow.entities.Run]:
        return client.search_runs(experiments, f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)

    out: dict[str, list[mlflow.entities.Run]] = {"study": [study]}
    for run in children(parent_id):
        out.setdefault(run.data.tags.get("ragworks.tune.role", ""), []).append(run)
        for part in children(run.info.run_id):
            out.setdefault(part.data.tags.get("ragworks.tune.role", ""), []).append(part)
    return out


def _assert_nested(result: TuneResult) -> None:
    """Every trial, the starting and held-back checks are runs under the study; their parts under them."""
    by_role = _runs_by_role(result.parent_run_id)
    assert by_role["study"][0].data.tags["ragworks.tune.role"] == "study"
    assert set(by_role) <= {"study", "trial", "start", "holdout", "part"}
    trials = by_role["trial"]
    assert len(trials) == len(result.trials)
    scored = {r.info.run_id: r for r in [*trials, *by_role["start"], *by_role.get("holdout", [])]}
    for run in scored.values():
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
    for part in by_role["part"]:
        assert part.data.tags["mlflow.parentRunId"] in scored
    status = {"complete": "FINISHED", "pruned": "KILLED", "failed": "FAILED"}
    by_name = {r.info.run_name: r for r in trials}
    for record in result.trials:
        assert by_name[f"trial {record.number}"].info.status == status[record.state]
    metric = result.metric
    for record in result.trials:
        if record.score is None:
            continue
        run = scored[record.score.run_id]
        assert run.data.metrics[f"{metric}/mean"] == pytest.approx(record.score.mean)
        low, high = run.data.metrics[f"{metric}/ci_low"], run.data.metrics[f"{metric}/ci_high"]
        assert low <= record.score.mean <= high
        assert run.data.metrics["latency_ms/median"] > 0
        assert set(record.params) <= set(run.data.params)


def test_tune_cli_on_the_shipped_suite_rebuilds_chunkings_and_writes_a_best_config_that_runs(
    experiment: str, tmp_path: Path
) -> None:
    from ragworks.quickstart import shipped_docs

    start = _weak_start(tmp_path / "start.yaml")
    best = tmp_path / "out" / "best.yaml"
    runner = CliRunner()
    args = ["tune", str(example_suite_path()), "--config", str(start), "--trials", "4", "--seed", "0"]
    args += ["--judge", JUDGE, "--docs", str(shipped_docs()), "-o", str(best), "--experiment", experiment]
    out = runner.invoke(_cli(), args)
    assert out.exit_code == 0, out.output
    assert "| trial | state | ndcg_at_k |" in out.output and "Held-back part (6 rows)" in out.output

    study = mlflow.search_runs(
        experiment_names=[experiment], filter_string="tags.`ragworks.tune.role` = 'study'"
    )
    assert len(study) == 1
    row = study.iloc[0]
    parent_id = row.run_id
    client = mlflow.MlflowClient()
    data = json.loads(mlflow.artifacts.load_text(f"runs:/{parent_id}/tune_study.json"))
    assert len(data["trials"]) == 4
    start_score, best_score = data["start"]["mean"], data["best"]["mean"]
    assert best_score >= start_score
    assert row["metrics.best/ndcg_at_k"] == pytest.approx(best_score)
    assert row["metrics.held_back/best/ndcg_at_k"] == pytest.approx(data["held_back"]["best"]["mean"])
    assert row["metrics.index_builds"] >= 2  # the start's chunking and at least one trial's
    artifacts = {f.path for f in client.list_artifacts(parent_id)}
    assert {"tune_trials.md", "tune_tradeoff.png", "best_config.yaml", "tune_study.json"} <= artifacts
    png = client.download_artifacts(parent_id, "tune_tradeoff.png", str(tmp_path))
    assert Path(png).read_bytes()[:4] == b"\x89PNG"

    text = best.read_text(encoding="utf-8")
    assert "# held-back part (6 rows): start" in text
    loaded = AgentConfig.from_yaml(best)  # the comments carry the scores; the config refuses unknown keys
    assert Path(loaded.retriever.index) == (best.parent / "best-index").resolve()
    assert loaded.retriever.k == data["best_params"].get("retriever.k", 2)
    ran = runner.invoke(_cli(), ["eval", str(example_suite_path()), "--config", str(best), "--judge", JUDGE])
    assert ran.exit_code == 0, ran.output


def test_the_same_seed_gives_the_same_best_values(
    experiment: str, tmp_path: Path, shipped_index: Path
) -> None:
    start = _weak_start(tmp_path / "start.yaml", shipped_index)

    def study() -> TuneResult:
        return tune(
            start,
            example_suite_path(),
            trials=3,
            seed=7,
            holdout=0.3,
            parts=1,
            judge=JUDGE,
            experiment=experiment,
        )

    first, second = study(), study()
    assert [t.params for t in first.trials] == [t.params for t in second.trials]
    assert first.best_params == second.best_params
    assert first.best.mean == pytest.approx(second.best.mean)
    assert first.best.mean >= first.start.mean
    assert first.best_holdout is not None
    _assert_nested(first)


SCIFACT_SPACE = {
    "retriever.k": {"type": "int", "low": 1, "high": 10},
    "retriever.mode": {"type": "categorical", "choices": ["hybrid", "bm25", "dense"]},
    "retriever.options.fusion_weight": {
        "type": "float",
        "low": 0.0,
        "high": 1.0,
        "step": 0.05,
        "when": {"retriever.mode": "hybrid"},
    },
}
"""The default space of a local index, written out so the test does not move with optional fields."""


def _scifact_suite(root: Path, *, queries: int = 30, distractors: int = 170) -> tuple[EvalSuite, Path]:
    """A suite of SciFact test claims over a small corpus: their relevant abstracts plus distractors."""
    qrels: dict[str, list[str]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc_id, _ = line.split("\t")
        qrels.setdefault(qid, []).append(doc_id)
    chosen = sorted(qrels, key=int)[:queries]
    claims = {}
    for line in (SCIFACT / "queries.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        claims[row["_id"]] = row["text"]
    relevant = {d for q in chosen for d in qrels[q]}
    docs = root / "docs"
    docs.mkdir()
    extra = 0
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            keep = row["_id"] in relevant or extra < distractors
            if not keep:
                continue
            extra += row["_id"] not in relevant
            (docs / f"{row['_id']}.txt").write_text(f"{row['title']}\n\n{row['text']}", encoding="utf-8")
    rows = [
        {
            "inputs": {"question": claims[q]},
            "expectations": {"expected_doc_ids": [f"{d}.txt" for d in qrels[q]]},
        }
        for q in chosen
    ]
    return EvalSuite.model_validate({"name": "scifact-30", "rows": rows}), docs


@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").is_file(), reason="needs ../shared/data/scifact")
def test_tune_on_a_scifact_suite_reports_the_held_back_scores(experiment: str, tmp_path: Path) -> None:
    from ragworks.retrieval import ingest

    suite, docs = _scifact_suite(tmp_path)
    ingest([docs], tmp_path / "index", embeddings="hashing", chunk_size=2000, chunk_overlap=0)
    start = _weak_start(tmp_path / "start.yaml", tmp_path / "index")
    space = parse_space(SCIFACT_SPACE, source="test")
    result = tune(
        start,
        suite,
        trials=5,
        seed=0,
        space=space,
        judge=JUDGE,
        output=tmp_path / "best.yaml",
        experiment=experiment,
    )
    assert result.rows_tuning == 21 and result.rows_held == 9
    assert result.best.mean >= result.start.mean
    assert result.start_holdout is not None and result.best_holdout is not None
    _assert_nested(result)
    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned and all(
        t.partial is not None for t in pruned
    )  # this seed prunes; each after its first part
    parts = _runs_by_role(result.parent_run_id)["part"]
    for trial in pruned:
        assert sum(p.info.run_name == f"trial {trial.number} part 1" for p in parts) == 1
        assert not any(p.info.run_name == f"trial {trial.number} part 2" for p in parts)
    summary = result.summary()
    assert f"best {result.best_holdout.mean:.4f}" in summary
    print(
        f"scifact-30 ndcg@5: tuning start {result.start.mean:.4f} best {result.best.mean:.4f}; "
        f"held-back start {result.start_holdout.mean:.4f} best {result.best_holdout.mean:.4f}; "
        f"best {result.best_params}"
    )
    assert AgentConfig.from_yaml(tmp_path / "best.yaml").retriever.index == str(tmp_path / "index")


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ("retriever.kk: {type: int, low: 1, high: 5}\n", "'kk' is no field of retriever"),
        ("retriever.k: {type: int, low: 1, high: 500}\n", "the value 500 is refused"),
        ("retriever.options.weight: {type: float, low: 0, high: 1}\n", "has no option 'weight'"),
        ("retriever.mode: {type: categorical, choices: [hybrid, fuzzy]}\n", "the value 'fuzzy' is refused"),
        ("retriever.k: {type: integer, low: 1, high: 5}\n", "type must be int, float or categorical"),
        ("retriever.k: [1, 5\n", "is not valid YAML"),
    ],
)
def test_a_bad_space_file_is_one_line_and_exit_1_before_any_trial(
    experiment: str, tmp_path: Path, shipped_index: Path, space: str, expected: str
) -> None:
    start = _weak_start(tmp_path / "start.yaml", shipped_index)
    (tmp_path / "space.yaml").write_text(space, encoding="utf-8")
    args = ["tune", str(example_suite_path()), "-c", str(start), "--space", str(tmp_path / "space.yaml")]
    out = CliRunner().invoke(_cli(), [*args, "--experiment", experiment])
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], out.output
    assert mlflow.get_experiment_by_name(experiment) is None  # refused before any run


def test_an_unknown_metric_is_one_line_and_exit_1(
    experiment: str, tmp_path: Path, shipped_index: Path
) -> None:
    start = _weak_start(tmp_path / "start.yaml", shipped_index)
    out = CliRunner().invoke(
        _cli(), ["tune", str(example_suite_path()), "-c", str(start), "--metric", "ndcg"]
    )
    assert out.exit_code == 1
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and "Unknown metric 'ndcg'" in lines[0] and "ndcg_at_k" in lines[0]


def test_a_trial_that_fails_is_recorded_and_the_study_goes_on(experiment: str, tmp_path: Path) -> None:
    from ragworks.errors import EvalError
    from ragworks.quickstart import shipped_docs
    from ragworks.retrieval import ingest

    ingest([shipped_docs()], tmp_path / "index", embeddings="none")  # BM25 only: dense search fails
    start = tmp_path / "start.yaml"
    start.write_text(
        f"retriever: {{type: local, index: {tmp_path / 'index'}, mode: bm25}}\n", encoding="utf-8"
    )
    space = parse_space({"retriever.mode": {"type": "categorical", "choices": ["dense"]}}, source="test")
    # Every trial fails: the study goes on to the second, then fails as a whole rather than calling the
    # starting config the best of a search that never ran.
    with pytest.raises(EvalError, match=r"No trial completed \(2 of 2 failed.*no embeddings"):
        tune(
            start,
            example_suite_path(),
            trials=2,
            space=space,
            holdout=0,
            parts=1,
            judge=JUDGE,
            experiment=experiment,
        )
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    (study,) = client.search_runs([exp.experiment_id], "tags.`ragworks.tune.role` = 'study'")
    assert study.info.status == "FAILED"
    trial_runs = _runs_by_role(study.info.run_id)["trial"]
    assert sorted(r.info.status for r in trial_runs) == ["FAILED", "FAILED"]


