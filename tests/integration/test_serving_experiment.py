"""Served traces land in the experiment the server was given and carry the request id; `--workers N` sum
their metrics into every worker's `/metrics`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest
from mlflow.entities import Trace
from prometheus_client.parser import text_string_to_metric_families

from ragworks.agents import build_agent
from ragworks.config import AgentConfig
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving._dispatch import REQUEST_ID_TAG
from ragworks.trace_export.experiment import use_experiment

QUESTION = [{"role": "user", "content": "What does the index folder hold?"}]
SHIM = (
    "import typer; from ragworks.serving.commands import register; app = typer.Typer(); "
    "app.callback()(lambda: None); register(app); app()"
)


@pytest.fixture()
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A temp SQLite store with every trace kept."""
    monkeypatch.delenv("MLFLOW_TRACE_SAMPLING_RATIO", raising=False)
    original = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.tracing.reset()
    yield uri
    mlflow.set_tracking_uri(original)
    mlflow.tracing.reset()


def _traces(experiment: str, client: mlflow.MlflowClient, *, count: int, timeout: float = 60) -> list[Trace]:
    """The complete traces (root span stored) of `experiment`, once there are `count` of them."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    deadline = time.monotonic() + timeout
    while True:
        mlflow.flush_trace_async_logging()
        found = client.search_traces(locations=[experiment_id])
        complete = [t for t in found if any(s.parent_id is None for s in t.data.spans)]
        if len(complete) >= count or time.monotonic() > deadline:
            return complete
        time.sleep(0.25)


def test_served_traces_land_in_the_named_experiment_with_the_request_id(
    tracking: str, docs_index: str
) -> None:
    use_experiment("prod-served")
    agent = build_agent({"retriever": {"index": docs_index, "k": 2}})
    with serve_in_thread(build_app(agent, api_token="")) as url:
        named = {"x-request-id": "req-7"}
        sent = httpx.post(url + "/v1/responses", json={"input": QUESTION}, headers=named)
        made = httpx.post(url + "/v1/responses", json={"input": QUESTION, "stream": True})
    assert sent.status_code == 200 and made.status_code == 200
    traces = _traces("prod-served", mlflow.MlflowClient(), count=2)
    by_tag = {t.info.tags[REQUEST_ID_TAG]: t for t in traces}
    assert set(by_tag) == {"req-7", made.headers["x-request-id"]}
    for request_id, trace in by_tag.items():
        assert trace.info.client_request_id == request_id
    found = mlflow.search_traces(filter_string="trace.client_request_id = 'req-7'", return_type="list")
    assert [t.info.trace_id for t in found] == [by_tag["req-7"].info.trace_id]
    default = mlflow.MlflowClient().search_traces(locations=["0"])
    assert default == []  # nothing in "Default"


@pytest.mark.slow
def test_serve_workers_with_experiment_sum_metrics_and_store_traces_there(
    tmp_path: Path, docs_index: str
) -> None:
    config = tmp_path / "agent.yaml"
    AgentConfig.load(
        {"retriever": {"index": docs_index, "k": 2}, "tracking": {"experiment": "from-config"}}
    ).to_yaml(config)
    port = _free_port()
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACE_SAMPLING_RATIO": "1", "MLFLOW_TRACKING_URI": tracking}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    args = ["serve", "--config", str(config), "--port", str(port), "--workers", "2", "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-c", SHIM, *args], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        sent = 8
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(sent):
                named = {"x-request-id": f"w{i}"}
                reply = client.post("/v1/responses", json={"input": QUESTION}, headers=named)
                assert reply.status_code == 200, reply.text
            # Each scrape reaches one worker or the other; every one answers the sum over both.
            for _ in range(4):
                with httpx.Client(base_url=url, timeout=10) as fresh:  # a new connection, any worker
                    assert _answered(fresh.get("/metrics").text) == sent
        traces = _traces("from-config", mlflow.MlflowClient(tracking_uri=tracking), count=sent)
        assert sorted(t.info.client_request_id for t in traces) == sorted(f"w{i}" for i in range(sent))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answered(text: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "ragworks_requests_total" and s.labels.get("route") == "/v1/responses"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], *, timeout: float = 240) -> None:
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
