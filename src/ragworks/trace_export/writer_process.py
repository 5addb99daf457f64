"""The trace-writer child process, seen from the server: start it, send a batch, read its report.

The child stores batches on its own interpreter (its own GIL) and is the only process that writes
to the tracking store (see `ragworks.trace_export.writer`). When it dies (a SIGBUS on a store that
turned read-only, an OOM kill, `kill -9`), the pipe closes: the batch in flight is reported failed
with how the process ended, and the next batch starts a new process.

Traces waiting for the writer are held as `EncodedTrace`s: the protocol's JSON of one trace, compressed
(about 4 KiB for the soak's traces, against about 28 KiB of live MLflow objects), so a backlog while
the writer catches up costs little memory and leaves little behind once it is stored.
"""

from __future__ import annotations

import contextlib
import json
import select
import signal
import subprocess
import sys
import threading
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Trace

from ragworks.trace_export.writer import StoreReport

REPLY_TIMEOUT = 60.0
"""Seconds a batch may take in the writer before it is killed and the batch retried."""
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
"""The folder holding this `ragworks`, so the writer process runs the same code as the server."""
_WRITER_MAIN = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    "from ragworks.trace_export.writer import main; main(sys.argv[1:])"
)


@dataclass(frozen=True, slots=True)
class EncodedTrace:
    """A finished trace as the writer reads it: its id and its `Trace.to_dict()` JSON, compressed."""

    trace_id: str
    data: bytes

    @classmethod
    def of(cls, trace: Trace) -> EncodedTrace:
        """Encode a trace (about 2 ms for three spans; done once, whoever sends it)."""
        text = json.dumps(trace.to_dict())
        return cls(trace.info.trace_id, zlib.compress(text.encode(), COMPRESSION_LEVEL))

    def json(self) -> str:
        """The trace's JSON object, as the protocol's batch line lists it."""
        return zlib.decompress(self.data).decode()


COMPRESSION_LEVEL = 1
"""zlib's fastest level: a quarter of the JSON's size for a fraction of a millisecond."""


class WriterDied(OSError):
    """The writer process ended (or hung) while storing a batch."""


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: 'killed by SIGBUS', 'exited with 1', 'still running'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with {returncode}"


class WriterProcess:
    """The writer child process: started at server startup, restarted when it is found dead."""

    def __init__(self, tracking_uri: str, *, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self._uri = tracking_uri
        self._reply_timeout = reply_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.restarts = 0
        """Processes started after the first one (each after a death)."""

    @property
    def pid(self) -> int | None:
        """The running process's id, if one runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self) -> subprocess.Popen[str]:
        """Start the process unless it runs (a dead one is replaced)."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            self.restarts += 1
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WRITER_MAIN, _PACKAGE_ROOT, self._uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return self._proc

    def store(self, traces: Sequence[Trace | EncodedTrace]) -> StoreReport:
        """Send a batch and return the writer's report; `WriterDied` when the process is gone."""
        encoded = [t if isinstance(t, EncodedTrace) else EncodedTrace.of(t) for t in traces]
        line = "[" + ",".join(t.json() for t in encoded) + "]\n"
        with self._lock:
            proc = self.start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except OSError as exc:  # BrokenPipeError: it died since the last batch
                raise WriterDied(f"the trace writer process died ({self._ended(proc)})") from exc
            ready, _, _ = select.select([proc.stdout], [], [], self._reply_timeout)
            if not ready:
                proc.kill()
                raise WriterDied(f"the trace writer gave no answer in {self._reply_timeout:.0f} s")
            reply = proc.stdout.readline()
        if not reply:
            raise WriterDied(f"the trace writer process died ({self._ended(proc)})")
        return _parse_report(reply, [t.trace_id for t in encoded])

    @staticmethod
    def _ended(proc: subprocess.Popen[str]) -> str:
        try:
            return describe_exit(proc.wait(timeout=5))
        except subprocess.TimeoutExpired:
            proc.kill()
            return "stopped answering; killed"

    def close(self) -> None:
        """End of input: the process finishes its batch and exits."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.closed:
            with contextlib.suppress(OSError):  # already gone
                proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _parse_report(line: str, trace_ids: Sequence[str]) -> StoreReport:
    """The writer's reply as a report; a batch-level error fails every trace of the batch."""
    try:
        reply = json.loads(line)
        if "error" in reply:
            return StoreReport(failed=dict.fromkeys(trace_ids, str(reply["error"])))
        return StoreReport(stored=tuple(reply["stored"]), failed=dict(reply["failed"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise WriterDied(f"the trace writer answered {line[:80]!r}: {exc}") from exc
