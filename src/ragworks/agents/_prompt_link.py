"""Link prompt versions to the trace being recorded, through MLflow's trace manager (feature-detected).

The public way, `mlflow.genai.load_prompt` inside the trace, also links the prompt to any active run
(`MlflowClient.link_prompt_version_to_run`: a read and a tag write of the run, documented as not
thread-safe), on every call. In an eval run every row pays that, from the harness' worker threads:
measured on a SQLite store on a loaded 2-core machine, 134 ms median per request inside a run (0.4 ms
outside one), against 0.06 ms through this hook. So each request registers the pinned versions with
the trace directly, the step of
`load_prompt` that links a trace (its tag `mlflow.linkedPrompts`, and the store's trace-prompt
links written with the trace); the run is linked once, when the eval run starts.

When this MLflow lacks the hook, `link` returns False and the caller falls back to `load_prompt`
(logged once there). `tests/integration/test_mlflow_prompts.py` fails if the hook is missing on a
supported MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities.model_registry import PromptVersion

try:
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    AVAILABLE = callable(getattr(InMemoryTraceManager, "register_prompt", None))
except ImportError:  # pragma: no cover - an MLflow without the trace manager
    AVAILABLE = False


def link(trace_id: str, versions: Sequence[PromptVersion]) -> bool:
    """Register `versions` with the in-progress trace `trace_id`; False when the hook is unavailable."""
    if not AVAILABLE:
        return False
    manager = InMemoryTraceManager.get_instance()
    for version in versions:
        manager.register_prompt(trace_id=trace_id, prompt=version)
    return True
