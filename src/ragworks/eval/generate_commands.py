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
    generator: Annotated[
        str,
        typer.Option("--generator", help="auto (llm when a model is configured) | offline | llm."),
    ] = "auto",
    model: Annotated[
        str | None, typer.Option("--model", help="The LLM generator's model, e.g. openai:gpt-4o-mini.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The suite's name (default: the file's).")
    ] = None,
) -> None:
    """Write questions grounded in the index's chunks, with expected_doc_ids and expected_facts.

    Questions are spread over the sources, never repeat eight words of their chunk in a row, and
    near-duplicates are dropped; no question at all is an error. The offline generator needs no model
    and is deterministic for a seed; the LLM one (a model from --model or the config's llm) words
    the questions itself.

    Example: ragworks eval generate --index ./index -n 30 -o generated.yaml --seed 1
    """
    from ragworks.eval.generate import generate_suite, load_chunks, write_suite
    from ragworks.eval.generate_llm import pick_writer

    writer = pick_writer(generator, model=model, config=config)
    chunks, where = load_chunks(index, config)
    attempts = 3 * n + 5 if writer is not None else None  # each attempt is a model call
    result = generate_suite(
        chunks, n, seed=seed, name=name or output.stem, where=where, writer=writer, max_attempts=attempts
    )
    write_suite(result.suite, output)
    typer.echo(f"Wrote {output}: {result.summary()}")
