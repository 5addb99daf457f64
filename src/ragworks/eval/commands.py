"""The `ragworks eval` command; `register(app)` adds it to the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragworks.errors import ConfigError, EvalError


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """`NAME=VALUE` strings as a dict of floats."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ConfigError(f"--fail-under {item!r}: write NAME=VALUE, e.g. --fail-under faithfulness=0.8")
    return out


def eval_command(
    suite: Annotated[str, typer.Argument(help="Suite file (.yaml / .jsonl) or mlflow-dataset:<name>.")],
    config: Annotated[
        Path | None, typer.Option("--config", "-c", envvar="RAGWORKS_CONFIG", help="Agent config YAML.")
    ] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="FIELD=VALUE over --config (repeatable): system_prompt=prompts:/x/2."),
    ] = None,
    model_uri: Annotated[
        str | None, typer.Option("--model-uri", help="A logged model instead: models:/... or runs:/...")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", help="A Databricks serving endpoint instead (its OpenAI route)."),
    ] = None,
    judge: Annotated[
        str,
        typer.Option("--judge", envvar="RAGWORKS_JUDGE", help="offline | openai:<model> | databricks:<ep>."),
    ] = "offline",
    scorers: Annotated[
        list[str] | None, typer.Option("--scorer", "-s", help="A scorer name (repeatable); default: all.")
    ] = None,
    fail_under: Annotated[
        list[str] | None, typer.Option("--fail-under", help="NAME=VALUE: exit 1 when a mean is below.")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline", help="A run id of this suite; exit 1 on a significant paired regression."
        ),
    ] = None,
    allow_errors: Annotated[
        bool,
        typer.Option(
            "--allow-errors", help="Report metrics with rows in error (or none scored) without exit 1."
        ),
    ] = False,
    k: Annotated[int, typer.Option("-k", min=1, help="Cut-off of the retrieval metrics.")] = 5,
    experiment: Annotated[str | None, typer.Option("--experiment", help="MLflow experiment name.")] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Rows and judge calls at once.")
    ] = 8,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Judge each row N times; report flip rates.")
    ] = 1,
    judge_thresholds: Annotated[
        Path | None,
        typer.Option(
            "--judge-thresholds",
            envvar="RAGWORKS_JUDGE_THRESHOLDS",
            help="A file `eval calibrate --thresholds-out` wrote: judgements pass / fail at its thresholds.",
        ),
    ] = None,
    ui_url: Annotated[
        str | None,
        typer.Option(
            "--ui-url",
            envvar="RAGWORKS_MLFLOW_UI",
            help="The MLflow UI's address, for the report's trace links.",
        ),
    ] = None,
    judges: Annotated[
        Path | None,
        typer.Option(
            "--judges",
            help="A YAML file of custom judges (name, instructions, scale, inputs); needs an LLM judge.",
        ),
    ] = None,
    spark: Annotated[
        bool, typer.Option("--spark", help="Predict and run offline judges on Spark executors.")
    ] = False,
    master: Annotated[
        str | None, typer.Option("--master", help="Spark master with --spark, e.g. local[4].")
    ] = None,
) -> None:
    """Evaluate an agent on a suite, log the run to MLflow, and exit 1 when a threshold fails.

    A metric with rows in error (a judge that could not run) also exits 1, unless --allow-errors.
    --fail-under names and the judge (key, endpoint) are checked before any row runs.

    Example: ragworks eval suite.yaml --config agent.yaml --judge offline --fail-under faithfulness=0.8
    """
    from ragworks.config_overrides import overridden_config
    from ragworks.eval._targets import Target
    from ragworks.eval.runner import run_suite

    if config is not None and model_uri is not None:
        raise ConfigError("Pass --config or --model-uri, not both.")
    target: Target | None = model_uri or config
    if endpoint is not None:
        from ragworks.scale.endpoint_client import endpoint_target

        if overrides:  # a deployed agent's config is the endpoint's own: --set would evaluate another agent
            raise ConfigError("--set changes a --config; a deployed --endpoint cannot be overridden.")
        target = endpoint_target(endpoint, other=target)
    if target is None:
        raise ConfigError(
            "Say what to evaluate: --config agent.yaml or --model-uri models:/<name>/<version>."
        )
    chosen: Target = overridden_config(config, overrides) if overrides else target
    result = run_suite(
        chosen,
        suite,
        scorers=scorers or None,
        judge=judge,
        k=k,
        fail_under=parse_thresholds(fail_under),
        allow_errors=allow_errors,
        baseline_run_id=baseline,
        repeats=repeats,
        experiment=experiment,
        concurrency=concurrency,
        judge_thresholds=judge_thresholds,
        ui_url=ui_url,
        custom_judges=judges,
        spark=spark,
        spark_master=master,
    )
    typer.echo(result.summary())
    typer.echo(f"MLflow run {result.run_id} (report artifact: {result.report})")
    if not result.passed:
        problems = [*result.failures, *result.errors, *(f"{r.metric} regressed" for r in result.regressions)]
        if result.errors:
            problems.append("pass --allow-errors to report metrics in error without failing")
        raise EvalError(f"Suite {result.suite!r} failed: {'; '.join(problems)}.")


def register(app: typer.Typer) -> None:
    """Add the `eval` group to the ragworks CLI: `eval SUITE ...` (alias `eval run`) and its subcommands."""
    from ragworks.cli_errors import handle_errors
    from ragworks.eval._cli_group import make_eval_app
    from ragworks.eval.calibrate_commands import calibrate_command
    from ragworks.eval.compare_commands import compare_command
    from ragworks.eval.feedback_commands import export_feedback_command
    from ragworks.eval.generate_commands import generate_command

    eval_app = make_eval_app()
    # One line per subcommand; a first argument naming none of them goes to `run`.
    eval_app.command(name="run")(handle_errors(eval_command))
    eval_app.command(name="compare")(handle_errors(compare_command))
    eval_app.command(name="calibrate")(handle_errors(calibrate_command))
    eval_app.command(name="export-feedback")(handle_errors(export_feedback_command))
    eval_app.command(name="generate")(handle_errors(generate_command))
    app.add_typer(eval_app, name="eval")
