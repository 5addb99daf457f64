"""System prompts from MLflow's prompt registry, in a temp SQLite store: pushed with the CLI, answered with
(through a scripted model), linked to the traces, the logged model and the eval run; bad URIs refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from langchain_core.messages import SystemMessage
from mlflow.entities import Trace
from typer.testing import CliRunner

from ragworks.agents import _prompt_link, builder, prompt_registry
from ragworks.agents.builder import build_agent
from ragworks.agents.prompts import NOT_FOUND
from ragworks.cli import app
from ragworks.errors import ConfigError
from ragworks.testing import ScriptedChatModel

V1 = "You answer questions about ragworks for {{agent_name}}. When unsure, say: {{not_found}}"
V2 = "Version two: answer in one short sentence."
LINKED = "mlflow.linkedPrompts"
QUESTION = {"input": [{"role": "user", "content": "How is the index stored?"}]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A temp SQLite store with every trace sampled, and the prompt `support` pushed twice by the CLI."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    tmp = tmp_path_factory.mktemp("prompts")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    mlflow.tracing.reset()
    (tmp / "v1.txt").write_text(V1, encoding="utf-8")
    (tmp / "v2.txt").write_text(V2, encoding="utf-8")
    runner = CliRunner()
    push = ["prompts", "push", str(tmp / "v1.txt"), "--name", "support", "--alias", "prod"]
    first = runner.invoke(app, push)
    assert first.exit_code == 0, first.output
    assert first.stdout.split() == ["prompts:/support/1", "prompts:/support@prod"]
    second = runner.invoke(app, ["prompts", "push", str(tmp / "v2.txt"), "-n", "support", "-m", "shorter"])
    assert second.exit_code == 0, second.output
    assert second.stdout.split() == ["prompts:/support/2"]
    yield tmp
    mlflow.set_tracking_uri(original)
    mp.undo()
    mlflow.tracing.reset()


def _config(docs_index: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"retriever": {"type": "local", "index": docs_index, "k": 2}, "system_prompt": prompt, **extra}


def _scripted(monkeypatch: pytest.MonkeyPatch, *replies: str) -> ScriptedChatModel:
    model = ScriptedChatModel(responses=list(replies))
    monkeypatch.setattr(builder, "get_chat_model", lambda *a, **k: model)
    return model


def _last_trace() -> Trace:
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    trace = mlflow.get_trace(trace_id, flush=True)
    assert trace is not None
    return trace


def _linked(tags: dict[str, str]) -> list[tuple[str, str]]:
    return [(p["name"], str(p["version"])) for p in json.loads(tags.get(LINKED, "[]"))]


def test_list_shows_the_latest_version(store: Path) -> None:
    result = CliRunner().invoke(app, ["prompts", "list"])
    assert result.exit_code == 0, result.output
    assert "prompts:/support/2  shorter" in result.output


def test_agent_answers_with_the_version_and_the_trace_links_it(
    store: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _scripted(monkeypatch, "Stored in a folder [1].")
    agent = build_agent(_config(docs_index, "prompts:/support/1", name="docs-bot"))
    agent.predict(QUESTION)
    system = model.history[0][0]
    assert isinstance(system, SystemMessage)
    expected = f"You answer questions about ragworks for docs-bot. When unsure, say: {NOT_FOUND}"
    assert system.content == expected
    assert _linked(_last_trace().info.tags) == [("support", "1")]


def test_an_alias_is_pinned_when_the_agent_is_built(
    store: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _scripted(monkeypatch, "One.", "Two.")
    mlflow.genai.set_prompt_alias("support", alias="prod", version=1)
    agent = build_agent(_config(docs_index, "prompts:/support@prod"))
    mlflow.genai.set_prompt_alias("support", alias="prod", version=2)  # moves after the build
    try:
        agent.predict(QUESTION)
        assert str(model.history[0][0].content).startswith("You answer questions about ragworks")
        assert _linked(_last_trace().info.tags) == [("support", "1")]
        rebuilt = build_agent(_config(docs_index, "prompts:/support@prod", agent="tool-calling"))
        rebuilt.predict(QUESTION)
        assert model.history[1][0].content == V2
        assert _linked(_last_trace().info.tags) == [("support", "2")]
    finally:
        mlflow.genai.set_prompt_alias("support", alias="prod", version=1)


def test_configs_sent_to_executors_carry_the_version_an_alias_names_now(store: Path, docs_index: str) -> None:
    from ragworks.config import AgentConfig
    from ragworks.scale.spark_eval import executor_target

    mlflow.genai.set_prompt_alias("support", alias="prod", version=2)
    try:
        shipped = executor_target(_config(docs_index, "prompts:/support@prod"))
        assert isinstance(shipped, dict)
        # Executors start later and each would resolve the alias again; they get the version instead.
        assert shipped["system_prompt"] == "prompts:/support/2"
        plain = executor_target(_config(docs_index, "Answer briefly."))
        assert isinstance(plain, dict) and plain["system_prompt"] == "Answer briefly."
        assert AgentConfig.model_validate(shipped).system_prompt == "prompts:/support/2"
    finally:
        mlflow.genai.set_prompt_alias("support", alias="prod", version=1)


def test_the_trace_prompt_hook_is_there_on_supported_mlflow() -> None:
    assert _prompt_link.AVAILABLE  # else every request falls back to load_prompt (a run write in evals)


def test_without_the_hook_load_prompt_links_the_trace(
    store: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _scripted(monkeypatch, "Linked [1].")
    agent = build_agent(_config(docs_index, "prompts:/support/2"))
    monkeypatch.setattr(_prompt_link, "AVAILABLE", False)
    agent.predict(QUESTION)
    assert _linked(_last_trace().info.tags) == [("support", "2")]


def test_a_failed_link_never_fails_the_request(
    store: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    model = _scripted(monkeypatch, "One [1].", "Two [1].")
    agent = build_agent(_config(docs_index, "prompts:/support/1"))

    def broken(*args: object, **kwargs: object) -> bool:
        raise RuntimeError("registry went away")

    monkeypatch.setattr(_prompt_link, "link", broken)
    monkeypatch.setattr(prompt_registry, "_logged", set())
    with caplog.at_level("WARNING", logger=prompt_registry.__name__):
        answers = [agent.predict(QUESTION).output[-1].content[0]["text"] for _ in range(2)]
    assert answers == ["One [1].", "Two [1]."]
    assert model.history[1][0].content == model.history[0][0].content  # the pinned text, unchanged
    assert [r.getMessage() for r in caplog.records].count(
        "Could not link prompt support/1 to the trace: registry went away"
    ) == 1


def test_logged_model_is_linked_to_the_pinned_version(store: Path, docs_index: str) -> None:
    from ragworks.agents.logged_model import log_agent

    info = log_agent(_config(docs_index, "prompts:/support@prod"), name="prompted")
    model = mlflow.get_logged_model(info.model_id)
    assert _linked(model.tags) == [("support", "1")]
    assert mlflow.models.get_model_info(info.model_uri).prompts == ["prompts:/support/1"]  # its MLmodel


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("prompts:/support/9", "version=9"),
        ("prompts:/nosuch/1", "nosuch"),
        ("prompts:/support@staging", "staging"),
    ],
)
def test_an_unknown_prompt_version_or_alias_is_a_clear_error(
    store: Path, docs_index: str, uri: str, says: str
) -> None:
    with pytest.raises(ConfigError, match="not in the prompt registry") as caught:
        build_agent(_config(docs_index, uri))
    assert says in str(caught.value) and "ragworks prompts push" in str(caught.value)


def test_a_variable_ragworks_does_not_provide_is_refused(store: Path, docs_index: str) -> None:
    mlflow.genai.register_prompt("needs-audience", "Write for {{audience}}. {{not_found}}")
    says = r"expects \{\{audience\}\}, which ragworks does not provide"
    with pytest.raises(ConfigError, match=says) as caught:
        build_agent(_config(docs_index, "prompts:/needs-audience/1"))
    assert "{{not_found}}" in str(caught.value)  # the variables it may use are listed


def test_a_registry_that_cannot_be_reached_is_a_clear_error(
    store: Path, docs_index: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri("http://127.0.0.1:9")  # the discard port: nothing listens
    try:
        with pytest.raises(ConfigError, match=r"prompt registry at http://127\.0\.0\.1:9 failed"):
            build_agent(_config(docs_index, "prompts:/support/7"))
    finally:
        mlflow.set_tracking_uri(original)


@pytest.mark.slow  # an eval run: about a minute on a loaded machine
def test_eval_records_the_prompt_version_it_ran(store: Path, docs_index: str) -> None:
    suite = store / "suite.yaml"
    rows = [{"inputs": {"question": "How is the index stored?"}}]
    suite.write_text(yaml.safe_dump({"name": "prompt-compare", "rows": rows}))
    config = store / "agent.yaml"
    config.write_text(yaml.safe_dump(_config(docs_index, "prompts:/support/1")))
    args = ["eval", str(suite), "--config", str(config), "--scorer", "faithfulness", "--allow-errors"]
    result = CliRunner().invoke(app, [*args, "--set", "system_prompt=prompts:/support@prod"])
    assert result.exit_code == 0, result.output
    run = mlflow.last_active_run()
    assert run is not None
    assert run.data.params["system_prompt"] == "prompts:/support@prod"
    assert run.data.params["system_prompt_version"] == "prompts:/support/1"
    assert ("support", "1") in _linked(run.data.tags)


def test_a_built_agent_target_logs_its_pinned_version(store: Path, docs_index: str) -> None:
    from ragworks.eval._prompt_params import log_prompt_params

    agent = build_agent(_config(docs_index, "prompts:/support@prod"))
    with mlflow.start_run() as run:
        log_prompt_params(agent)
    logged = mlflow.get_run(run.info.run_id)
    assert logged.data.params == {
        "system_prompt": "prompts:/support@prod",
        "system_prompt_version": "prompts:/support/1",
    }
    assert _linked(logged.data.tags) == [("support", "1")]
    with mlflow.start_run() as plain:
        log_prompt_params(build_agent(_config(docs_index, "You are terse.")))
    assert mlflow.get_run(plain.info.run_id).data.params == {}


def test_push_refuses_a_missing_or_empty_file(store: Path) -> None:
    (store / "empty.txt").write_text("  \n", encoding="utf-8")
    missing = CliRunner().invoke(app, ["prompts", "push", str(store / "nope.txt"), "--name", "x"])
    empty = CliRunner().invoke(app, ["prompts", "push", str(store / "empty.txt"), "--name", "x"])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert empty.exit_code == 1 and "is empty" in empty.output
    assert "prompts:/x/" not in CliRunner().invoke(app, ["prompts", "list"]).output
