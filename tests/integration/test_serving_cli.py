"""`ragworks serve` from a config (several workers, tracing on) and from a logged model behave the same."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
import typer
from openai import OpenAI
from typer.testing import CliRunner

from ragworks.agents import build_agent
from ragworks.config import AgentConfig
from ragworks.serving import build_app, load_agent, serve_in_thread
from ragworks.serving.commands import register

QUESTIONS = ["Which files does the index folder hold?", "How are traces recorded for each request?"]
# A stand-in for `ragworks` until cli.py wires `register`; the command under test is the same.
SHIM = (
    "import typer; from ragworks.serving.commands import register; app = typer.Typer(); "
    "app.callback()(lambda: None); register(app); app()"
)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)
    register(app)
    return app


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], *, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"ragworks serve exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise AssertionError("ragworks serve did not become healthy")


@pytest.fixture()
def served_config(tmp_path: Path, docs_index: str) -> Iterator[tuple[str, str]]:
    """`ragworks serve --config --workers 2` in a subprocess, with a token and full tracing."""
    config = tmp_path / "agent.yaml"
    AgentConfig.load({"retriever": {"index": docs_index, "k": 3}}).to_yaml(config)
    port = _free_port()
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "RAGWORKS_API_TOKEN": "tok",
        "MLFLOW_TRACE_SAMPLING_RATIO": "1",
        "MLFLOW_TRACKING_URI": tracking,
    }
    args = ["serve", "--config", str(config), "--port", str(port), "--workers", "2", "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-c", SHIM, *args], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, tracking
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url: str, token: str = "unused") -> list[tuple[str, list[str]]]:
    client = OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=60)
    answers = []
    for question in QUESTIONS:
        response = client.responses.create(model="ragworks", input=question)
        ids = [s["id"] for s in response.model_extra["custom_outputs"]["sources"]]
        answers.append((response.output_text, ids))
    return answers


def test_serve_config_with_workers_and_tracing(served_config: tuple[str, str], docs_index: str) -> None:
    url, tracking = served_config
    served = _answers(url, "tok")
    with serve_in_thread(
        build_app(build_agent({"retriever": {"index": docs_index, "k": 3}}), api_token="")
    ) as local:
        assert served == _answers(local)
    headers = {"Authorization": "Bearer tok", "x-mlflow-return-trace-id": "true"}
    body = {"input": [{"role": "user", "content": QUESTIONS[0]}]}
    trace_id = httpx.post(url + "/v1/responses", json=body, headers=headers, timeout=60).json()["metadata"][
        "trace_id"
    ]
    client = mlflow.MlflowClient(tracking_uri=tracking)

    def complete_trace() -> Any:
        # Spans are exported as they end, so the AGENT root (which ends last) may arrive later.
        trace = client.get_trace(trace_id)
        assert any(span.parent_id is None for span in trace.data.spans), "root span not exported yet"
        return trace

    trace = _poll(complete_trace)
    span_types = {span.span_type for span in trace.data.spans}
    assert {"AGENT", "RETRIEVER"} <= span_types, span_types


def _poll(get: Any, *, timeout: float = 90) -> Any:  # export runs on a background queue
    deadline = time.monotonic() + timeout
    while True:
        try:
            return get()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def test_logged_model_serves_like_the_config(docs_index: str) -> None:
    from ragworks.agents.logged_model import log_agent

    config = {"retriever": {"index": docs_index, "k": 3}}
    info = log_agent(config)
    logged = build_app(load_agent(model_uri=info.model_uri), api_token="")
    built = build_app(load_agent(config=config), api_token="")
    with serve_in_thread(logged) as from_model, serve_in_thread(built) as from_config:
        assert _answers(from_model) == _answers(from_config)


def test_serve_reports_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(_cli(), ["serve", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 1 and "missing.yaml does not exist" in result.output
    result = runner.invoke(_cli(), ["serve", "--config", "a.yaml", "--model-uri", "models:/x/1"])
    assert result.exit_code == 1 and "not both" in result.output
    result = runner.invoke(_cli(), ["serve", "--model-uri", "models:/no-such-model/1"])
    assert result.exit_code == 1 and "Could not load the model" in result.output


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_on_a_busy_port_is_one_line_and_exit_1(tmp_path: Path, workers: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = str(sock.getsockname()[1])
        args = ["serve", "--config", str(tmp_path / "missing.yaml"), "--port", port, "--workers", workers]
        result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"Port {port} on 127.0.0.1 is already in use" in lines[0], lines
    assert "Serving" not in result.output and "startup complete" not in result.output
