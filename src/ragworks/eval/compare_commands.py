"""`ragworks eval compare RUN_A RUN_B`: two logged suite runs compared row by row (no predictions)."""

from __future__ import annotations

from typing import Annotated

import typer

from ragworks.errors import EvalError


def compare_command(
    baseline: Annotated[
        str, typer.Argument(metavar="RUN_A", help="The baseline run id (a `ragworks eval` run).")
    ],
    current: Annotated[
        str, typer.Argument(metavar="RUN_B", help="The run id compared with it, of the same suite.")
    ],
    alpha: Annotated[
        float, typer.Option("--alpha", min=0.0, max=1.0, help="Significance level of each paired test.")
    ] = 0.05,
) -> None:
    """Pair the runs' rows by their inputs and test each metric; exit 1 on a significant regression.

    McNemar's exact test for pass/fail metrics, Wilcoxon signed-rank for scores; the mean difference
    (RUN_B - RUN_A) comes with a paired bootstrap 95% interval. Nothing is predicted or judged again.

    Example: ragworks eval compare 3f2a... 9c1b... --alpha 0.05
    """
    from ragworks.eval.paired import compare_runs

    comparison = compare_runs(baseline, current, alpha=alpha)
    typer.echo("\n".join(comparison.lines()))
    if comparison.regressions:
        names = ", ".join(m.metric for m in comparison.regressions)
        raise EvalError(f"Run {current} regressed against {baseline}: {names}.")
