"""One Optuna study of `ragworks tune`: the starting config, the trials, the held-back check.

The starting config is scored first on the tuning part; each trial then picks values (TPE, seeded),
is scored in parts with median pruning between them, and is recorded. The best complete trial
(ties: the earliest) replaces the starting config only when it scores higher; the starting and
best configs are then scored on the held-back part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragworks.config import AgentConfig
from ragworks.errors import EvalError, RagworksError
from ragworks.eval._tune_eval import ConfigScorer, Score
from ragworks.eval._tune_index import IndexCache
from ragworks.eval.suite import EvalSuite
from ragworks.eval.tune_space import ParamSpec, apply_params, current_values, suggest

if TYPE_CHECKING:
    import optuna

TrialState = Literal["complete", "pruned", "failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TrialRecord:
    """One trial: the values it tried and how it ended."""

    number: int
    state: TrialState
    params: dict[str, Any]
    """The searched config paths and their values (Any: config values)."""
    score: Score | None = None
    """None unless it completed."""
    partial: float | None = None
    """A pruned trial: the metric's mean over the parts scored before it was stopped."""
    error: str = ""


@dataclass(slots=True, kw_only=True)
class TuneResult:
    """What a study found: the trials, the starting and best configs' scores on both parts."""

    parent_run_id: str
    suite: str
    metric: str
    seed: int
    space: list[ParamSpec]
    trials: list[TrialRecord]
    start: Score
    best: Score
    """The best config's score on the tuning part (the starting config's when no trial beat it)."""
    start_params: dict[str, Any]
    """What the starting config sets for each searched path (Any: config values)."""
    best_params: dict[str, Any]
    best_config: AgentConfig
    best_is_start: bool
    rows_tuning: int
    rows_held: int
    start_holdout: Score | None = None
    best_holdout: Score | None = None
    output: Path | None = None
    """The best config's YAML file, when one was written."""
    index_builds: int = 0

    def summary(self) -> str:
        """The trade-off table and the verdict, as printed by `ragworks tune`."""
        from ragworks.eval._tune_report import summary_text

        return summary_text(self)


@dataclass(slots=True, kw_only=True)
class Study:
    """One Optuna study over the tuning part, then the held-back check."""

    scorer: ConfigScorer
    cache: IndexCache | None
    start_cfg: AgentConfig
    space: list[ParamSpec]
    tuning: EvalSuite
    parts: int
    on_trial: Callable[[TrialRecord], None] | None
    records: list[TrialRecord] = field(default_factory=list)

    def run(
        self, *, trials: int, timeout: float | None, seed: int, held: EvalSuite | None, suite_name: str
    ) -> TuneResult:
        import optuna

        start_params = current_values(self.start_cfg, self.space)
        start = self.scorer.score(
            self._ready(self.start_cfg), self.tuning, name="start", role="start", params=start_params
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(
            direction="maximize",
            sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, trials // 2))),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        )
        study.optimize(self._objective, n_trials=trials, timeout=timeout, catch=(RagworksError,))
        failed = [r for r in self.records if r.state == "failed"]
        if failed and not any(r.state == "complete" for r in self.records):
            # Reporting the starting config as "best" here would be a study that never ran passing as one.
            raise EvalError(
                f"No trial completed ({len(failed)} of {len(self.records)} failed, the rest were pruned); "
                f"the first failure: {failed[0].error or 'no cause recorded'}"
            )
        best_record = best_of(self.records)
        best_is_start = (
            best_record is None or best_record.score is None or best_record.score.mean <= start.mean
        )
        if best_is_start or best_record is None or best_record.score is None:
            best_params, best_cfg, best = start_params, self.start_cfg, start
        else:
            best_params = best_record.params
            best_cfg, best = apply_params(self.start_cfg, best_params), best_record.score
        result = TuneResult(
            parent_run_id=self.scorer.parent_id,
            suite=suite_name,
            metric=self.scorer.metric,
            seed=seed,
            space=self.space,
            trials=self.records,
            start=start,
            best=best,
            start_params=start_params,
            best_params=best_params,
            best_config=self._ready(best_cfg),
            best_is_start=best_is_start,
            rows_tuning=len(self.tuning.rows),
            rows_held=len(held.rows) if held is not None else 0,
            index_builds=self.cache.builds if self.cache is not None else 0,
        )
        if held is not None:
            result.start_holdout = self.scorer.score(
                self._ready(self.start_cfg),
                held,
                name="held-back: start",
                role="holdout",
                params=start_params,
            )
            result.best_holdout = (
                result.start_holdout
                if best_is_start
                else self.scorer.score(
                    result.best_config, held, name="held-back: best", role="holdout", params=best_params
                )
            )
        return result

    def _ready(self, cfg: AgentConfig) -> AgentConfig:
        return self.cache.config_for(cfg) if self.cache is not None else cfg

    def _objective(self, trial: optuna.Trial) -> float:
        import optuna

        params = suggest(trial, self.space)
        reported: list[float] = []
        try:
            cfg = self._ready(apply_params(self.start_cfg, params))

            def report(step: int, value: float) -> None:
                reported.append(value)
                trial.report(value, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after part {step + 1} at {value:.4f}")

            score = self.scorer.score(
                cfg,
                self.tuning,
                name=f"trial {trial.number}",
                role="trial",
                params=params,
                parts=self.parts,
                report=report,
            )
        except optuna.TrialPruned:
            partial = reported[-1] if reported else None
            self._record(TrialRecord(number=trial.number, state="pruned", params=params, partial=partial))
            raise
        except RagworksError as exc:
            self._record(TrialRecord(number=trial.number, state="failed", params=params, error=str(exc)))
            raise
        self._record(TrialRecord(number=trial.number, state="complete", params=params, score=score))
        return score.mean

    def _record(self, record: TrialRecord) -> None:
        self.records.append(record)
        if self.on_trial is not None:
            self.on_trial(record)


def best_of(records: Sequence[TrialRecord]) -> TrialRecord | None:
    """The complete trial with the highest mean (the earliest among equals)."""
    best: TrialRecord | None = None
    for record in records:
        if record.state != "complete" or record.score is None:
            continue
        if best is None or best.score is None or record.score.mean > best.score.mean:
            best = record
    return best
