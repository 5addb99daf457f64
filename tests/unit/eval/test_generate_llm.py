"""The LLM question writer of `eval generate`, against the OpenAI-compatible stub on 127.0.0.1."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ragworks.cli import app
from ragworks.errors import ConfigError
from ragworks.eval.generate_llm import pick_writer
from ragworks.eval.suite import EvalSuite
from ragworks.retrieval.local import Chunk, LocalIndex
from ragworks.testing.emulators.openai_stub import OpenAIStub, StubReply

runner = CliRunner()
TEXTS = {
    "lock.md": "The writer lock stops two ingest runs from changing one index folder at the same time.",
    "fusion.md": "Reciprocal rank fusion merges the BM25 ranking and the dense ranking into a single list.",
    "serve.md": "The server answers chat completions and responses requests with the same agent graph.",
}


def _sentence(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"]).rsplit("Sentence:\n", 1)[-1]


def _paraphrase(body: dict[str, Any]) -> StubReply:
    words = re.findall(r"[A-Za-z0-9]+", _sentence(body))
    question = "Which " + " ".join(sorted(set(words[1:8]), key=str.lower)) + " fact holds?"
    return StubReply(content=json.dumps({"question": question, "facts": words[1:4]}))


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIStub]:
    with OpenAIStub() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        yield server


@pytest.fixture
def index_dir(tmp_path: Path) -> Path:
    index = LocalIndex(embeddings="hashing")
    index.upsert([Chunk(id=n, text=t, metadata={"source": f"docs/{n}"}) for n, t in TEXTS.items()])
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


def _generate(index_dir: Path, out: Path, *extra: str) -> Any:
    args = ["eval", "generate", "--index", str(index_dir), "-o", str(out), "--model", "openai:stub-model"]
    return runner.invoke(app, [*args, *extra])


def test_llm_questions_are_written_with_the_models_facts(
    stub: OpenAIStub, index_dir: Path, tmp_path: Path
) -> None:
    stub.responder = _paraphrase
    result = _generate(index_dir, tmp_path / "s.yaml", "-n", "3")
    assert result.exit_code == 0, result.output
    suite = EvalSuite.load(tmp_path / "s.yaml")
    assert {r.expectations.expected_doc_ids[0] for r in suite.rows} == set(TEXTS)  # type: ignore[union-attr]
    assert all(r.tags["generator"] == "llm:openai:stub-model" for r in suite.rows)  # type: ignore[union-attr]
    assert all(r.inputs["question"].startswith("Which ") for r in suite.rows)  # type: ignore[union-attr]
    assert "Sentence:" in stub.requests[0].body["messages"][-1]["content"]


def test_malformed_and_verbatim_replies_are_skipped_and_counted(
    stub: OpenAIStub, index_dir: Path, tmp_path: Path
) -> None:
    replies = iter(["Sure! Here is a question.", "verbatim"])

    def responder(body: dict[str, Any]) -> StubReply:
        kind = next(replies, "good")
        if kind == "verbatim":
            return StubReply(content=json.dumps({"question": _sentence(body), "facts": ["x"]}))
        return StubReply(content=kind) if kind != "good" else _paraphrase(body)

    stub.responder = responder
    result = _generate(index_dir, tmp_path / "s.yaml", "-n", "1")
    assert result.exit_code == 0, result.output
    assert "1 verbatim copies; 1 malformed model replies." in result.output
    assert len(EvalSuite.load(tmp_path / "s.yaml").rows) == 1


def test_only_malformed_replies_is_an_error_and_no_file(
    stub: OpenAIStub, index_dir: Path, tmp_path: Path
) -> None:
    stub.responder = lambda body: StubReply(content="no json here")
    result = _generate(index_dir, tmp_path / "s.yaml", "-n", "2")
    assert result.exit_code == 1 and "No question could be generated" in result.output
    assert len(stub.requests) == len(TEXTS)  # every sentence tried once, then it gives up
    assert not (tmp_path / "s.yaml").exists()


def test_an_unreachable_model_fails_with_its_error(stub: OpenAIStub, index_dir: Path, tmp_path: Path) -> None:
    stub.enqueue(StubReply(status=401, error="bad key"))
    result = _generate(index_dir, tmp_path / "s.yaml", "-n", "2")
    assert result.exit_code == 1
    assert "401" in result.output or "bad key" in result.output
    assert not (tmp_path / "s.yaml").exists()


def test_auto_is_offline_without_a_model_and_llm_needs_one(tmp_path: Path) -> None:
    config = tmp_path / "agent.yaml"
    config.write_text("llm: offline\n", encoding="utf-8")
    assert pick_writer("auto", model=None, config=config) is None
    assert pick_writer("auto", model=None, config=None) is None
    with pytest.raises(ConfigError, match="needs a model"):
        pick_writer("llm", model=None, config=config)
    with pytest.raises(ConfigError, match="--generator"):
        pick_writer("gpt", model=None, config=None)
