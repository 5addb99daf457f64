"""`ragworks tune`: search an agent config's settings against an eval suite with Optuna.

The suite is split, deterministically from the seed, into a tuning part and a held-back part.
Every trial (TPE sampler, seeded; median pruning between the parts a trial is scored in) is a
config scored on the tuning part as an MLflow run nested under one study run. The best trial
(ties: the earliest) replaces the starting config only when it scores higher on the tuning part;
both are then scored on the held-back part, reported separately, so a setting that only fits the
tuning rows shows as such. The study run gets the summary, the best values, and the quality /
latency trade-off of every trial as a table and a plot (see `ragworks.eval._tune_report`).

Example:
    >>> result = tune("agent.yaml", "suite.yaml", trials=20, seed=0)   # doctest: +SKIP
    >>> result.best.mean, result.best_holdout.mean, result.best_params  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.eval._tune_eval import ROLE_TAG, ConfigScorer
from ragworks.eval._tune_index import IndexCache
from ragworks.eval._tune_study import Study, TrialRecord, TuneResult
from ragworks.eval.judges import Judge
from ragworks.eval.scorers import JUDGE_SCORERS, RETRIEVAL_SCORERS, SCORER_NAMES
from ragworks.eval.suite import EvalSuite
from ragworks.eval.tune_space import (
    ParamSpec,
    check_space,
    default_space,
    load_space,
)

logger = logging.getLogger(__name__)
DEFAULT_EXPERIMENT = "ragworks-tune"


def split_suite(suite: EvalSuite, holdout: float, seed: int) -> tuple[EvalSuite, EvalSuite | None]:
    """The tuning part and the held-back part (None when `holdout` is 0), chosen by `seed`.

    Raises:
        ConfigError: `holdout` is outside [0, 0.9], or either part would be empty.
    """
    if not 0.0 <= holdout <= 0.9:
        raise ConfigError(
            f"--holdout must be between 0 and 0.9 (a share of the suite's rows), got {holdout}."
        )
    rows = list(suite.rows)
    if holdout == 0.0:
        return suite, None
    held_n = max(1, round(len(rows) * holdout))
    if held_n >= len(rows):
        raise ConfigError(
            f"Suite {suite.name!r} has {len(rows)} row(s): too few to hold back {holdout:.0%} "
            "and still tune; "
            "add rows or pass --holdout 0."
        )
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:held_n])
    tuning = [r for i, r in enumerate(rows) if i not in held]
    kept = [r for i, r in enumerate(rows) if i in held]
    return (
        suite.model_copy(update={"name": f"{suite.name}-tuning", "rows": tuning}),
        suite.model_copy(update={"name": f"{suite.name}-held-back", "rows": kept}),
    )


def choose_metric(metric: str | None, suite: EvalSuite) -> str:
    """The metric to maximise: `metric` when valid for the suite, else a judge-free one it supports.

    Without `metric`: `ndcg_at_k` when rows name expected documents, else `correctness` (scored by
    the offline judge unless another is configured).

    Raises:
        ConfigError: an unknown metric, or one the suite's rows cannot score.
    """
    records = suite.to_records()
    has_docs = any(r.get("expectations", {}).get("expected_doc_ids") for r in records)
    has_answers = any(
        r.get("expectations", {}).get(k) for r in records for k in ("expected_facts", "expected_response")
    )
    if metric is None:
        if has_docs:
            return "ndcg_at_k"
        if has_answers:
            return "correctness"
        return "faithfulness"
    if metric not in SCORER_NAMES:
        raise ConfigError(f"Unknown metric {metric!r} for --metric. Available: {', '.join(SCORER_NAMES)}.")
    if metric in RETRIEVAL_SCORERS and not has_docs:
        raise ConfigError(f"--metric {metric} needs expected_doc_ids in the suite's rows; none has them.")
    if metric == "correctness" and not has_answers:
        raise ConfigError(
            "--metric correctness needs expected_facts or expected_response in the suite's rows."
        )
    return metric


def tune(
    config: AgentConfig | str | Path,
    suite: EvalSuite | str | Path,
    *,
    trials: int = 20,
    metric: str | None = None,
    space: Sequence[ParamSpec] | str | Path | None = None,
    timeout: float | None = None,
    seed: int = 0,
    holdout: float = 0.3,
    judge: str = "offline",
    k: int = 5,
    parts: int = 2,
    docs: Sequence[str | Path] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    output: str | Path | None = None,
    concurrency: int = 8,
    on_trial: Callable[[TrialRecord], None] | None = None,
) -> TuneResult:
    """Search `space` for the config that scores best on `metric`, with a held-back check.

    Args:
        config: the starting agent config (a path or an AgentConfig).
        suite: the eval suite (a path, `mlflow-dataset:<name>`, or an EvalSuite).
        trials: how many trials to run (fewer when `timeout` ends the study first).
        metric: the metric to maximise (a scorer name); default: see `choose_metric`.
        space: the parameters to search (a space file or specs); default: see `default_space`.
        timeout: seconds after which no new trial starts.
        seed: seeds the sampler and the split, so a study repeats exactly.
        holdout: the share of the suite's rows held back from tuning (0 for none).
        judge: the judge of judge-based metrics (`offline` needs no model).
        k: the cut-off of the retrieval metrics (fixed across trials, whatever `retriever.k` is).
        parts: how many parts a trial's rows are scored in; a trial can be pruned after each.
        docs: documents to ingest: then each trial's chunking builds (once) its own index.
        experiment: the MLflow experiment of the study run and its nested runs.
        output: write the best config here as YAML (with its index beside it when `docs` are given).
        concurrency: rows predicted and scored at once.
        on_trial: called after each trial (the CLI prints a line).

    Raises:
        ConfigError: a bad config, space, metric, holdout or docs path, before any trial runs.
        EvalError: the starting config cannot be scored.
    """
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}.")
    plan = _plan(config, suite, metric=metric, space=space, seed=seed, holdout=holdout, docs=docs)
    if output is not None and plan.docs:
        from ragworks.eval._tune_report import check_best_config_path

        check_best_config_path(Path(output))
    plan_judge = _checked_judge(judge, plan.metric, concurrency=concurrency)
    scorer = _study_scorer(plan, plan_judge, experiment=experiment, k=k, concurrency=concurrency)
    cache = IndexCache(plan.docs, Path(tempfile.mkdtemp(prefix="ragworks-tune-"))) if plan.docs else None
    study = Study(
        scorer=scorer,
        cache=cache,
        start_cfg=plan.start,
        space=plan.space,
        tuning=plan.tuning,
        parts=parts,
        on_trial=on_trial,
    )
    status = "FAILED"
    try:
        result = study.run(trials=trials, timeout=timeout, seed=seed, held=plan.held, suite_name=plan.suite)
        from ragworks.eval._tune_report import log_study, write_best_config

        if output is not None:
            result.output = write_best_config(Path(output), result)
        log_study(scorer.client, result, judge=plan_judge.name, holdout=holdout, k=k, parts=parts)
        status = "FINISHED"
        return result
    finally:
        scorer.client.set_terminated(scorer.parent_id, status=status)
        if cache is not None and (output is not None or status != "FINISHED"):
            shutil.rmtree(cache.workdir, ignore_errors=True)  # the best index was copied beside the output


@dataclass(frozen=True, slots=True, kw_only=True)
class _Plan:
    """A study that passed every check that needs no run."""

    start: AgentConfig
    suite: str
    metric: str
    tuning: EvalSuite
    held: EvalSuite | None
    space: list[ParamSpec]
    docs: list[Path]


def _plan(
    config: AgentConfig | str | Path,
    suite: EvalSuite | str | Path,
    *,
    metric: str | None,
    space: Sequence[ParamSpec] | str | Path | None,
    seed: int,
    holdout: float,
    docs: Sequence[str | Path] | None,
) -> _Plan:
    """Load the config and suite, choose the metric, split the rows, resolve and check the space."""
    start = AgentConfig.load(config)
    loaded = EvalSuite.load(suite)
    name = choose_metric(metric, loaded)
    tuning, held = split_suite(loaded, holdout, seed)
    doc_paths = [Path(p) for p in docs or []]
    check_sources(start, doc_paths)
    specs = _resolve_space(space, start, rebuilds_index=bool(doc_paths))
    check_space(specs, start)
    return _Plan(
        start=start, suite=loaded.name, metric=name, tuning=tuning, held=held, space=specs, docs=doc_paths
    )


def check_sources(cfg: AgentConfig, docs: Sequence[Path]) -> None:
    """Refuse documents that do not exist, and a local config with neither an index nor documents."""
    missing = [str(p) for p in docs if not p.exists()]
    if missing:
        raise ConfigError(f"--docs: {', '.join(missing)} does not exist.")
    if docs and cfg.retriever.type != "local":
        raise ConfigError("--docs builds local indexes: set retriever.type to 'local' in the config.")
    if not docs and cfg.retriever.type == "local":
        from ragworks.retrieval import _store

        if not _store.has_index(Path(cfg.retriever.index)):
            raise ConfigError(
                f"retriever.index {cfg.retriever.index} holds no index: build it with `ragworks ingest` "
                "or pass --docs to build one per chunking."
            )


def _checked_judge(judge: str, metric: str, *, concurrency: int) -> Judge:
    """The judge by name, its preflight (key, endpoint) run when the metric needs it."""
    from ragworks.eval.judges import get_judge
    from ragworks.eval.runner import check_judge

    judge_obj = get_judge(judge, concurrency=concurrency)
    if metric in JUDGE_SCORERS:
        check_judge(judge_obj)
    return judge_obj


def _study_scorer(plan: _Plan, judge: Judge, *, experiment: str, k: int, concurrency: int) -> ConfigScorer:
    """Open the study's run in `experiment` and the scorer that nests every scored config under it."""
    import mlflow

    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = mlflow.MlflowClient()
    parent = client.create_run(experiment_id, run_name=f"tune {plan.suite}", tags={ROLE_TAG: "study"})
    return ConfigScorer(
        client=client,
        experiment_id=experiment_id,
        parent_id=parent.info.run_id,
        metric=plan.metric,
        scorers=_scorers_for(plan.metric, plan.tuning),
        judge=judge,
        k=k,
        concurrency=concurrency,
    )


def _resolve_space(
    space: Sequence[ParamSpec] | str | Path | None, cfg: AgentConfig, *, rebuilds_index: bool
) -> list[ParamSpec]:
    if space is None:
        return default_space(cfg, rebuilds_index=rebuilds_index, has_embeddings=_has_embeddings(cfg))
    if isinstance(space, (str, Path)):
        return load_space(space)
    return list(space)


def _has_embeddings(cfg: AgentConfig) -> bool:
    """Whether the config's local index (or the index its ingest settings build) has vectors."""
    if cfg.retriever.type != "local":
        return True
    from ragworks.retrieval import _store

    folder = Path(cfg.retriever.index)
    if not _store.has_index(folder):
        return cfg.ingest.embeddings != "none"
    from ragworks.retrieval.local import LocalIndex

    return LocalIndex.load(folder, verify=False).embedder is not None


def _scorers_for(metric: str, suite: EvalSuite) -> list[str]:
    """The metric, plus the retrieval metrics when the rows name documents (they cost no judge)."""
    has_docs = any(r.get("expectations", {}).get("expected_doc_ids") for r in suite.to_records())
    extra = list(RETRIEVAL_SCORERS) if has_docs else []
    return list(dict.fromkeys([metric, *extra]))


__all__ = [
    "DEFAULT_EXPERIMENT",
    "TrialRecord",
    "TuneResult",
    "check_sources",
    "choose_metric",
    "split_suite",
    "tune",
]
