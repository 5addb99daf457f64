"""Bounded HTTP load against `ragworks serve`, a bare FastAPI endpoint and `mlflow models serve`.

    python benchmarks/serving_load.py [--requests 2000] [--concurrency 32] [--skip-mlflow-serve]
    python benchmarks/serving_load.py --conversations [--requests 2000] [--concurrency 32]

Everything runs on 127.0.0.1 and stops by itself. One small index (the docs ragworks ships, hashing
embeddings) and the offline model; each server is its own process, started and stopped here:

    bare FastAPI            uvicorn + FastAPI returning a canned ragworks answer (same bytes, same events)
    ragworks untraced       `ragworks serve --config`, MLFLOW_TRACE_SAMPLING_RATIO=0
    ragworks traced         the same with every request traced (SQLite store in a temp dir)
    mlflow models serve     the same agent logged with `log_agent`, served by MLflow, traced and untraced

Each target gets a warm-up, then `--requests` POST /invocations (non-streaming) at `--concurrency`,
then `--requests` streamed requests (POST /v1/responses with "stream": true; MLflow's server cannot
stream, so it has none). Reported: requests/s, p50/p99 latency, p50/p99 time to the first body byte
of streamed answers, errors (non-200, a stream without [DONE], or an error event), and the CPU the
server's processes spent per request during the load (`cpu ms`, read from /proc: on a shared machine
it moves far less than requests/s, so two versions can be compared there too). For traced
targets it also waits for MLflow's background export to store every trace, and reports how long that
took and the rate sustained with the export included (the request path alone hides its cost), and
the traces kept per second over that time (MLflow's exporter drops traces once its queue is full).

`--conversations` measures conversation state instead: the checkpointer's cost per request in process
(SQLite: a stateful turn, its checkpoint and its stored response, less the same turn stateless; medians),
then one traced server under POST /v1/responses, stateless (`store: false`) and stateful (each client
chaining `previous_response_id` through 4-turn conversations), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

QUESTIONS = (
    "What is ragworks?",
    "How does hybrid search work?",
    "How do I look at the traces of my agent?",
    "How do I log an agent as an MLflow model?",
    "How do I serve the agent?",
)
WARMUP = 20
"""Requests sent before each timed phase."""
RAGWORKS = [sys.executable, "-c", "from ragworks.cli import main; main()"]
BARE_SERVER = """
import sys, json, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
canned = json.load(open(sys.argv[2]))
body, events = canned["body"].encode(), [e.encode() for e in canned["events"]]
app = FastAPI()
@app.get("/health")
async def health(): return {"status": "healthy"}
@app.post("/invocations")
async def invocations(request: Request):
    await request.body()
    return Response(body, media_type="application/json")
@app.post("/v1/responses")
async def responses(request: Request):
    await request.body()
    async def gen():
        for event in events:
            yield event
    return StreamingResponse(gen(), media_type="text/event-stream")
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


@dataclass
class Result:
    """One load run."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    sustained: float | None = None
    """Requests/s with the time to store every trace included (traced targets only)."""
    kept: float | None = None
    """Traces stored per second over the same time: `sustained`, less any traces the server dropped."""
    cpu_ms: float | None = None
    """CPU time of the server's processes (writer included) per request during the load, in ms."""

    def row(self) -> str:
        """One line of the report."""
        rps = self.requests / self.seconds if self.seconds else 0.0
        ttfb = (
            f"{_pct(self.first_bytes, 50):8.1f} {_pct(self.first_bytes, 99):8.1f}"
            if self.first_bytes
            else (f"{'-':>8} {'-':>8}")
        )
        cpu = f"{self.cpu_ms:8.2f}" if self.cpu_ms is not None else f"{'-':>8}"
        return (
            f"{self.name:<38} {self.requests:>6} {rps:>9.1f} {_pct(self.latencies, 50):8.1f} "
            f"{_pct(self.latencies, 99):8.1f} {ttfb} {self.errors:>6} {cpu}"
        )


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


async def _one(
    client: httpx.AsyncClient, path: str, body: dict[str, object], stream: bool, result: Result
) -> None:
    start = time.perf_counter()
    first = None
    chunks = []
    try:
        async with client.stream("POST", path, json=body) as response:
            async for chunk in response.aiter_raw():
                if first is None:
                    first = time.perf_counter() - start
                chunks.append(chunk)
            status = response.status_code
    except httpx.HTTPError as exc:
        result.errors += 1
        result.error_samples.append(repr(exc)[:200])
        return
    elapsed = time.perf_counter() - start
    text = b"".join(chunks)
    failed = status != 200 or (stream and (b"data: [DONE]" not in text or b'"type": "error"' in text))
    if failed:
        result.errors += 1
        result.error_samples.append(f"{status} {text[:200]!r}")
        return
    result.latencies.append(elapsed)
    if stream and first is not None:
        result.first_bytes.append(first)


async def run_load(name: str, url: str, *, requests: int, concurrency: int, stream: bool) -> Result:
    """Send `requests` requests, `concurrency` at a time; return their timings."""
    result = Result(name=name, requests=requests)
    path = "/v1/responses" if stream else "/invocations"
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counter = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for n in counter:
                body: dict[str, object] = {
                    "input": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}]
                }
                if stream:
                    body["stream"] = True
                await _one(client, path, body, stream, result)

        await _warm_up(client, path, stream)
        pid = _PIDS.get(url)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
        if pid:
            result.cpu_ms = (cpu_seconds(pid) - cpu_before) / max(requests, 1) * 1000
    return result


async def _warm_up(client: httpx.AsyncClient, path: str, stream: bool) -> None:
    body: dict[str, object] = {"input": [{"role": "user", "content": QUESTIONS[0]}], "stream": stream}
    for _ in range(WARMUP):
        await client.post(path, json=body)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PIDS: dict[str, int] = {}
"""The process id of each running server, by its URL."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc; 0 elsewhere).

    On a shared machine requests/s moves with everyone else's load; the CPU a server spends per
    request moves far less, so old and new code can be compared even there.
    """
    tick, total, todo, seen = os.sysconf("SC_CLK_TCK"), 0.0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo += [int(c) for c in children]
        except (OSError, ValueError, IndexError):
            continue
    return total


@contextmanager
def server(args: list[str], env: dict[str, str], *, log: Path, health: str = "/health") -> Iterator[str]:
    """Start a server process on a free port ({port} in args), wait for health, stop it at the end."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [a.replace("{port}", str(port)) for a in args], env=env, stdout=out, stderr=out
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url + health, proc, log)
            _PIDS[url] = proc.pid
            yield url
        finally:
            _PIDS.pop(url, None)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited ({proc.returncode}); log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server not healthy after {timeout}s; log:\n{log.read_text()[-3000:]}")


def _env(tmp: Path, *, traced: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAGWORKS_API_TOKEN"}
    env.update(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        MLFLOW_TRACE_SAMPLING_RATIO="1" if traced else "0",
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="true",
    )
    return env


def _canned(url: str, path: Path) -> None:
    """Record one real answer and one real stream, for the bare server to replay byte for byte."""
    ask = {"input": [{"role": "user", "content": QUESTIONS[0]}]}
    body = httpx.post(url + "/invocations", json=ask, timeout=60).text
    stream = httpx.post(url + "/v1/responses", json={**ask, "stream": True}, timeout=60).text
    events = [block + "\n\n" for block in stream.split("\n\n") if block]
    path.write_text(json.dumps({"body": body, "events": events}))


def _prepare(tmp: Path) -> Path:
    """A small index over the shipped docs and an agent config for it."""
    from importlib.resources import files

    from ragworks.config import AgentConfig
    from ragworks.retrieval.ingest import ingest

    docs = Path(str(files("ragworks").joinpath("data/docs")))
    ingest([docs], tmp / "index", embeddings="hashing")
    config = tmp / "agent.yaml"
    AgentConfig.load({"retriever": {"index": str(tmp / "index"), "k": 4}}).to_yaml(config)
    return config


def _log_model(tmp: Path, config: Path) -> str:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp / 'mlflow.db'}"
    os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = "0"
    import mlflow

    from ragworks.agents.logged_model import log_agent

    artifacts = (tmp / "artifacts").as_uri()  # with the store in tmp, not ./mlruns
    mlflow.set_experiment(experiment_id=mlflow.create_experiment("serving-load", artifact_location=artifacts))
    return str(log_agent(str(config)).model_uri)


def _traces(tmp: Path) -> int:
    """How many traces the SQLite store holds (traces beyond MLflow's export queue are dropped)."""
    import sqlite3

    try:
        with sqlite3.connect(tmp / "mlflow.db") as db:
            return int(db.execute("SELECT count(*) FROM trace_info").fetchone()[0])
    except sqlite3.Error:
        return 0


def _run(name: str, cmd: list[str], tmp: Path, args: argparse.Namespace, **kw: object) -> list[Result]:
    """Load one server, non-streaming then streaming (if it can stream); print a row per phase.

    For a traced server each phase also waits until its traces are stored, and sets `.sustained`:
    the phase's requests over its load time plus that wait (exporting traces in the background
    lets a server answer faster than it can keep up with).
    """
    traced = bool(kw.pop("traced", False))
    streams = [False] if " --model-uri" in name or "mlflow" in name else [False, True]
    kwargs = {"requests": args.requests, "concurrency": args.concurrency}
    results = []
    with server(cmd, _env(tmp, traced=traced), log=tmp / "server.log", **kw) as url:  # type: ignore[arg-type]
        for stream in streams:
            before = _traces(tmp)
            label = name + (" (stream)" if stream else "")
            result = asyncio.run(run_load(label, url, stream=stream, **kwargs))
            print(result.row(), flush=True)
            for sample in result.error_samples[:3]:
                print("    error:", sample)
            if traced:
                sent = result.requests + WARMUP
                stored, drain = _drain(tmp, before + sent)
                result.sustained = result.requests / (result.seconds + drain)
                result.kept = (stored - before) / (result.seconds + drain)
                print(
                    f"    traces stored: {stored - before} of {sent}; the last {drain:.1f} s after the "
                    f"load (sustained, export included: {result.sustained:.1f} req/s; "
                    f"traces kept: {result.kept:.1f}/s)"
                )
            results.append(result)
    return results


def _drain(tmp: Path, expected: int, *, idle: float = 15, cap: float = 600) -> tuple[int, float]:
    """Wait until `expected` traces are stored, or none arrived for `idle` s; (count, seconds waited)."""
    start = last_change = time.monotonic()
    count = _traces(tmp)
    while count < expected and time.monotonic() - last_change < idle and time.monotonic() - start < cap:
        time.sleep(0.1)
        now = _traces(tmp)
        if now != count:
            count, last_change = now, time.monotonic()
    return count, last_change - start  # when the last trace arrived


TURNS = 4
"""Turns per conversation in the stateful load."""


async def run_conversation_load(
    name: str, url: str, *, requests: int, concurrency: int, stateful: bool
) -> Result:
    """POST /v1/responses: `store: false` each time, or conversations chained by previous_response_id."""
    result = Result(name=name, requests=requests)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    counter = iter(range(requests))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            previous = None
            for n in counter:
                body: dict[str, object] = {"input": QUESTIONS[n % len(QUESTIONS)], "store": stateful}
                if previous and n % TURNS:
                    body["previous_response_id"] = previous
                start = time.perf_counter()
                response = await client.post("/v1/responses", json=body)
                if response.status_code != 200:
                    result.errors += 1
                    result.error_samples.append(f"{response.status_code} {response.text[:200]}")
                    continue
                result.latencies.append(time.perf_counter() - start)
                previous = response.json()["id"] if stateful else None

        await _warm_up(client, "/v1/responses", False)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - start
    return result


def checkpointer_cost(config: Path, tmp: Path, *, turns: int = 300) -> dict[str, float]:
    """Median ms of a stateless turn and of a stateful one (run, checkpoint, stored response), in process.

    Wall time and this process's CPU time, each turn measured alone: on a shared machine the CPU time
    is what the turn costs, the wall time what it waited too.
    """
    import statistics

    os.environ["MLFLOW_TRACE_SAMPLING_RATIO"] = "0"
    from mlflow.types.responses import ResponsesAgentRequest

    from ragworks.agents import build_agent
    from ragworks.agents._thread import THREAD_KEY, Thread
    from ragworks.serving.conversations import Turn, finish
    from ragworks.serving.state import open_state

    store = open_state(str(tmp / "bench-state.db"))
    assert store is not None
    plain = build_agent(str(config))
    stateful = plain.with_checkpointer(store.checkpointer)
    times: dict[str, list[float]] = {"plain": [], "stateful": [], "plain_cpu": [], "stateful_cpu": []}
    checkpoint = None
    for n in range(turns + WARMUP):
        question = {"input": [{"role": "user", "content": QUESTIONS[n % len(QUESTIONS)]}]}
        start, cpu = time.perf_counter(), time.process_time()
        plain.predict(ResponsesAgentRequest(**question))
        times["plain"].append(1000 * (time.perf_counter() - start))
        times["plain_cpu"].append(1000 * (time.process_time() - cpu))
        if n % TURNS == 0:
            checkpoint = None
        thread = Thread(thread_id=f"bench-{n // TURNS}", response_id=f"resp_{n}", checkpoint_id=checkpoint)
        start, cpu = time.perf_counter(), time.process_time()
        request = ResponsesAgentRequest(**question, custom_inputs={THREAD_KEY: thread.as_input()})
        response = stateful.predict(request)
        body = {"id": thread.response_id, **response.model_dump(exclude_none=True)}
        finish(store, Turn(thread=thread), body, None)
        times["stateful"].append(1000 * (time.perf_counter() - start))
        times["stateful_cpu"].append(1000 * (time.process_time() - cpu))
        checkpoint = store.get(thread.response_id).checkpoint_id  # type: ignore[union-attr]
    store.close()
    return {name: statistics.median(values[WARMUP:]) for name, values in times.items()}


def conversations(config: Path, tmp: Path, serve: list[str], args: argparse.Namespace) -> None:
    """The `--conversations` report (module doc)."""
    cost = checkpointer_cost(config, tmp)
    for kind, suffix in (("CPU", "_cpu"), ("wall", "")):
        plain, stateful = cost["plain" + suffix], cost["stateful" + suffix]
        print(
            f"checkpointer cost per request (SQLite, in process, {TURNS}-turn conversations, {kind} time): "
            f"median {stateful - plain:.2f} ms (stateless turn {plain:.2f} ms, stateful {stateful:.2f} ms)"
        )
    kwargs = {"requests": args.requests, "concurrency": args.concurrency}
    rows = []
    with server(serve, _env(tmp, traced=True), log=tmp / "server.log") as url:
        for stateful_load in (False, True, False, True):  # interleaved: drift on a shared machine cancels
            label = "ragworks serve, traced, " + ("stateful" if stateful_load else "stateless")
            result = asyncio.run(run_conversation_load(label, url, stateful=stateful_load, **kwargs))
            print(result.row(), flush=True)
            for sample in result.error_samples[:3]:
                print("    error:", sample)
            rows.append(result)
    stateless_rps = sum(_rps(r) for r in rows[0::2]) / 2
    stateful_rps = sum(_rps(r) for r in rows[1::2]) / 2
    print(
        f"traced throughput, stateful / stateless: {stateful_rps:.1f} / {stateless_rps:.1f} req/s = "
        f"{stateful_rps / max(stateless_rps, 1e-9):.3f}"
    )


def main() -> None:
    """Run every target and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="`ragworks serve --workers`.")
    parser.add_argument(
        "--skip-mlflow-serve", action="store_true", help="Do not log the agent or run MLflow's."
    )
    parser.add_argument(
        "--conversations", action="store_true", help="Conversation state: checkpointer cost, stateful load."
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragworks-load-") as name:
        tmp = Path(name)
        config = _prepare(tmp)
        opts = [
            "--port",
            "{port}",
            "--log-level",
            "warning",
            "--workers",
            str(args.workers),
            "--max-concurrency",
            str(max(64, args.concurrency)),
        ]
        serve = [*RAGWORKS, "serve", "--config", str(config), *opts]
        print(
            f"{args.requests} requests a run, concurrency {args.concurrency}, {os.cpu_count()} CPUs, loopback"
        )
        print(
            f"{'target':<38} {'reqs':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ttfb50':>8} "
            f"{'ttfb99':>8} {'errors':>6} {'cpu ms':>8}"
        )
        if args.conversations:
            conversations(config, tmp, serve, args)
            return
        with server(serve, _env(tmp, traced=False), log=tmp / "ragworks.log") as url:
            _canned(url, tmp / "canned.json")
        _run(
            "bare FastAPI, canned",
            [sys.executable, "-c", BARE_SERVER, "{port}", str(tmp / "canned.json")],
            tmp,
            args,
        )
        _run("ragworks serve, untraced", serve, tmp, args)
        traced = _run("ragworks serve, traced", serve, tmp, args, traced=True)
        if not args.skip_mlflow_serve:
            mlflow_traced, ours_traced = _mlflow_serve(tmp, config, opts, args)
            for label, ours in (("--config", traced[0]), ("--model-uri", ours_traced)):
                ratio = _rps(ours) / max(_rps(mlflow_traced), 1e-9)
                sustained = (ours.sustained or 0) / max(mlflow_traced.sustained or 0, 1e-9)
                kept = (ours.kept or 0) / max(mlflow_traced.kept or 0, 1e-9)
                print(
                    f"ragworks serve {label} / mlflow models serve, both traced, non-streaming: "
                    f"{ratio:.2f}x during the load, {sustained:.2f}x sustained (trace export included), "
                    f"{kept:.2f}x in traces kept per second"
                )


def _rps(result: Result) -> float:
    return result.requests / result.seconds if result.seconds else 0.0


def _mlflow_serve(
    tmp: Path, config: Path, opts: list[str], args: argparse.Namespace
) -> tuple[Result, Result]:
    """MLflow's server and ours on the same logged model; (MLflow traced, ragworks traced)."""
    model_uri = _log_model(tmp, config)
    mlflow_cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "-p",
        "{port}",
        "-h",
        "127.0.0.1",
        "--env-manager",
        "local",
        "-w",
        "1",
    ]
    ragworks_cmd = [*RAGWORKS, "serve", "--model-uri", model_uri, *opts]
    traced = _run("mlflow models serve, traced", mlflow_cmd, tmp, args, traced=True, health="/ping")[0]
    ours = _run("ragworks serve --model-uri, traced", ragworks_cmd, tmp, args, traced=True)[0]
    _run("mlflow models serve, untraced", mlflow_cmd, tmp, args, health="/ping")
    _run("ragworks serve --model-uri, untraced", ragworks_cmd, tmp, args)
    return traced, ours


if __name__ == "__main__":
    main()
