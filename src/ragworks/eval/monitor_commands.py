"""The `ragworks monitor` command; `register(app)` adds it to the CLI."""

from __future__ import annotations

from typing import Annotated

import typer

from ragworks.errors import ConfigError, EvalError


def monitor_command(
    experiment: Annotated[
        str, typer.Option("--experiment", help="The experiment the served agent traces to.")
    ],
    sample: Annotated[str, typer.Option("--sample", help="Share of traces to score, in (0, 1].")] = "0.1",
    scorers: Annotated[
        list[str] | None,
        typer.Option("--scorer", "-s", help="A scorer name (repeatable); default: the judge scorers."),
    ] = None,
    judge: Annotated[
        str,
        typer.Option("--judge", envvar="RAGWORKS_JUDGE", help="offline | openai:<model> | databricks:<ep>."),
    ] = "offline",
    every: Annotated[
        str | None, typer.Option("--every", help="Score a window every interval, e.g. 60s, 5m (default 60s).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Score one window and exit (for cron / CI).")] = False,
    windows: Annotated[
        int | None, typer.Option("--windows", min=1, help="With --every: stop after this many windows.")
    ] = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option("--fail-under", help="NAME=VALUE: exit 1 when a window's mean is below."),
    ] = None,
    allow_errors: Annotated[
        bool, typer.Option("--allow-errors", help="Report scorers in error without exit 1.")
    ] = False,
    lookback: Annotated[
        str, typer.Option("--lookback", help="Re-read traces this much older than the watermark (late ones).")
    ] = "10m",
    max_traces: Annotated[
        int | None, typer.Option("--max-traces", min=1, help="Score at most this many traces per window.")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Cut-off of the retrieval metrics.")] = 5,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Traces scored at once.")] = 8,
) -> None:
    """Score sampled production traces with the eval scorers, window by window, and log to MLflow.

    Each result is an assessment on its trace; each window's mean and 95% interval per scorer go to
    the experiment's monitor run. A trace is scored once, across restarts. Exits 1 when a window
    fails a --fail-under threshold or a scorer errs (a judge that could not run).

    Example: ragworks monitor --experiment prod-agent --sample 0.1 --once --fail-under faithfulness=0.7
    """
    from ragworks.eval.commands import parse_thresholds
    from ragworks.eval.monitor import Monitor, check_scorer_names, parse_interval, parse_sample, watch

    if once and every is not None:
        raise ConfigError("Pass --every or --once, not both.")
    interval = None if once else parse_interval(every or "60s")
    lookback_s = parse_interval(lookback, option="--lookback", zero=True)
    rate = parse_sample(sample)
    check_scorer_names(scorers or [])
    monitor = Monitor(
        experiment,
        sample=rate,
        scorers=scorers or None,
        judge=judge,
        k=k,
        fail_under=parse_thresholds(fail_under),
        allow_errors=allow_errors,
        concurrency=concurrency,
        lookback_s=lookback_s,
        max_traces=max_traces,
    )
    typer.echo(f"Monitoring experiment {experiment!r} (sample {rate}); MLflow run {monitor.run.run_id}")
    result = watch(monitor, every=interval, windows=windows, on_window=lambda r: typer.echo(r.summary()))
    if not result.passed:
        problems = [*result.failures, *result.errors]
        if result.errors:
            problems.append("pass --allow-errors to report scorers in error without failing")
        raise EvalError(f"Monitor window {result.window} failed: {'; '.join(problems)}.")


def register(app: typer.Typer) -> None:
    """Add the `monitor` command to the ragworks CLI."""
    from ragworks.cli_errors import handle_errors

    app.command(name="monitor")(handle_errors(monitor_command))
