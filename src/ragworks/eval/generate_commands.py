"""`ragworks eval generate --index DIR -n N -o suite.yaml`: a suite of questions grounded in an index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def generate_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the suite (YAML).")],
    index: Annotated[Path | None, typer.Option("--index", help="A local index folder.")] = None,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="An agent config naming a local index instead.")
    ] = None,
    n: Annotated[int, typer.Option("-n", min=1, help="How many questions to write.")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="The same seed writes the same suite.")] = 0,
    name: Annotated[
        str | None, typer.Option("--name", help="The suite's name (default: the file's).")
    ] = None,
) -> None:
    """Write questions grounded in the index's chunks, with expected_doc_ids and expected_facts.

    Offline and deterministic for a seed: questions are spread over the sources, never repeat eight
    words of their chunk in a row, and near-duplicates are dropped. No question at all is an error.

    Example: ragworks eval generate --index ./index -n 30 -o generated.yaml --seed 1
    """
    from ragworks.eval.generate import generate_suite, load_chunks, write_suite

    chunks, where = load_chunks(index, config)
    result = generate_suite(chunks, n, seed=seed, name=name or output.stem, where=where)
    write_suite(result.suite, output)
    typer.echo(f"Wrote {output}: {result.summary()}")
