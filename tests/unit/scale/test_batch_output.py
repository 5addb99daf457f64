"""Where batch answers may be written: never over a folder Spark would empty, never over the input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragworks.errors import ConfigError
from ragworks.scale._batch_io import check_output_path
from ragworks.scale.batch import run_batch


def test_a_spark_folder_output_may_be_new_empty_or_an_earlier_spark_output(tmp_path: Path) -> None:
    check_output_path(tmp_path / "new", spark=True)
    (tmp_path / "empty").mkdir()
    check_output_path(tmp_path / "empty", spark=True)
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "_SUCCESS").touch()
    (earlier / "part-0000.parquet").touch()
    check_output_path(earlier, spark=True)


def test_a_folder_spark_would_empty_is_refused(tmp_path: Path) -> None:
    # Spark's overwrite deletes the folder's files first: a user's folder must never be that output.
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier Spark output"):
        check_output_path(work, spark=True)
    assert (work / "notes.txt").read_text() == "mine"


def test_the_input_is_never_the_output(tmp_path: Path) -> None:
    source = tmp_path / "q.jsonl"
    source.write_text('{"question": "x"}\n')
    with pytest.raises(ConfigError, match="is the input"):
        run_batch(source, source, config=tmp_path / "agent.yaml")
    assert source.read_text() == '{"question": "x"}\n'
