"""`ragworks eval calibrate LABELS --judge NAME`: how far a judge agrees with people's labels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def calibrate_command(
    labels: Annotated[
        Path,
        typer.Argument(help="People's labels: .jsonl rows with a 'labels' object, or .csv with label_*."),
    ],
    judge: Annotated[
        str,
        typer.Option("--judge", envvar="RAGWORKS_JUDGE", help="offline | openai:<model> | databricks:<ep>."),
    ] = "offline",
    scorers: Annotated[
        list[str] | None,
        typer.Option(
            "--scorer", "-s", help="A judged metric to calibrate (repeatable); default: all labelled."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {METRIC: {auroc, kappa, ...}} only.")
    ] = False,
    thresholds_out: Annotated[
        Path | None,
        typer.Option(
            "--thresholds-out", help="Write the chosen thresholds here (read by --judge-thresholds)."
        ),
    ] = None,
    thresholds_in: Annotated[
        Path | None,
        typer.Option("--thresholds", help="Measure at these thresholds (a file calibrate wrote) instead."),
    ] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="MLflow experiment name.")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Rows judged at once.")] = 8,
) -> None:
    """Measure a judge's agreement with people (AUROC, kappa, accuracy, bootstrap intervals) in an MLflow run.

    Example: ragworks eval calibrate labels.jsonl --judge offline:lexical --thresholds-out thresholds.json
    """
    from ragworks.eval._thresholds import load_thresholds, write_thresholds
    from ragworks.eval.calibrate import calibrate

    given = load_thresholds(thresholds_in) if thresholds_in else None
    report = calibrate(
        labels, judge=judge, scorers=scorers, thresholds=given, experiment=experiment, concurrency=concurrency
    )
    if thresholds_out is not None:
        write_thresholds(
            thresholds_out,
            report.thresholds,
            judge=report.judge,
            labels=str(labels),
            agreement=report.to_dict(),
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    typer.echo(report.summary())
    typer.echo(f"MLflow run {report.run_id} (artifact: calibration.json)")
    if thresholds_out is not None:
        typer.echo(
            f"Thresholds written to {thresholds_out} (use: ragworks eval SUITE --judge-thresholds FILE)"
        )
