"""The `ragworks tune` command; `register(app)` adds it to the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ragworks.eval.tune import TrialRecord


def tune_command(
    suite: Annotated[str, typer.Argument(help="Suite file (.yaml / .jsonl) or mlflow-dataset:<name>.")],
    config: Annotated[
        Path, typer.Option("--config", "-c", envvar="RAGWORKS_CONFIG", help="The starting agent config YAML.")
    ],
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="How many trials to run.")] = 20,
    metric: Annotated[
        str | None,
        typer.Option("--metric", "-m", help="The metric to maximise (default: ndcg_at_k, else correctness)."),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(
            "--space", help="A YAML file of config paths to search: {path: {type, low, high, ...}}."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0, help="Seconds after which no new trial starts.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the sampler and the held-back split.")] = 0,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share of the suite's rows held back from tuning (0: none).")
    ] = 0.3,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the best config here (YAML).")
    ] = None,
    docs: Annotated[
        list[Path] | None,
        typer.Option(
            "--docs", help="Documents to ingest: each trial's chunking then gets its own index (repeatable)."
        ),
    ] = None,
    judge: Annotated[
        str,
        typer.Option("--judge", envvar="RAGWORKS_JUDGE", help="offline | openai:<model> | databricks:<ep>."),
    ] = "offline",
    k: Annotated[int, typer.Option("-k", min=1, help="Cut-off of the retrieval metrics.")] = 5,
    parts: Annotated[
        int, typer.Option("--parts", min=1, help="Score each trial in this many parts; prune between them.")
    ] = 2,
    experiment: Annotated[
        str, typer.Option("--experiment", help="MLflow experiment of the study and its trials.")
    ] = "ragworks-tune",
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Rows scored at once.")] = 8,
) -> None:
    """Search an agent config's settings against a suite (Optuna), each trial a nested MLflow run.

    The suite's rows are split (by --seed) into a tuning part and a held-back part; trials are scored
    on the tuning part, and the starting and best configs on both. Prints the quality / latency
    trade-off of every trial; -o writes the best config, which `ragworks chat` and `eval` load.

    Example: ragworks tune suite.yaml --config agent.yaml --trials 30 --metric ndcg_at_k -o best.yaml
    """
    from ragworks.eval.tune import tune

    result = tune(
        config,
        suite,
        trials=trials,
        metric=metric,
        space=space,
        timeout=timeout,
        seed=seed,
        holdout=holdout,
        judge=judge,
        k=k,
        parts=parts,
        docs=docs or None,
        experiment=experiment,
        output=output,
        concurrency=concurrency,
        on_trial=_echo_trial,
    )
    typer.echo(result.summary())


def _echo_trial(record: TrialRecord) -> None:
    if record.score is not None:
        how = f"{record.score.mean:.4f} ({record.score.latency_ms:.0f} ms)"
    elif record.partial is not None:
        how = f"pruned at {record.partial:.4f}"
    else:
        how = f"failed: {record.error}"
    typer.echo(f"trial {record.number}: {how}", err=True)


def register(app: typer.Typer) -> None:
    """Add the `tune` command to the ragworks CLI."""
    from ragworks.cli_errors import handle_errors

    app.command(name="tune")(handle_errors(tune_command))
