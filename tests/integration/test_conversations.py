"""Conversations through `previous_response_id` with the real `openai` client, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from openai import OpenAI

from ragworks.agents import RagResponsesAgent
from ragworks.agents.graphs import build_rag_graph
from ragworks.config import AgentConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.registry import get_retriever
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving.state import ConversationStore, Retention, open_state
from ragworks.testing import ScriptedChatModel
from ragworks.testing.postgres import postgres_cluster, postgres_unavailable


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (as `postgres` when the tests run as root)."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(f"PostgreSQL cannot start here: {reason}; .ci/run installs Debian's postgresql")
    with postgres_cluster() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The `serving.state` setting of each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "conversations.db")
    url: str = request.getfixturevalue("postgres_url")
    return url


def _agent(docs_index: str, model: ScriptedChatModel) -> RagResponsesAgent:
    config = AgentConfig.model_validate({"name": "chat", "retriever": {"index": docs_index, "k": 2}})
    graph = build_rag_graph(get_retriever(config.retriever), model, condense="none")
    return RagResponsesAgent(graph, config=config)


def _app(docs_index: str, model: ScriptedChatModel, state: str) -> tuple[FastAPI, ConversationStore]:
    app = build_app(_agent(docs_index, model), state=state)
    store = app.state.ragworks.state
    assert isinstance(store, ConversationStore)
    return app, store


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def _turns(prompt: list[BaseMessage]) -> list[tuple[str, str]]:
    """The user and assistant turns the model was shown (the last user turn carries the sources)."""
    return [(m.type, str(m.content)) for m in prompt if isinstance(m, (HumanMessage, AIMessage))]


def test_three_turns_reach_the_model_and_survive_a_restart(docs_index: str, state: str) -> None:
    model = ScriptedChatModel(responses=["First answer.", "Second answer.", "Third answer."])
    with serve_in_thread(build_app(_agent(docs_index, model), state=state)) as url:
        client = _client(url)
        first = client.responses.create(model="chat", input="Where is the index stored?")
        second = client.responses.create(model="chat", input="Which files?", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        stored = httpx.get(f"{url}/v1/responses/{second.id}").json()
        assert stored["id"] == second.id and "Second answer." in str(stored["output"])
    # a new server on the same store: the conversation goes on
    with serve_in_thread(build_app(_agent(docs_index, model), state=state)) as url:
        third = _client(url).responses.create(
            model="chat", input="And the vectors?", previous_response_id=second.id, stream=False
        )
        assert third.output_text == "Third answer."
    assert len(model.history) == 3
    turns = _turns(model.history[2])
    assert [kind for kind, _ in turns] == ["human", "ai", "human", "ai", "human"]
    assert turns[0][1] == "Where is the index stored?" and turns[1][1] == "First answer."
    assert turns[2][1] == "Which files?" and turns[3][1] == "Second answer."
    assert "And the vectors?" in turns[4][1]
    assert first.metadata and third.metadata
    assert first.metadata["conversation_id"] == third.metadata["conversation_id"]


def test_streamed_turns_continue_the_conversation(docs_index: str, tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["One.", "Two."])
    with serve_in_thread(build_app(_agent(docs_index, model), state=str(tmp_path / "s.db"))) as url:
        client = _client(url)
        events = list(client.responses.create(model="chat", input="Question one?", stream=True))
        first_id = events[-1].response.id
        assert events[0].response.id == first_id
        events = list(
            client.responses.create(
                model="chat", input="Question two?", previous_response_id=first_id, stream=True
            )
        )
        assert events[-1].response.output[-1].content[0].text == "Two."
    assert _turns(model.history[1])[:2] == [("human", "Question one?"), ("ai", "One.")]


def test_a_bogus_previous_response_id_is_a_400_naming_it(docs_index: str, state: str) -> None:
    model = ScriptedChatModel(responses=["Never."])
    with serve_in_thread(build_app(_agent(docs_index, model), state=state)) as url:
        client = _client(url)
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="chat", input="Hi", previous_response_id="resp_bogus")
        assert "resp_bogus" in caught.value.message
        assert caught.value.code == "previous_response_not_found"
        with pytest.raises(openai.BadRequestError):  # the streamed request is refused before it starts
            list(
                client.responses.create(
                    model="chat", input="Hi", previous_response_id="resp_bogus", stream=True
                )
            )
    assert model.history == []


def test_store_false_leaves_nothing_behind(docs_index: str, state: str) -> None:
    model = ScriptedChatModel(responses=["Kept.", "Not kept.", "Also not kept."])
    app, store = _app(docs_index, model, state)
    with serve_in_thread(app) as url:
        client = _client(url)
        kept = client.responses.create(model="chat", input="Question one?")
        before = (store.count_responses(), _checkpoints(store))
        alone = client.responses.create(model="chat", input="Question two?", store=False)
        after_turn = client.responses.create(
            model="chat", input="Question three?", previous_response_id=kept.id, store=False
        )
        store._counts.clear()
        assert (store.count_responses(), _checkpoints(store)) == before
        for response in (alone, after_turn):
            assert httpx.get(f"{url}/v1/responses/{response.id}").status_code == 404
            with pytest.raises(openai.BadRequestError):
                client.responses.create(model="chat", input="more", previous_response_id=response.id)
    # the unkept turn still saw the kept one
    assert _turns(model.history[2])[:2] == [("human", "Question one?"), ("ai", "Kept.")]


def test_delete_forgets_a_response_and_its_thread(docs_index: str, tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["Answer."])
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    with serve_in_thread(app) as url:
        client = _client(url)
        response = client.responses.create(model="chat", input="Question?")
        assert _checkpoints(store) == 1
        deleted = httpx.delete(f"{url}/v1/responses/{response.id}")
        assert deleted.json() == {"id": response.id, "object": "response.deleted", "deleted": True}
        assert httpx.get(f"{url}/v1/responses/{response.id}").status_code == 404
        assert httpx.delete(f"{url}/v1/responses/{response.id}").status_code == 404
        assert _checkpoints(store) == 0


def test_chat_completions_metadata_names_the_thread(docs_index: str, tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["Chat answer.", "Next."])
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    with serve_in_thread(app) as url:
        client = _client(url)
        client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Hello?"}],
            metadata={"conversation_id": "conv_shared"},
            user="ana",
        )
        assert store.count_conversations() == 1
        (row,) = store._db.query("SELECT id, thread_id FROM ragworks_responses")
        assert row[1] == "conv_shared"
        followed = client.responses.create(model="chat", input="Go on?", previous_response_id=row[0])
        assert (followed.metadata or {}).get("conversation_id") == "conv_shared"
    assert _turns(model.history[1])[:2] == [("human", "Hello?"), ("ai", "Chat answer.")]


def test_a_streamed_chat_completion_is_stored_in_its_conversation(docs_index: str, tmp_path: Path) -> None:
    model = ScriptedChatModel(responses=["First streamed answer.", "Next."])
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    with serve_in_thread(app) as url:
        client = _client(url)
        stream = client.chat.completions.create(
            model="chat",
            messages=[{"role": "user", "content": "Hello?"}],
            metadata={"conversation_id": "conv_streamed"},
            stream=True,
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        (row,) = store._db.query("SELECT id, thread_id FROM ragworks_responses")
        stored = httpx.get(f"{url}/v1/responses/{row[0]}").json()
        followed = client.responses.create(model="chat", input="Go on?", previous_response_id=row[0])
    assert row[0].startswith("chatcmpl-") and row[1] == "conv_streamed"
    assert "First streamed answer." in json.dumps(stored["output"])
    assert (followed.metadata or {}).get("conversation_id") == "conv_streamed"
    # The stored stream's checkpoint holds the exchange: the next turn's model call sees it.
    assert _turns(model.history[1])[:2] == [("human", "Hello?"), ("ai", "First streamed answer.")]


def test_a_streamed_chat_completion_without_a_conversation_stores_nothing(
    docs_index: str, tmp_path: Path
) -> None:
    model = ScriptedChatModel(responses=["Plain streamed answer."])
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    with serve_in_thread(app) as url:
        stream = _client(url).chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Hello?"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert store.count_conversations() == 0
        assert store._db.query("SELECT COUNT(*) FROM ragworks_responses") == [(0,)]


def test_the_checkpoint_a_run_ended_on_is_known_without_reading_it_back(
    docs_index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.types.responses import ResponsesAgentRequest

    from ragworks.agents._thread import THREAD_KEY, Thread

    store = open_state(str(tmp_path / "s.db"))
    assert store is not None
    agent = _agent(docs_index, ScriptedChatModel(responses=["One."])).with_checkpointer(store.checkpointer)
    thread = Thread(thread_id="t1", response_id="resp_1")
    question = [{"role": "user", "content": "Hi?"}]
    agent.predict(ResponsesAgentRequest(input=question, custom_inputs={THREAD_KEY: thread.as_input()}))
    (latest,) = store.checkpointer.list({"configurable": {"thread_id": "t1"}}, limit=1)
    # The turn's retrieved chunks are not kept: the next turn starts them afresh.
    assert "documents" not in latest.checkpoint["channel_values"]
    assert [m.content for m in latest.checkpoint["channel_values"]["messages"]][-1] == "One."

    def no_reads(config: object) -> None:
        raise AssertionError("checkpoint_of read the thread back")

    # The saver noted the run's last checkpoint as it wrote it: finishing a turn costs no read.
    monkeypatch.setattr(store.checkpointer, "get_tuple", no_reads)
    assert store.checkpoint_of("t1", "resp_1") == latest.config["configurable"]["checkpoint_id"]
    store.close()


def test_retention_refuses_old_responses_and_sweeps_beyond_the_count(tmp_path: Path) -> None:
    store = open_state(str(tmp_path / "r.db"), retention=Retention(max_age_s=60, max_responses=3))
    assert store is not None
    from ragworks.serving.state import StoredResponse

    now = __import__("time").time()
    for n in range(6):
        created = now - 120 if n == 0 else now + n  # the first is past its age
        store.put(
            StoredResponse(
                id=f"r{n}", thread_id=f"t{n}", checkpoint_id="c", trace_id=f"tr{n}", created_at=created
            )
        )
    assert store.get("r0") is None and store.trace_id_for_response("r5") == "tr5"
    assert store.sweep() == 3  # r0 by age, r1 and r2 beyond the count
    assert [store.get(f"r{n}") is not None for n in range(6)] == [False] * 3 + [True] * 3
    store.close()


def test_an_unreachable_store_is_one_line_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        open_state("postgresql://nobody:secret@127.0.0.1:9/none")
    message = str(caught.value)
    assert "serving.state=postgresql://nobody:***@127.0.0.1:9/none" in message
    assert "secret" not in message and "\n" not in message


def _checkpoints(store: ConversationStore) -> int:
    return sum(1 for _ in store.checkpointer.list(None))


@pytest.fixture()
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every answer traced (the suite may run with sampling off)."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    mlflow.tracing.reset()
    yield
    monkeypatch.undo()
    mlflow.tracing.reset()


@pytest.mark.usefixtures("traced")
def test_mlflow_routes_store_only_when_asked_and_the_session_is_the_conversation(
    docs_index: str, tmp_path: Path
) -> None:
    import mlflow

    model = ScriptedChatModel(responses=["Plain.", "Named."], repeat_last=True)
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    ask = {"input": [{"role": "user", "content": "Question?"}]}
    with serve_in_thread(app) as url:
        assert httpx.post(f"{url}/invocations", json=ask, timeout=30).status_code == 200
        assert store.count_responses() == 0  # MLflow's route: stateless unless a conversation is named
        named = {**ask, "context": {"conversation_id": "conv_mlflow", "user_id": "u1"}}
        headers = {"x-mlflow-return-trace-id": "true"}
        body = httpx.post(f"{url}/invocations", json=named, headers=headers, timeout=30).json()
        assert body["metadata"]["conversation_id"] == "conv_mlflow"
        assert store.trace_id_for_response(body["id"]) == body["metadata"]["trace_id"]
    mlflow.flush_trace_async_logging()
    trace = mlflow.get_trace(body["metadata"]["trace_id"])
    assert trace is not None and trace.info.trace_metadata.get("mlflow.trace.session") == "conv_mlflow"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_an_unreachable_store_exits_with_one_line(
    docs_index: str, tmp_path: Path, workers: str
) -> None:
    import socket

    from typer.testing import CliRunner

    from ragworks.cli import app

    config = tmp_path / "agent.yaml"
    config.write_text(
        f"serving:\n  state: postgresql://u:pw@127.0.0.1:9/x\nretriever:\n  index: {docs_index}\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["serve", "--config", str(config), "--port", str(port), "--workers", workers]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "serving.state=postgresql://u:***@127.0.0.1:9/x" in errors[0]


def test_a_store_that_fails_while_serving_is_a_503_and_store_false_still_answers(
    docs_index: str, tmp_path: Path
) -> None:
    model = ScriptedChatModel(responses=["Fine."], repeat_last=True)
    app, store = _app(docs_index, model, str(tmp_path / "s.db"))
    with serve_in_thread(app) as url:
        client = _client(url)
        first = client.responses.create(model="chat", input="Question?")
        store.close()  # the database goes away under the running server
        for kwargs in ({}, {"previous_response_id": first.id}):
            with pytest.raises(openai.InternalServerError) as caught:
                client.responses.create(model="chat", input="Again?", **kwargs)  # type: ignore[arg-type]
            assert caught.value.status_code == 503
            assert "serving.state=" in caught.value.message and "store" in caught.value.message
        assert client.responses.create(model="chat", input="Alone?", store=False).output_text == "Fine."
        assert httpx.get(f"{url}/health").status_code == 200
