"""What `ragworks tune` shows and keeps: the trade-off table and plot, the study run, the best YAML.

The table has one line per scored config (the starting one and each trial): its state, the metric
with its 95% interval, the answers' median and p95 latency, whether it is on the quality / latency
Pareto front, and its values. The study run gets the table (`tune_trials.md`), the plot
(`tune_tradeoff.png`), the study (`tune_study.json`), the best config (`best_config.yaml`), the
best values as `best.<path>` params, and the starting and best scores on both parts as metrics.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ragworks.errors import ConfigError
from ragworks.eval._tune_eval import Score

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from ragworks.eval._tune_study import TuneResult

_VALUE_CHARS = 60


@dataclass(frozen=True, slots=True, kw_only=True)
class _Line:
    label: str
    state: str
    score: Score | None
    partial: float | None
    params: Mapping[str, Any]
    error: str = ""


def _lines(result: TuneResult) -> list[_Line]:
    out = [
        _Line(label="start", state="complete", score=result.start, partial=None, params=result.start_params)
    ]
    for t in result.trials:
        line = _Line(label=str(t.number), state=t.state, score=t.score, partial=t.partial, params=t.params)
        out.append(line if not t.error else _Line(**{**_fields(line), "error": t.error}))
    return out


def _fields(line: _Line) -> dict[str, Any]:
    return {name: getattr(line, name) for name in ("label", "state", "score", "partial", "params")}


def pareto(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For each (quality, latency) point, whether no other is at least as good on both and better on one."""
    out = []
    for i, (q, lat) in enumerate(points):
        dominated = any(
            (q2 >= q and l2 <= lat) and (q2 > q or l2 < lat) for j, (q2, l2) in enumerate(points) if j != i
        )
        out.append(not dominated and not math.isnan(q))
    return out


def trade_off_table(result: TuneResult) -> str:
    """The trade-off of every scored config as a Markdown table: the starting config, then each trial."""
    lines = _lines(result)
    scored = [ln for ln in lines if ln.score is not None]
    front = dict(
        zip(
            (id(ln) for ln in scored),
            pareto([(ln.score.mean, ln.score.latency_ms) for ln in scored if ln.score is not None]),
            strict=True,
        )
    )
    header = (
        f"| trial | state | {result.metric} | 95% CI | latency ms median | p95 | pareto | values |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [header]
    for ln in lines:
        s = ln.score
        if s is not None:
            quality, ci = f"{s.mean:.4f}", f"[{s.ci_low:.3f}, {s.ci_high:.3f}]"
            lat, p95 = f"{s.latency_ms:.1f}", f"{s.latency_p95_ms:.1f}"
        else:
            quality = f"{ln.partial:.4f} (partial)" if ln.partial is not None else "-"
            ci = lat = p95 = "-"
        mark = "yes" if front.get(id(ln)) else ""
        values = ", ".join(f"{k}={_short(v)}" for k, v in ln.params.items())
        if ln.error:
            values += f" (error: {_short(ln.error)})"
        rows.append(f"| {ln.label} | {ln.state} | {quality} | {ci} | {lat} | {p95} | {mark} | {values} |")
    return "\n".join(rows)


def _short(value: Any) -> str:
    # Any: a config value
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def summary_text(result: TuneResult) -> str:
    """The table, the starting and best scores on both parts, and the best values."""
    states = [t.state for t in result.trials]
    out = [
        f"Study on suite {result.suite!r}, metric {result.metric} (seed {result.seed}): "
        f"{len(states)} trials, {states.count('complete')} complete, {states.count('pruned')} pruned, "
        f"{states.count('failed')} failed.",
        "",
        trade_off_table(result),
        "",
        f"Tuning part ({result.rows_tuning} rows): start {result.start.mean:.4f}, "
        f"best {result.best.mean:.4f}.",
    ]
    if result.start_holdout is not None and result.best_holdout is not None:
        out.append(
            f"Held-back part ({result.rows_held} rows): start {result.start_holdout.mean:.4f}, "
            f"best {result.best_holdout.mean:.4f}."
        )
    else:
        out.append("Held-back part: none (--holdout 0); the best score may fit the suite's rows only.")
    if result.best_is_start:
        out.append(
            "No trial beat the starting config on the tuning part: the best config is the starting one."
        )
    else:
        out.append("Best values: " + ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items()))
    out.append(f"MLflow study run {result.parent_run_id}")
    if result.output is not None:
        out.append(f"Best config written to {result.output}")
    return "\n".join(out)


def trade_off_figure(result: TuneResult) -> Figure:
    """Quality against latency for the starting config and every complete trial, front highlighted."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    trials = [t for t in result.trials if t.score is not None]
    points = [(t.score.latency_ms, t.score.mean) for t in trials if t.score is not None]
    if points:
        ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", label="trials")
        for t, (x, y) in zip(trials, points, strict=True):
            ax.annotate(str(t.number), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    everything = [(result.start.latency_ms, result.start.mean), *points]
    front = sorted(p for p, on in zip(everything, pareto([(y, x) for x, y in everything]), strict=True) if on)
    if len(front) > 1:
        ax.step(
            [p[0] for p in front],
            [p[1] for p in front],
            where="post",
            color="tab:green",
            label="Pareto front",
        )
    ax.scatter(
        [result.start.latency_ms], [result.start.mean], marker="s", color="tab:gray", s=60, label="start"
    )
    ax.scatter([result.best.latency_ms], [result.best.mean], marker="*", color="tab:red", s=140, label="best")
    ax.set_xlabel("answer latency, median (ms)")
    ax.set_ylabel(f"{result.metric} (tuning part)")
    ax.set_title(f"ragworks tune: {result.suite}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def log_study(
    client: MlflowClient, result: TuneResult, *, judge: str, holdout: float, k: int, parts: int
) -> None:
    """Log the study's params, metrics, table, plot, summary and best config to its run."""
    from mlflow.entities import Metric, Param

    run_id = result.parent_run_id
    states = [t.state for t in result.trials]
    params = {
        "metric": result.metric,
        "trials": len(result.trials),
        "seed": result.seed,
        "holdout": holdout,
        "judge": judge,
        "k": k,
        "parts": parts,
        "sampler": "TPESampler",
        "pruner": "MedianPruner",
        "rows_tuning": result.rows_tuning,
        "rows_held": result.rows_held,
        "space": json.dumps({s.path: s.describe() for s in result.space}, default=str)[:6000],
        **{f"best.{k_}": _short(v) for k_, v in result.best_params.items()},
    }
    metrics = {
        f"start/{result.metric}": result.start.mean,
        f"best/{result.metric}": result.best.mean,
        "trials_complete": states.count("complete"),
        "trials_pruned": states.count("pruned"),
        "trials_failed": states.count("failed"),
        "index_builds": result.index_builds,
    }
    if result.start_holdout is not None and result.best_holdout is not None:
        metrics[f"held_back/start/{result.metric}"] = result.start_holdout.mean
        metrics[f"held_back/best/{result.metric}"] = result.best_holdout.mean
    from ragworks.eval._tune_eval import _now_ms

    stamp = _now_ms()
    client.log_batch(
        run_id,
        metrics=[Metric(key=k_, value=float(v), timestamp=stamp, step=0) for k_, v in metrics.items()],
        params=[Param(key=k_, value=str(v)) for k_, v in params.items()],
    )
    client.set_tag(run_id, "ragworks.tune.best_is_start", str(result.best_is_start).lower())
    client.log_text(run_id, trade_off_table(result), "tune_trials.md")
    client.log_text(run_id, summary_text(result), "tune_summary.txt")
    client.log_text(run_id, best_config_text(result), "best_config.yaml")
    client.log_dict(run_id, study_dict(result), "tune_study.json")
    client.log_figure(run_id, trade_off_figure(result), "tune_tradeoff.png")


def study_dict(result: TuneResult) -> dict[str, Any]:
    """The study as JSON: every trial's values, state and scores (Any: JSON values)."""

    def score(s: Score | None) -> dict[str, Any] | None:
        if s is None:
            return None
        return {
            "run_id": s.run_id,
            "mean": s.mean,
            "ci_low": s.ci_low,
            "ci_high": s.ci_high,
            "rows": s.rows,
            "latency_ms": s.latency_ms,
            "latency_p95_ms": s.latency_p95_ms,
            "metrics": s.means,
        }

    return {
        "suite": result.suite,
        "metric": result.metric,
        "seed": result.seed,
        "space": {s.path: s.describe() for s in result.space},
        "start": score(result.start),
        "best": score(result.best),
        "best_params": result.best_params,
        "best_is_start": result.best_is_start,
        "held_back": {"start": score(result.start_holdout), "best": score(result.best_holdout)},
        "trials": [
            {
                "number": t.number,
                "state": t.state,
                "params": t.params,
                "score": score(t.score),
                "partial": t.partial,
                "error": t.error,
            }
            for t in result.trials
        ],
    }


def _header(result: TuneResult) -> list[str]:
    states = [t.state for t in result.trials]
    lines = [
        f"Tuned by `ragworks tune` on suite {result.suite!r} for {result.metric} (seed {result.seed}; "
        f"{len(states)} trials: {states.count('complete')} complete, {states.count('pruned')} pruned, "
        f"{states.count('failed')} failed).",
        f"tuning part ({result.rows_tuning} rows): start {_fmt(result.start)}, best {_fmt(result.best)}",
    ]
    if result.start_holdout is not None and result.best_holdout is not None:
        lines.append(
            f"held-back part ({result.rows_held} rows): start {_fmt(result.start_holdout)}, "
            f"best {_fmt(result.best_holdout)}"
        )
    else:
        lines.append("held-back part: none (--holdout 0)")
    values = ", ".join(f"{k}={_short(v)}" for k, v in result.best_params.items())
    lines.append(
        ("best = the starting config; values: " if result.best_is_start else "best values: ") + values
    )
    lines.append(f"MLflow study run: {result.parent_run_id}")
    return lines


def _fmt(score: Score) -> str:
    return f"{score.mean:.4f} [{score.ci_low:.3f}, {score.ci_high:.3f}]"


def best_config_text(result: TuneResult, *, index: str | None = None) -> str:
    """The best config as YAML, its scores in comments (the config itself refuses unknown keys)."""
    data = result.best_config.model_dump(mode="json")
    if index is not None:
        data["retriever"]["index"] = index
    comments = "".join(f"# {line}\n" for line in _header(result))
    return comments + yaml.safe_dump(data, sort_keys=False)


def check_best_config_path(path: Path) -> None:
    """Refuse, before any trial, an output whose `<name>-index/` beside it is a folder tune did not write."""
    from ragworks.retrieval._store import MANIFEST

    target = path.parent / f"{path.stem}-index"
    if target.exists() and not (target / MANIFEST).is_file():
        raise ConfigError(
            f"Cannot write the tuned index to {target}: it exists and is not a ragworks index. "
            "Move it, or write the best config elsewhere (-o)."
        )


def write_best_config(path: Path, result: TuneResult) -> Path:
    """Write the best config to `path`; a tuned index goes beside it (`<name>-index/`, named relatively).

    Returns:
        The path written. `result.best_config` then points at the copied index.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    index_name = None
    if result.index_builds:  # the index was built for the best chunking: keep it with the config
        index_name = f"{path.stem}-index"
        target = path.parent / index_name
        if target.exists():
            check_best_config_path(path)  # replace an earlier tuned index, never a user's folder
            shutil.rmtree(target)
        shutil.copytree(result.best_config.retriever.index, target)
        moved = result.best_config.model_copy(deep=True)
        moved.retriever.index = str(target.resolve())
        result.best_config = moved
    path.write_text(best_config_text(result, index=index_name), encoding="utf-8")
    return path
