"""`ragworks deploy`, `chat --endpoint` and `eval --endpoint` against the Model Serving emulator.

The real databricks-sdk and the real `openai` client talk to the serving-endpoints emulator on
127.0.0.1: the request bodies (entity name and version, workload size, scale to zero, environment
variables as secret references and never values), the wait until ready, the update of an existing
endpoint, each failure's one-line message, the smoke request, and the OpenAI route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from ragworks.agents import commands as agent_commands
from ragworks.errors import ConfigError, DeploymentError
from ragworks.eval import commands as eval_commands
from ragworks.scale import deploy_commands
from ragworks.scale.deploy import DeploySpec, deploy, parse_env, parse_model_uri
from ragworks.testing.emulators.serving_endpoints import EndpointReply, ServingEndpointsEmulator

TOKEN = "dapi-deploy-test-0123"
MODEL = "models:/main.agents.rag/3"
SECRET = "{{secrets/rag/openai}}"
_AUTH_ENV = (
    "DATABRICKS_HOST",
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_ID",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_CONFIG_PROFILE",
    "DATABRICKS_AUTH_TYPE",
)


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[ServingEndpointsEmulator]:
    """DATABRICKS_HOST/TOKEN point at a fresh emulator; no profile file or other auth is picked up."""
    for name in _AUTH_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "none.cfg"))
    with ServingEndpointsEmulator(token=TOKEN, polls_to_ready=2) as ms:
        monkeypatch.setenv("DATABRICKS_HOST", ms.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        yield ms


def _cli(*args: str) -> Result:
    app = typer.Typer()
    app.callback()(lambda: None)
    deploy_commands.register(app)
    agent_commands.register(app)
    eval_commands.register(app)
    return CliRunner().invoke(app, list(args))


def _deploy(*extra: str, model: str = MODEL) -> Result:
    return _cli("deploy", "--model-uri", model, "--endpoint", "rag", "--poll-interval", "0", *extra)


def _error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# ------------------------------------------------------------------------------------------ creating


def test_deploy_creates_the_endpoint_waits_smoke_tests_and_prints_its_url(
    serving: ServingEndpointsEmulator,
) -> None:
    serving.enqueue("I answer questions about the ragworks docs.")
    result = _deploy("--workload-size", "medium", "--no-scale-to-zero", "--env", f"OPENAI_API_KEY={SECRET}")

    assert result.exit_code == 0, result.output
    [create] = serving.bodies("POST", "/api/2.0/serving-endpoints")
    assert create["name"] == "rag"
    assert create["config"]["served_entities"] == [
        {
            "entity_name": "main.agents.rag",
            "entity_version": "3",
            "workload_size": "Medium",
            "scale_to_zero_enabled": False,
            "environment_vars": {"OPENAI_API_KEY": SECRET},
        }
    ]
    # Two polls see the deployment in progress (reported on stderr), the third sees it ready.
    assert len(serving.bodies("GET", "/serving-endpoints/rag")) >= 3
    assert "NOT_READY, update IN_PROGRESS" in result.stderr
    assert "DEPLOYMENT_CREATING" in result.stderr
    assert "READY, update NOT_UPDATING" in result.stderr
    [smoke] = serving.bodies("POST", "/serving-endpoints/rag/invocations")
    assert smoke["input"][0]["role"] == "user"
    assert "Smoke request answered: I answer questions about the ragworks docs." in result.stderr
    assert result.stdout.strip() == f"{serving.host}/serving-endpoints/rag/invocations"
    assert serving.endpoints["rag"].active[0]["entity_version"] == "3"


def test_defaults_are_small_and_scale_to_zero_without_env(serving: ServingEndpointsEmulator) -> None:
    result = _deploy("--no-smoke")

    assert result.exit_code == 0, result.output
    [entity] = serving.bodies("POST", "/api/2.0/serving-endpoints")[0]["config"]["served_entities"]
    assert entity == {
        "entity_name": "main.agents.rag",
        "entity_version": "3",
        "workload_size": "Small",
        "scale_to_zero_enabled": True,
    }
    assert serving.bodies("POST", "/invocations") == []


def test_a_plain_env_value_is_refused_and_never_sent_or_shown(serving: ServingEndpointsEmulator) -> None:
    result = _deploy("--env", "OPENAI_API_KEY=sk-live-very-secret-42")

    assert result.exit_code == 1
    line = _error_line(result)
    assert "--env OPENAI_API_KEY: the value must be a secret reference {{secrets/<scope>/<key>}}" in line
    assert "sk-live-very-secret-42" not in result.output
    assert not [r for r in serving.requests if r.path.startswith("/api/2.0/serving-endpoints")]


def test_env_values_reach_the_body_only_as_secret_references() -> None:
    env = parse_env([f"OPENAI_API_KEY={SECRET}", "DATABRICKS_TOKEN={{secrets/rag/pat}}"])
    assert env == {"OPENAI_API_KEY": SECRET, "DATABRICKS_TOKEN": "{{secrets/rag/pat}}"}
    for bad in ("OPENAI_API_KEY", "1KEY={{secrets/a/b}}", "KEY={{secrets/a}}", "KEY=x{{secrets/a/b}}"):
        with pytest.raises(ConfigError):
            parse_env([bad])


def test_workload_size_and_model_uri_are_checked_before_any_request(
    serving: ServingEndpointsEmulator,
) -> None:
    size = _deploy("--workload-size", "Huge")
    uri = _deploy(model="runs:/abc/agent")

    assert size.exit_code == 1 and "use Small, Medium or Large" in _error_line(size)
    assert uri.exit_code == 1 and "models:/NAME/VERSION or models:/NAME@ALIAS" in _error_line(uri)
    assert not [r for r in serving.requests if r.path.startswith("/api/2.0/serving-endpoints")]


@pytest.mark.slow
def test_an_alias_is_resolved_through_the_model_registry(tmp_path: Path) -> None:
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    client = mlflow.MlflowClient()
    client.create_registered_model("rag")
    for _ in range(2):
        client.create_model_version("rag", source=str(tmp_path))
    client.set_registered_model_alias("rag", "champion", "2")

    ref = parse_model_uri("models:/rag@champion")
    assert (ref.name, ref.version, ref.uri) == ("rag", "2", "models:/rag/2")
    with pytest.raises(ConfigError, match="Cannot resolve models:/rag@nobody"):
        parse_model_uri("models:/rag@nobody")


# ------------------------------------------------------------------------------------------ updating


def test_an_existing_endpoint_is_updated_not_recreated(serving: ServingEndpointsEmulator) -> None:
    first = _deploy("--no-smoke")
    second = _deploy("--no-smoke", "--workload-size", "Large", model="models:/main.agents.rag/4")

    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert len(serving.bodies("POST", "/api/2.0/serving-endpoints")) == 1
    [update] = serving.bodies("PUT", "/serving-endpoints/rag/config")
    assert update["served_entities"] == [
        {
            "entity_name": "main.agents.rag",
            "entity_version": "4",
            "workload_size": "Large",
            "scale_to_zero_enabled": True,
        }
    ]
    assert "Updated serving endpoint rag: serves models:/main.agents.rag/4" in second.stderr
    assert serving.endpoints["rag"].active[0]["entity_version"] == "4"


def test_an_update_in_progress_is_waited_for_before_the_new_one(serving: ServingEndpointsEmulator) -> None:
    spec = DeploySpec(model_uri=MODEL, endpoint="rag")
    # The endpoint exists and is still deploying its first config when the next deploy starts.
    serving.create(
        {"name": "rag", "config": {"served_entities": [{"entity_name": "x", "entity_version": "1"}]}}
    )
    lines: list[str] = []
    result = deploy(spec, poll_s=0, progress=lines.append, smoke_question=None)

    assert result.created is False
    assert any("waiting for that update to end" in line for line in lines)
    paths = [(r.method, r.path) for r in serving.requests]
    put = paths.index(("PUT", "/api/2.0/serving-endpoints/rag/config"))
    assert paths[:put].count(("GET", "/api/2.0/serving-endpoints/rag")) >= 3  # it waited for the first
    assert serving.endpoints["rag"].active[0]["entity_version"] == "3"


# ------------------------------------------------------------------------------------------ failures


def test_quota_exceeded_is_one_line_with_the_endpoints_message(serving: ServingEndpointsEmulator) -> None:
    serving.max_endpoints = 0
    result = _deploy()

    assert result.exit_code == 1
    assert _error_line(result) == (
        "Error: Databricks refused to create serving endpoint 'rag' (QUOTA_EXCEEDED): The workspace has "
        "reached its limit of 0 serving endpoints; delete an endpoint or request a quota increase.."
    )


def test_a_failed_container_build_gives_its_message(serving: ServingEndpointsEmulator) -> None:
    serving.fail_next_build("pip could not find a version that satisfies ragworks==9.9")
    result = _deploy()

    assert result.exit_code == 1
    line = _error_line(result)
    assert "Serving endpoint 'rag' failed to deploy main.agents.rag version 3 (DEPLOYMENT_FAILED)" in line
    assert (
        "Container image creation failed: pip could not find a version that satisfies ragworks==9.9" in line
    )
    assert "build logs: databricks serving-endpoints build-logs rag rag-3" in line
    assert serving.bodies("POST", "/invocations") == []


def test_permission_denied_names_the_fix(serving: ServingEndpointsEmulator) -> None:
    message = "User alice@example.com does not have permission to create serving endpoints."
    serving.script_error("create", 403, "PERMISSION_DENIED", message)
    result = _deploy()

    assert result.exit_code == 1
    line = _error_line(result)
    assert f"Databricks refused to create serving endpoint 'rag' (PERMISSION_DENIED): {message}" in line
    assert "Ask a workspace admin for CAN_MANAGE" in line


def test_permission_denied_on_update(serving: ServingEndpointsEmulator) -> None:
    assert _deploy("--no-smoke").exit_code == 0
    serving.script_error("update", 403, "PERMISSION_DENIED", "User bob has CAN_QUERY, not CAN_MANAGE.")
    result = _deploy("--no-smoke")

    assert result.exit_code == 1
    assert "refused to update serving endpoint 'rag' (PERMISSION_DENIED): User bob has CAN_QUERY" in (
        _error_line(result)
    )


def test_permission_denied_on_reading_the_endpoint(serving: ServingEndpointsEmulator) -> None:
    serving.script_error("get", 403, "PERMISSION_DENIED", "User carol cannot view endpoint 'rag'.")
    result = _deploy()

    assert result.exit_code == 1
    line = _error_line(result)
    assert "refused to read serving endpoint 'rag' (PERMISSION_DENIED): User carol cannot view" in line
    assert serving.bodies("POST", "/api/2.0/serving-endpoints") == []


def test_the_wait_is_bounded(serving: ServingEndpointsEmulator) -> None:
    serving.polls_to_ready = 10**6
    result = _cli(
        "deploy", "--model-uri", MODEL, "--endpoint", "rag", "--timeout", "1", "--poll-interval", "0.05"
    )

    assert result.exit_code == 1
    assert "Serving endpoint 'rag' was not ready after 1s (last state: NOT_READY, update IN_PROGRESS" in (
        _error_line(result)
    )


def test_a_failed_smoke_request_fails_the_deploy(serving: ServingEndpointsEmulator) -> None:
    serving.enqueue(EndpointReply(text="", status=500, error="ModuleNotFoundError: No module named 'bm25s'"))
    result = _deploy()

    assert result.exit_code == 1
    line = _error_line(result)
    assert "Serving endpoint 'rag' is ready but its smoke request failed" in line
    assert "No module named 'bm25s'" in line
    assert f"{serving.host}/serving-endpoints/rag/invocations" not in result.stdout


def test_a_smoke_answer_without_text_fails_the_deploy(serving: ServingEndpointsEmulator) -> None:
    serving.enqueue("")
    with pytest.raises(DeploymentError, match="smoke request got no answer text"):
        deploy(DeploySpec(model_uri=MODEL, endpoint="rag"), poll_s=0)


# ---------------------------------------------------------------------------- chat and eval --endpoint


def _ready(serving: ServingEndpointsEmulator) -> None:
    serving.polls_to_ready = 0
    deploy(DeploySpec(model_uri=MODEL, endpoint="rag"), poll_s=0, smoke_question=None)
    serving.requests.clear()


def test_chat_talks_to_the_endpoint_through_its_openai_route(serving: ServingEndpointsEmulator) -> None:
    _ready(serving)
    serving.enqueue(
        EndpointReply(
            text="BM25 ranks chunks by rare shared words [1].",
            sources=[{"n": 1, "source": "indexing.md", "cited": True}],
        )
    )
    result = _cli("chat", "--endpoint", "rag", "What is BM25?")

    assert result.exit_code == 0, result.output
    assert "BM25 ranks chunks by rare shared words [1]." in result.stdout
    assert "Sources:\n  [1] indexing.md" in result.stdout
    [body] = serving.bodies("POST", "/serving-endpoints/responses")
    assert body["model"] == "rag" and body["stream"] is True
    [turn] = body["input"]
    assert (turn["role"], turn["content"]) == ("user", "What is BM25?")


def test_the_endpoint_streams_events_with_the_sources(serving: ServingEndpointsEmulator) -> None:
    from ragworks.scale.endpoint_client import EndpointAgent

    _ready(serving)
    serving.enqueue(EndpointReply(text="Dense search finds paraphrases.", sources=[{"source": "a.md"}]))
    events = list(EndpointAgent("rag").predict_stream({"input": [{"role": "user", "content": "Dense?"}]}))

    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Dense ", "search ", "finds ", "paraphrases."]
    [done] = [e for e in events if e["type"] == "response.output_item.done"]
    assert done["custom_outputs"] == {"sources": [{"source": "a.md"}]}
    assert events[-1]["type"] == "response.completed"


def test_chat_endpoint_errors_are_one_line(serving: ServingEndpointsEmulator) -> None:
    result = _cli("chat", "--endpoint", "missing", "hello")

    assert result.exit_code == 1
    assert "Serving endpoint 'missing' answered 404: Endpoint 'missing' does not exist." in _error_line(
        result
    )


@pytest.mark.slow
def test_eval_runs_the_suite_against_the_endpoint(
    serving: ServingEndpointsEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _ready(serving)
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")  # eval reads every row's trace
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    suite = tmp_path / "suite.jsonl"
    rows = [
        {"inputs": {"question": "What is alpha?"}, "expectations": {"expected_doc_ids": ["alpha.md"]}},
        {"inputs": {"question": "What is beta?"}, "expectations": {"expected_doc_ids": ["beta.md"]}},
    ]
    suite.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    def answer(body: dict[str, Any]) -> EndpointReply:
        word = "alpha" if "alpha" in body["input"][-1]["content"] else "beta"
        return EndpointReply(
            text=f"{word.title()} is a Greek letter [1].", sources=[{"source": f"{word}.md"}]
        )

    serving.responder = answer
    result = _cli("eval", str(suite), "--endpoint", "rag", "-s", "mrr", "--experiment", "endpoint-eval")

    assert result.exit_code == 0, result.output
    bodies = serving.bodies("POST", "/serving-endpoints/responses")
    # Each row once, and the first once more: MLflow's untraced probe call before the rows.
    assert sorted(b["input"][-1]["content"] for b in bodies) == [
        "What is alpha?",
        "What is alpha?",
        "What is beta?",
    ]
    assert all(b["model"] == "rag" for b in bodies)
    run = mlflow.search_runs(experiment_names=["endpoint-eval"], output_format="list")[0]
    assert run.data.metrics["mrr/mean"] == pytest.approx(1.0)


def test_eval_endpoint_is_refused_with_another_target(serving: ServingEndpointsEmulator) -> None:
    result = _cli("eval", "suite.yaml", "--endpoint", "rag", "--model-uri", MODEL)

    assert result.exit_code == 1
    assert "Pass --endpoint alone, not with --config or --model-uri." in _error_line(result)


def test_eval_endpoint_with_set_is_refused(serving: ServingEndpointsEmulator) -> None:
    # Without the refusal, --set built a default local agent and evaluated it in the endpoint's place.
    result = _cli("eval", "suite.yaml", "--endpoint", "rag", "--set", "retriever.k=3")

    assert result.exit_code == 1
    assert "a deployed --endpoint cannot be overridden" in _error_line(result)
    assert serving.requests == []  # refused before any call
