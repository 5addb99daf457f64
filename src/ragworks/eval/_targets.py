"""What a suite runs against: a `predict_fn(**inputs)` from an agent, a model URI, a config or a callable.

Example:
    >>> predict = make_predict_fn(lambda request: {"echo": request["input"][-1]["content"]})
    >>> predict(question="What is BM25?")
    {'echo': 'What is BM25?'}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ragworks.config import AgentConfig
from ragworks.errors import EvalError

Request: TypeAlias = dict[str, Any]
"""A Responses request as JSON (Any: JSON values)."""


@runtime_checkable
class Predictor(Protocol):
    """Anything with `predict(request)`: our agents, MLflow pyfunc models, ResponsesAgents."""

    def predict(self, request: Any) -> object:  # Any: a request dict or a ResponsesAgentRequest
        """Answer one request."""
        ...


Target: TypeAlias = Predictor | str | Path | Mapping[str, object] | AgentConfig | Callable[[Request], object]
"""An agent, a model URI, an AgentConfig / dict / YAML path, or a callable(request)."""
PredictFn: TypeAlias = Callable[..., object]
"""`predict_fn(**inputs) -> JSON`, the shape `mlflow.genai.evaluate` calls."""


def to_request(inputs: Mapping[str, Any]) -> Request:
    """A Responses request from suite inputs: a question becomes one user message (Any: JSON)."""
    if "input" in inputs:
        return dict(inputs)
    if "messages" in inputs:
        return {"input": inputs["messages"], **{k: v for k, v in inputs.items() if k != "messages"}}
    extra = {k: v for k, v in inputs.items() if k != "question"}
    return {"input": [{"role": "user", "content": inputs["question"]}], **extra}


def plain(output: object) -> object:
    """Pydantic responses as plain dicts, so MLflow stores and scorers read JSON."""
    dump = getattr(output, "model_dump", None)
    if callable(dump):
        return dump(exclude_none=True)
    return output


def make_predict_fn(target: Target) -> PredictFn:
    """A predict_fn(**inputs) -> plain JSON for `mlflow.genai.evaluate`.

    Raises:
        EvalError: the target is none of the accepted kinds.
    """
    call = resolve_target(target)

    def predict_fn(**inputs: Any) -> object:  # Any: the suite row's JSON inputs
        return plain(call(to_request(inputs)))

    return predict_fn


def bounded(predict_fn: PredictFn, limit: int) -> PredictFn:
    """`predict_fn` with at most `limit` calls at once (MLflow's harness sizes its own, larger pools)."""
    slots = threading.BoundedSemaphore(max(1, limit))

    def predict(**inputs: Any) -> object:  # Any: the suite row's JSON inputs
        with slots:
            return predict_fn(**inputs)

    return predict


def is_model_uri(target: str) -> bool:
    """Whether a string names a logged model (`models:/`, `runs:/`, `m-<id>`, a URI) rather than a file."""
    return target.startswith(("models:/", "runs:/", "m-")) or ("://" in target and not Path(target).exists())


def resolve_target(target: Target) -> Callable[[Request], object]:
    """The callable(request) behind a target: a loaded model's or a built agent's `predict`."""
    if isinstance(target, str) and is_model_uri(target):
        import mlflow

        uri = f"models:/{target}" if target.startswith("m-") else target
        return mlflow.pyfunc.load_model(uri).predict
    if isinstance(target, (str, Path, Mapping, AgentConfig)):
        from ragworks.agents import build_agent

        config = dict(target) if isinstance(target, Mapping) else target
        agent: Predictor = build_agent(config)  # its predict takes a request dict as well as the model
        return agent.predict
    if isinstance(target, Predictor):
        return target.predict
    if callable(target):
        return target
    raise EvalError(f"Cannot evaluate {type(target).__name__}: pass an agent, a model URI or a config.")
