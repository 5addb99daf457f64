"""The pure parts of `ragworks deploy`: model URIs, answers' text, states and failure messages."""

from __future__ import annotations

import pytest
from databricks.sdk.service.serving import ServingEndpointDetailed

from ragworks.errors import ConfigError, DeploymentError
from ragworks.scale._serving_wait import describe_state, wait_until_ready
from ragworks.scale.deploy import answer_text, parse_model_uri


def test_model_uris_name_a_version_or_an_alias() -> None:
    assert parse_model_uri("models:/main.agents.rag/12").uri == "models:/main.agents.rag/12"
    aliased = parse_model_uri("models:/rag@champion", resolve_alias=lambda name, alias: f"{len(alias)}")
    assert (aliased.name, aliased.version) == ("rag", "8")
    for bad in ("models:/rag", "models:/rag/latest", "runs:/abc/agent", "m-123", "models:/a/b/3"):
        with pytest.raises(ConfigError, match="models:/NAME/VERSION or models:/NAME@ALIAS"):
            parse_model_uri(bad)


def test_answer_text_reads_responses_and_chat_completions() -> None:
    response = {
        "output": [
            {"type": "function_call", "name": "search"},
            {"type": "message", "content": [{"type": "output_text", "text": "BM25 "}]},
            {"type": "message", "content": [{"type": "output_text", "text": "ranks."}]},
        ]
    }
    assert answer_text(response) == "BM25 ranks."
    assert answer_text({"choices": [{"message": {"content": " Hi. "}}]}) == "Hi."
    assert answer_text({"predictions": [1]}) == "" and answer_text(["x"]) == ""


class _Api:
    """Serves a fixed sequence of endpoint descriptions to `get`."""

    def __init__(self, *states: dict[str, object]) -> None:
        self.states = [ServingEndpointDetailed.from_dict({"name": "rag", **s}) for s in states]

    def get(self, name: str) -> ServingEndpointDetailed:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]


def _entity(version: str, deployment: str = "DEPLOYMENT_READY", message: str = "") -> dict[str, object]:
    state = {"deployment": deployment, "deployment_state_message": message}
    return {"name": f"rag-{version}", "entity_name": "rag", "entity_version": version, "state": state}


def test_a_ready_endpoint_serving_another_version_is_reported_after_a_few_polls() -> None:
    api = _Api(
        {
            "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
            "config": {"served_entities": [_entity("2")]},
        }
    )
    with pytest.raises(DeploymentError, match="serves rag version 2, not models:/rag/3"):
        wait_until_ready(api, "rag", parse_model_uri("models:/rag/3"), timeout_s=60, poll_s=0, progress=print)


def test_a_failed_entity_ends_the_wait_even_when_the_update_is_not_marked_failed() -> None:
    failed = _entity("3", "DEPLOYMENT_FAILED", "Model server exited: ImportError ragworks")
    api = _Api(
        {
            "state": {"ready": "NOT_READY", "config_update": "NOT_UPDATING"},
            "config": {"served_entities": [failed]},
        }
    )
    lines: list[str] = []
    with pytest.raises(
        DeploymentError, match=r"DEPLOYMENT_FAILED\): Model server exited: ImportError ragworks"
    ):
        wait_until_ready(
            api, "rag", parse_model_uri("models:/rag/3"), timeout_s=60, poll_s=0, progress=lines.append
        )
    assert lines and "rag: NOT_READY, update NOT_UPDATING" in lines[0]


def test_describe_state_names_the_pending_entities() -> None:
    endpoint = ServingEndpointDetailed.from_dict(
        {
            "state": {"ready": "READY", "config_update": "IN_PROGRESS"},
            "pending_config": {"served_entities": [_entity("4", "DEPLOYMENT_CREATING", "Building image")]},
        }
    )
    assert (
        describe_state(endpoint) == "READY, update IN_PROGRESS, rag-4: DEPLOYMENT_CREATING (Building image)"
    )
