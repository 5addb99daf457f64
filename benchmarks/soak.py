"""A bounded soak of `ragworks serve`: many mixed requests, some streams cancelled, then what was left behind.

    python benchmarks/soak.py [--requests 20000] [--concurrency 16] [--cancel-every 10]

The server is `ragworks serve --config` on 127.0.0.1 (its own process, as in serving_load.py): the
offline model over a small index of the docs ragworks ships, every request traced to a SQLite store
in a temp dir. Requests cycle through four kinds: POST /invocations, POST /v1/responses, a streamed
/v1/responses and a streamed /v1/chat/completions; every `--cancel-every`-th stream is dropped by the
client after its first token (a provoked cancellation, not an error).

After a warm-up (a tenth of the requests, at most 1,000) and again at the end (once the traces are
stored), the server's resident memory, threads and open files are read from /proc. Printed: errors
(non-200, a stream without [DONE] or with an error event, a failed connection), traces stored of
those expected (every request, cancelled ones included; by status), and the three figures at both
points. Exits 1 when a promise fails: errors, missing traces, memory growth of 10 % or more after the
warm-up, or more threads or open files at the end than after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from serving_load import QUESTIONS, RAGWORKS, _drain, _env, _prepare, server  # this folder is on sys.path

KINDS = ("invocations", "responses", "responses-stream", "chat-stream")
MAX_MEMORY_GROWTH = 0.10


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    cancelled: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def error(self, what: str) -> None:
        """Count an unprovoked failure, keeping a few examples."""
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what[:300])


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """The server process as /proc shows it."""

    rss_mb: float
    threads: int
    open_files: int


def snapshot(pid: int) -> Snapshot:
    """Resident memory, thread count and open file descriptors of process `pid`."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return Snapshot(
        rss_mb=int(status["VmRSS"].split()[0]) / 1024,
        threads=int(status["Threads"]),
        open_files=len(os.listdir(f"/proc/{pid}/fd")),
    )


def settled(pid: int, *, quiet_s: float = 1.0, cap_s: float = 30.0) -> Snapshot:
    """A snapshot once threads and open files have not changed for `quiet_s` (closed connections and
    finished calls take a moment to be let go)."""
    last, since, start = snapshot(pid), time.monotonic(), time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() - start < cap_s:
        time.sleep(0.1)
        now = snapshot(pid)
        if (now.threads, now.open_files) != (last.threads, last.open_files):
            since = time.monotonic()
        last = now
    return last


def server_pid() -> int:
    """The `ragworks serve` process: this process's child whose command line says `serve`."""
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"serve" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
    raise SystemExit("Could not find the server process among this process's children.")


def _request(n: int) -> tuple[str, str, dict[str, object], bool]:
    """The n-th request: (kind, path, JSON body, streamed)."""
    kind = KINDS[n % len(KINDS)]
    question = QUESTIONS[n % len(QUESTIONS)]
    turns = [{"role": "user", "content": question}]
    if kind == "chat-stream":
        return kind, "/v1/chat/completions", {"model": "ragworks", "messages": turns, "stream": True}, True
    body: dict[str, object] = {"input": turns}
    if kind == "responses-stream":
        body["stream"] = True
    return kind, ("/invocations" if kind == "invocations" else "/v1/responses"), body, kind.endswith("stream")


async def _one(client: httpx.AsyncClient, n: int, *, cancel: bool, tally: Tally) -> None:
    kind, path, body, streamed = _request(n)
    tally.sent += 1
    tally.kinds[kind] += 1
    chunks: list[bytes] = []
    try:
        async with client.stream("POST", path, json=body) as response:
            async for chunk in response.aiter_raw():
                chunks.append(chunk)
                if cancel and b"delta" in chunk:
                    tally.cancelled += 1
                    return  # leaving the block closes the connection mid-stream
            status = response.status_code
    except httpx.HTTPError as exc:
        tally.error(f"{kind}: {exc!r}")
        return
    text = b"".join(chunks)
    if status != 200:
        tally.error(f"{kind}: {status} {text[:200]!r}")
    elif streamed and (b"data: [DONE]" not in text or _has_error_event(text)):
        tally.error(f"{kind}: broken stream {text[-200:]!r}")


def _has_error_event(text: bytes) -> bool:
    """A Responses `error` event or a chat-completions error chunk."""
    return b'"type": "error"' in text or b'data: {"error"' in text


def _cancelled(n: int, every: int) -> bool:
    """Whether the client drops the n-th request mid-stream: every `every`-th of the streamed ones."""
    if every <= 0 or not _request(n)[3]:
        return False
    stream_number = (n // len(KINDS)) * 2 + (n % len(KINDS) - 2)  # the last two kinds stream
    return stream_number % every == 0


async def load(url: str, *, start: int, count: int, concurrency: int, cancel_every: int) -> Tally:
    """Send requests start..start+count-1, `concurrency` at a time, on one client closed at the end."""
    tally = Tally()
    numbers = iter(range(start, start + count))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            for n in numbers:
                await _one(client, n, cancel=_cancelled(n, cancel_every), tally=tally)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally


def trace_statuses(db: Path) -> Counter[str]:
    """Traces in the store, by status."""
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT status, count(*) FROM trace_info GROUP BY status").fetchall()
    except sqlite3.Error:
        return Counter()
    return Counter({str(status): int(n) for status, n in rows})


def _merge(a: Tally, b: Tally) -> Tally:
    return Tally(
        sent=a.sent + b.sent,
        cancelled=a.cancelled + b.cancelled,
        errors=a.errors + b.errors,
        samples=(a.samples + b.samples)[:5],
        kinds=a.kinds + b.kinds,
    )


def report(
    tally: Tally, traces: Counter[str] | None, warm: Snapshot, end: Snapshot, seconds: float
) -> list[str]:
    """Print the figures (`traces` None: untraced); return the promises that failed."""
    print(
        f"requests: {tally.sent} in {seconds:.1f} s ({tally.sent / max(seconds, 1e-9):.0f}/s); "
        + ", ".join(f"{kind} {n}" for kind, n in sorted(tally.kinds.items()))
    )
    print(f"errors: {tally.errors} (provoked cancellations, not counted: {tally.cancelled})")
    for sample in tally.samples:
        print("    error:", sample)
    failed = []
    if traces is not None:
        stored = sum(traces.values())
        by_status = ", ".join(f"{status} {n}" for status, n in sorted(traces.items())) or "none"
        print(f"traces stored: {stored} of {tally.sent} expected ({by_status})")
        if stored != tally.sent:
            failed.append(f"{stored} traces stored of {tally.sent}")
    growth = (end.rss_mb - warm.rss_mb) / warm.rss_mb
    print(f"{'':<16}{'after warm-up':>15}{'at the end':>12}")
    print(f"{'resident MB':<16}{warm.rss_mb:>15.1f}{end.rss_mb:>12.1f}   ({growth:+.1%})")
    print(f"{'threads':<16}{warm.threads:>15}{end.threads:>12}")
    print(f"{'open files':<16}{warm.open_files:>15}{end.open_files:>12}")
    if tally.errors:
        failed.append(f"{tally.errors} errors")
    if growth >= MAX_MEMORY_GROWTH:
        failed.append(f"memory grew {growth:.1%} after the warm-up")
    if end.threads > warm.threads or end.open_files > warm.open_files:
        failed.append("threads or open files grew")
    return failed


def main() -> None:
    """Run the soak and print its figures; exit 1 when a promise fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="Requests after the warm-up.")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--cancel-every", type=int, default=10, help="Drop every n-th stream; 0: none.")
    parser.add_argument(
        "--untraced", action="store_true", help="MLFLOW_TRACE_SAMPLING_RATIO=0 (to tell tracing's share)."
    )
    args = parser.parse_args()
    warmup = min(1000, max(args.requests // 10, 20))
    with tempfile.TemporaryDirectory(prefix="ragworks-soak-") as name:
        tmp = Path(name)
        config = _prepare(tmp)
        os.chdir(tmp)  # the server's default experiment keeps its artifacts under ./mlruns
        serve = [*RAGWORKS, "serve", "--config", str(config), "--port", "{port}", "--log-level", "warning"]
        serve += ["--max-concurrency", str(max(64, args.concurrency))]
        traced = not args.untraced
        print(
            f"soak: {warmup} warm-up + {args.requests} requests, concurrency {args.concurrency}, "
            + ("traced" if traced else "untraced")
        )
        with server(serve, _env(tmp, traced=traced), log=tmp / "server.log") as url:
            pid = server_pid()
            kw = {"concurrency": args.concurrency, "cancel_every": args.cancel_every}
            first = asyncio.run(load(url, start=0, count=warmup, **kw))
            if traced:
                _drain(tmp, first.sent)
            warm = settled(pid)
            began = time.perf_counter()
            rest = asyncio.run(load(url, start=warmup, count=args.requests, **kw))
            seconds = time.perf_counter() - began
            tally = _merge(first, rest)
            if traced:
                _drain(tmp, tally.sent)
            end = settled(pid)
            traces = trace_statuses(tmp / "mlflow.db") if traced else None
        failed = report(tally, traces, warm, end, seconds)
        if failed:
            log = (tmp / "server.log").read_text(errors="replace")
            print("server log (tail):\n" + log[-2000:])
    if failed:
        print("FAILED: " + "; ".join(failed))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
