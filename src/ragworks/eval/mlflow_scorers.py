"""MLflow's built-in scorers by name: `mlflow:RelevanceToQuery`, `mlflow:Guidelines=<text>`, ...

The name after `mlflow:` is a built-in scorer class of `mlflow.genai.scorers`; MLflow runs it, with
the configured LLM judge's model in MLflow's URI form (`openai:<m>` -> `openai:/<m>`,
`databricks:<ep>` -> `databricks:/<ep>`). `Guidelines` and `ConversationalGuidelines` take their
guidelines after `=`.

Example:
    >>> mlflow_model_uri("openai:gpt-4o-mini")
    'openai:/gpt-4o-mini'
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ragworks.errors import ConfigError

if TYPE_CHECKING:
    from mlflow.genai.scorers import Scorer

    from ragworks.eval.judges import Judge

PREFIX = "mlflow:"


def is_mlflow_name(spec: object) -> bool:
    """True for a `mlflow:<Scorer>` name."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def builtin_names() -> list[str]:
    """The built-in scorer classes this MLflow offers, by class name."""
    from mlflow.genai import scorers
    from mlflow.genai.scorers.builtin_scorers import BuiltInScorer

    return sorted(
        name
        for name in scorers.__all__
        if inspect.isclass(obj := getattr(scorers, name, None)) and issubclass(obj, BuiltInScorer)
    )


def mlflow_model_uri(judge_name: str) -> str | None:
    """The judge's model in MLflow's form, or None for an offline judge."""
    provider, _, model = judge_name.partition(":")
    if provider in {"openai", "databricks"} and model:
        return f"{provider}:/{model.lstrip('/')}"
    return None


def mlflow_scorer(spec: str, *, judge: Judge) -> Scorer:
    """The MLflow built-in scorer a `mlflow:<Name>[=<guidelines>]` name says, judged by `judge`'s model.

    Raises:
        ConfigError: the name is no built-in scorer (the message lists them), the judge is offline
            while the scorer needs a model, or MLflow refused the arguments.
    """
    from mlflow.genai import scorers

    name, _, argument = spec.removeprefix(PREFIX).partition("=")
    available = builtin_names()
    if name not in available:
        raise ConfigError(
            f"Unknown MLflow scorer {spec!r}. Available: {', '.join(PREFIX + n for n in available)}."
        )
    cls = getattr(scorers, name)
    fields = getattr(cls, "model_fields", {})
    kwargs: dict[str, Any] = {}  # Any: the scorer's pydantic fields
    if "guidelines" in fields:
        if not argument.strip():
            raise ConfigError(f"{spec!r} needs its guidelines: write {PREFIX}{name}=<the guidelines>.")
        kwargs["guidelines"] = argument
    elif argument:
        raise ConfigError(f"{PREFIX}{name} takes no argument after '='.")
    if "model" in fields:
        model = mlflow_model_uri(judge.name)
        if model is None:
            raise ConfigError(
                f"{PREFIX}{name} needs an LLM judge, not {judge.name!r}: "
                "pass --judge openai:<model> or --judge databricks:<endpoint>."
            )
        kwargs["model"] = model
    try:
        return cls(**kwargs)
    except Exception as exc:  # pydantic / MLflow validation: say which scorer and why
        raise ConfigError(f"MLflow refused {spec!r}: {exc}") from None


__all__ = ["PREFIX", "builtin_names", "is_mlflow_name", "mlflow_model_uri", "mlflow_scorer"]
