"""Reading the questions of a batch and writing its answers: JSONL, CSV, Parquet and Delta tables.

A Delta table is a folder with a `_delta_log`; it is read through `deltalake` (delta-rs), so no Spark
is needed for it. The output format follows the output path's suffix.

Example:
    >>> questions = read_questions(Path("questions.jsonl"), question_column="question")  # doctest: +SKIP
    >>> write_answers(answers, Path("answers.parquet"))                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ragworks.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

ROW = "_row"
"""The input position of a row: the output is ordered by it."""
ID = "id"
"""The output's id column (the input's id column, or the row number when the input has none)."""
QUESTION = "question"
ANSWER = "answer"
SOURCES = "sources"
"""The source files (paths) of the chunks the agent was shown, in order."""
SOURCE_IDS = "source_ids"
"""The chunk ids of those chunks."""
TRACE_ID = "trace_id"
LATENCY = "latency_s"
ERROR = "error"
"""Empty for an answered row; the failure, for a row the agent could not answer."""
OUTPUT_COLUMNS = (ID, QUESTION, ANSWER, SOURCES, SOURCE_IDS, TRACE_ID, LATENCY, ERROR)
FILE_FORMATS = (".jsonl", ".json", ".csv", ".parquet")
_LIST_COLUMNS = (SOURCES, SOURCE_IDS)


def is_delta_table(path: Path) -> bool:
    """Whether `path` is a Delta table folder (it has a `_delta_log`)."""
    return (path / "_delta_log").is_dir()


def read_table(path: Path) -> pd.DataFrame:
    """A JSONL / JSON / CSV / Parquet file or a Delta table folder as a pandas DataFrame."""
    import pandas as pd

    if not path.exists():
        raise ConfigError(
            f"No input at {path}: give a .jsonl, .csv or .parquet file, or a Delta table folder."
        )
    suffix = path.suffix.lower()
    try:
        if path.is_dir():
            if is_delta_table(path):
                return _read_delta(path)
            return pd.read_parquet(path)  # a folder of Parquet files (as Spark writes them)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
        if suffix == ".csv":
            return pd.read_csv(path, dtype=str, keep_default_na=False)
        if suffix == ".parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError) as exc:
        if path.is_file() and path.stat().st_size == 0:
            raise ConfigError(f"The input {path} is empty: it needs one question per row.") from None
        raise ConfigError(f"Could not read {path}: {exc}") from exc
    raise ConfigError(
        f"Cannot read {path}: the input must be .jsonl, .json, .csv or .parquet, or a Delta table folder."
    )


def _read_delta(path: Path) -> pd.DataFrame:
    try:
        from deltalake import DeltaTable
    except ImportError:
        raise ConfigError(
            f"{path} is a Delta table; reading it needs deltalake: pip install deltalake"
        ) from None
    return DeltaTable(str(path)).to_pandas()


def select_questions(
    frame: pd.DataFrame, *, source: str, question_column: str, id_column: str | None
) -> pd.DataFrame:
    """The rows to answer: `_row` (input position), `id` and `question`, checked for the named columns.

    Args:
        frame: The input table.
        source: The input's name, for messages.
        question_column: The column holding the questions.
        id_column: The column of row ids; None: `id` if there is one, else the row number.
    """
    columns = [str(c) for c in frame.columns]
    if frame.empty:
        raise ConfigError(f"The input {source} is empty (no rows): it needs one question per row.")
    if question_column not in columns:
        raise ConfigError(
            f"The input {source} has no column {question_column!r} (columns: {', '.join(columns)}). "
            "Name the questions' column with --question-column."
        )
    if id_column is not None and id_column not in columns:
        raise ConfigError(
            f"The input {source} has no column {id_column!r} (columns: {', '.join(columns)}). "
            "Name the ids' column with --id-column, or leave it out to number the rows."
        )
    import pandas as pd

    chosen_id = id_column or (ID if ID in columns else None)
    ids = frame[chosen_id] if chosen_id else pd.Series(range(len(frame)), index=frame.index)
    return pd.DataFrame(
        {ROW: range(len(frame)), ID: ids.to_numpy(), QUESTION: frame[question_column].to_numpy()}
    )


def check_output_path(path: Path, *, spark: bool) -> None:
    """Refuse an output path whose format is unknown, before any question is answered."""
    suffix = path.suffix.lower()
    if suffix in FILE_FORMATS:
        return
    if spark and not suffix:
        # A folder of Parquet files, written by Spark with mode("overwrite"), which empties the folder first:
        # only a missing folder, an empty one or an earlier Spark output (its _SUCCESS marker) may be it.
        if path.is_file() or (path.is_dir() and any(path.iterdir()) and not (path / "_SUCCESS").exists()):
            raise ConfigError(
                f"Cannot write {path}: it exists and is not an earlier Spark output (no _SUCCESS file), "
                "and writing would delete what is in it. Name a new folder."
            )
        return
    where = " or a folder (no suffix) with --spark" if not spark else " or a folder name without a suffix"
    raise ConfigError(f"Cannot write {path}: the output must end in .jsonl, .csv or .parquet{where}.")


def write_answers(frame: pd.DataFrame, path: Path) -> None:
    """Write the answers in the format of `path`'s suffix; CSV holds the source lists as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    out = frame.loc[:, list(OUTPUT_COLUMNS)]
    if suffix in (".jsonl", ".json"):
        out.to_json(path, orient="records", lines=suffix == ".jsonl", force_ascii=False)
    elif suffix == ".csv":
        out = out.copy()
        for column in _LIST_COLUMNS:
            out[column] = [json.dumps(list(v), ensure_ascii=False) for v in out[column]]
        out.to_csv(path, index=False)
    elif suffix == ".parquet":
        out.to_parquet(path, index=False)
    else:
        raise ConfigError(f"Cannot write {path}: the output must end in .jsonl, .csv or .parquet.")
