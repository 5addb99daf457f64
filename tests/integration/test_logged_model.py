"""log_agent end to end: log over a tiny index to a temp SQLite store, delete the original index, load
the model back (here, in a fresh process, and behind `mlflow models serve`) and get the same answers."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest

from ragworks.agents import build_agent
from ragworks.agents.logged_model import INDEX_ARTIFACT, log_agent

QUESTIONS = [
    [{"role": "user", "content": "How does the index combine BM25 and dense vectors?"}],
    [{"role": "user", "content": "How are agents logged?"}],
    [
        {"role": "user", "content": "What do traces contain?"},
        {"role": "assistant", "content": "Traces contain spans for retrieval and model calls [1]."},
        {"role": "user", "content": "And how is a logged agent loaded back?"},
    ],
]


def answer_of(response: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The final text and the sources of a Responses output (item ids differ between runs)."""
    texts = [c["text"] for item in response["output"] if item["type"] == "message" for c in item["content"]]
    return texts[-1], response["custom_outputs"]["sources"]


def streamed_answer(events: Any) -> tuple[str, list[dict[str, Any]]]:
    text, sources = "", []
    for event in events:
        data = event if isinstance(event, dict) else event.model_dump(exclude_none=True)
        if data["type"] == "response.output_text.delta":
            text += data["delta"]
        sources = (data.get("custom_outputs") or {}).get("sources", sources)
    return text, sources


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory, docs_index: str) -> Iterator[dict[str, Any]]:
    """The agent logged to a store of its own; the tracking URI is put back after the module.

    Left behind, later modules would write to this store, which `mlflow models serve` (its scoring
    server may run another MLflow) has migrated to that MLflow's schema.
    """
    tmp = tmp_path_factory.mktemp("logged-model")
    uri = f"sqlite:///{tmp}/mlflow.db"
    original = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    index = tmp / "index"
    shutil.copytree(docs_index, index)
    config = {"retriever": {"type": "local", "index": str(index), "k": 3}}
    info = log_agent(config, name="agent")
    agent = build_agent(config)
    expected = [answer_of(agent.predict({"input": q}).model_dump(exclude_none=True)) for q in QUESTIONS]
    streamed = [streamed_answer(agent.predict_stream({"input": q})) for q in QUESTIONS]
    assert [t for t, _ in streamed] == [t for t, _ in expected]
    shutil.rmtree(index)  # the logged model must not need the original folder
    yield {"info": info, "uri": uri, "expected": expected}
    mlflow.set_tracking_uri(original)


def test_model_files_config_and_requirements(logged: dict[str, Any]) -> None:
    info = logged["info"]
    local = Path(mlflow.artifacts.download_artifacts(info.model_uri))
    assert (local / "agent_entry.py").is_file()
    assert (local / "code" / "ragworks" / "agents" / "responses_agent.py").is_file()
    assert not list((local / "code").rglob("__pycache__"))
    flavor = info.flavors["python_function"]
    assert INDEX_ARTIFACT in flavor["artifacts"]
    assert flavor["config"]["retriever"]["k"] == 3  # the model_config
    requirements = (local / "requirements.txt").read_text()
    assert f"mlflow=={mlflow.__version__}" in requirements
    assert "ragworks" not in requirements.replace("ragworks/", "")
    example = json.loads((local / "input_example.json").read_text())
    assert example == {"input": [{"role": "user", "content": "What is ragworks?"}]}


def test_loaded_model_gives_the_same_answers(logged: dict[str, Any]) -> None:
    model = mlflow.pyfunc.load_model(logged["info"].model_uri)
    shipped = Path(model.get_raw_model().config.retriever.index)
    assert shipped.is_dir() and INDEX_ARTIFACT in shipped.parts
    for question, expected in zip(QUESTIONS, logged["expected"], strict=True):
        assert answer_of(model.predict({"input": question})) == expected
        text, sources = streamed_answer(model.predict_stream({"input": question}))
        assert (text, sources) == expected
        assert any(s["cited"] for s in sources)


def test_loaded_in_a_fresh_process(logged: dict[str, Any], tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys
        import mlflow
        model = mlflow.pyfunc.load_model(sys.argv[1])
        import ragworks
        questions = json.loads(sys.argv[2])
        answers = []
        for q in questions:
            out = model.predict({"input": q})
            answers.append([out["output"][-1]["content"][0]["text"], out["custom_outputs"]["sources"]])
        print(json.dumps({"ragworks": ragworks.__file__, "answers": answers}))
        """
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged["uri"]}
    done = subprocess.run(
        [sys.executable, "-c", script, logged["info"].model_uri, json.dumps(QUESTIONS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["ragworks"]).parts[-3] == "code"  # the source shipped in the model, not the install
    assert [tuple(a) for a in result["answers"]] == logged["expected"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(base: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        assert proc.poll() is None, "mlflow models serve exited early"
        try:
            if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail("mlflow models serve did not answer /ping in time")


def test_mlflow_models_serve_answers_invocations(logged: dict[str, Any], tmp_path: Path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged["info"].model_uri]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": logged["uri"]}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base, proc, time.monotonic() + 60)
        reply = httpx.post(f"{base}/invocations", json={"input": QUESTIONS[1]}, timeout=30)
        assert reply.status_code == 200, reply.text
        text, sources = answer_of(reply.json())
        assert (text, sources) == logged["expected"][1]
        assert "[" in text and any(s["cited"] for s in sources)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own process group: the CLI and its workers
        proc.wait(timeout=20)
        log.close()
