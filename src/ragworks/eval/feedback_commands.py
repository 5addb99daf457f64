"""`ragworks eval export-feedback`: a suite from the traces people gave feedback on."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def export_feedback_command(
    experiment: Annotated[
        str, typer.Option("--experiment", "-e", help="The MLflow experiment the server traced into.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="The suite file to write (YAML).")],
    min_rating: Annotated[
        float | None,
        typer.Option("--min-rating", help="Numeric feedback at or above this counts as approval."),
    ] = None,
    max_traces: Annotated[
        int, typer.Option("--max-traces", min=1, help="Newest traces with feedback to read.")
    ] = 1000,
) -> None:
    """Write an eval suite of the questions people gave feedback on (POST /v1/feedback).

    Approved answers become expected responses; every row's tags keep the feedback and the answer given.

    Example: ragworks eval export-feedback --experiment production -o feedback.yaml
    """
    from ragworks.eval.feedback_export import export_feedback, write_suite

    exported = export_feedback(experiment, min_rating=min_rating, max_traces=max_traces)
    path = write_suite(exported, output, min_rating=min_rating)
    typer.echo(
        f"Wrote {exported.traces} rows to {path} ({exported.positive} positive, "
        f"{exported.negative} negative, {exported.rated} rated) from the experiment {experiment!r}."
    )
