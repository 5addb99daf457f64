"""The search space of `ragworks tune`: which config fields a trial may change, over which values.

A space is a mapping of dotted config paths to parameter specs, written in YAML (`--space FILE`):

    retriever.k: {type: int, low: 1, high: 10}
    retriever.mode: {type: categorical, choices: [hybrid, bm25, dense]}
    retriever.options.fusion_weight: {type: float, low: 0.0, high: 1.0, step: 0.05,
                                      when: {retriever.mode: hybrid}}
    system_prompt: {type: categorical, choices: [null, "Answer in one sentence."]}

`type` is `int`, `float` or `categorical`; numbers take `low`, `high` and optionally `step` or `log`;
a categorical takes `choices` (any YAML values). `when` suggests the parameter only while earlier
parameters have the given value (or one of a list). Every path must be a field of `AgentConfig`
(or, for the local retriever, an option of `LocalRetriever`), and every value a trial could pick
must validate: both are checked before any trial runs (`check_space`).

Example:
    >>> space = parse_space({"retriever.k": {"type": "int", "low": 1, "high": 8}}, source="demo")
    >>> space[0].path, space[0].low, space[0].high
    ('retriever.k', 1, 8)
"""

from __future__ import annotations

import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError

if TYPE_CHECKING:
    import optuna

ParamType = Literal["int", "float", "categorical"]
_SPEC_KEYS = frozenset({"type", "low", "high", "step", "log", "choices", "when"})
_OPTIONS_PATH = ("retriever", "options")
_PRIMITIVES = (type(None), bool, int, float, str)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParamSpec:
    """One searched config field and the values a trial may give it."""

    path: str
    """A dotted config path, e.g. `retriever.k` or `retriever.options.fusion_weight`."""
    type: ParamType
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    """Categorical only (Any: YAML values, a mapping included)."""
    when: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    """Suggest this parameter only while each named parameter has one of these values."""

    def describe(self) -> dict[str, Any]:
        """The spec as the mapping a space file writes (Any: YAML values)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update({"low": self.low, "high": self.high})
            if self.step is not None:
                out["step"] = self.step
            if self.log:
                out["log"] = True
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when.items()}
        return out

    def candidates(self) -> list[Any]:
        """Values worth validating before any trial: the bounds, or every choice (Any: YAML values)."""
        if self.type == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


def load_space(path: str | Path) -> list[ParamSpec]:
    """Read a space file (YAML mapping of config paths to specs).

    Raises:
        ConfigError: the file is missing, not YAML, or a spec is malformed (one line saying which).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Space file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"Space file {path} is not valid YAML: {first}") from exc
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"Space file {path} must map config paths to specs, "
            "e.g. 'retriever.k: {type: int, low: 1, high: 10}'."
        )
    return parse_space(raw, source=f"space file {path}")


def parse_space(raw: Mapping[str, Any], *, source: str) -> list[ParamSpec]:
    """Specs from a mapping of config paths to spec mappings (Any: raw YAML)."""
    specs = [_parse_one(str(path), spec, source=source) for path, spec in raw.items()]
    seen: set[str] = set()
    for spec in specs:
        for name in spec.when:
            if name not in seen:
                raise ConfigError(
                    f"{source}: {spec.path}.when names {name!r}, which is not a parameter listed before it."
                )
        seen.add(spec.path)
    return specs


def _parse_one(path: str, spec: Any, *, source: str) -> ParamSpec:
    # Any: one raw YAML value
    where = f"{source}: {path}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where} must be a mapping such as {{type: int, low: 1, high: 10}}.")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        allowed = ", ".join(sorted(_SPEC_KEYS))
        raise ConfigError(f"{where} has unknown key(s) {', '.join(unknown)}; allowed: {allowed}.")
    kind = spec.get("type")
    when = _parse_when(spec.get("when"), where=where)
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical needs a non-empty list of choices.")
        return ParamSpec(path=path, type="categorical", choices=tuple(choices), when=when)
    if kind not in ("int", "float"):
        raise ConfigError(f"{where}: type must be int, float or categorical (got {kind!r}).")
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    number = int if kind == "int" else (int, float)
    for name, value in (("low", low), ("high", high), ("step", step)):
        if name == "step" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, number):
            what = "an integer" if kind == "int" else "a number"
            raise ConfigError(f"{where}: {name} must be {what} (got {value!r}).")
    assert low is not None and high is not None
    log = bool(spec.get("log", False))
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is above high ({high}).")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be positive and cannot be combined with log.")
    if log and low <= 0:
        raise ConfigError(f"{where}: log needs low above 0 (got {low}).")
    return ParamSpec(path=path, type=kind, low=low, high=high, step=step, log=log, when=when)


def _parse_when(raw: Any, *, where: str) -> dict[str, tuple[Any, ...]]:
    # Any: raw YAML
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: when must map parameter paths to values, e.g. {{retriever.mode: hybrid}}."
        )
    return {str(k): tuple(v) if isinstance(v, list) else (v,) for k, v in raw.items()}


def default_space(cfg: AgentConfig, *, rebuilds_index: bool, has_embeddings: bool = True) -> list[ParamSpec]:
    """The space searched without `--space`: k; mode and fusion weight (local); chunking (with docs).

    Reranker on / off and query rewriting join only when this install's config has those fields.
    """
    retriever = cfg.retriever
    specs = [ParamSpec(path="retriever.k", type="int", low=1, high=max(10, retriever.k))]
    if retriever.type == "local":
        modes = ("hybrid", "bm25", "dense") if has_embeddings else ("bm25",)
        if len(modes) > 1:
            specs.append(ParamSpec(path="retriever.mode", type="categorical", choices=modes))
            specs.append(
                ParamSpec(
                    path="retriever.options.fusion_weight",
                    type="float",
                    low=0.0,
                    high=1.0,
                    step=0.05,
                    when={"retriever.mode": ("hybrid",)},
                )
            )
    if rebuilds_index:
        specs.append(ParamSpec(path="ingest.chunk_size", type="int", low=200, high=1500, step=100))
        specs.append(ParamSpec(path="ingest.chunk_overlap", type="int", low=0, high=300, step=50))
    specs.extend(_optional_specs(cfg))
    return specs


def _optional_specs(cfg: AgentConfig) -> list[ParamSpec]:
    """Specs for retriever fields that only some installs have: a reranker and query rewriting."""
    fields = type(cfg.retriever).model_fields
    out = []
    if "reranker" in fields:  # on / off: the reranker the config names, or the field's default (none)
        current = cfg.model_dump(mode="json")["retriever"].get("reranker")
        off = fields["reranker"].default
        if current != off:
            out.append(ParamSpec(path="retriever.reranker", type="categorical", choices=(current, off)))
    if "query" in fields:
        choices = _literal_values(fields["query"].annotation)
        if len(choices) > 1:
            out.append(ParamSpec(path="retriever.query", type="categorical", choices=choices))
    return out


def _literal_values(annotation: Any) -> tuple[Any, ...]:
    # Any: a type annotation
    if typing.get_origin(annotation) is Literal:
        return tuple(typing.get_args(annotation))
    return ()


def check_space(space: Sequence[ParamSpec], cfg: AgentConfig) -> None:
    """Refuse unknown config paths and values the config would not accept, before any trial.

    Raises:
        ConfigError: one line naming the parameter and what is wrong.
    """
    if not space:
        raise ConfigError("The search space is empty: give a --space file with at least one parameter.")
    for spec in space:
        _check_path(spec.path, cfg)
        for value in spec.candidates():
            try:
                apply_params(cfg, {spec.path: value})
            except ConfigError as exc:
                raise ConfigError(
                    f"Space parameter {spec.path}: the value {value!r} is refused ({exc})."
                ) from None


def _check_path(path: str, cfg: AgentConfig) -> None:
    parts = path.split(".")
    model: type[BaseModel] = AgentConfig
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            where = ".".join(parts[:depth]) or "the config"
            raise ConfigError(
                f"Space parameter {path!r}: {part!r} is no field of {where} "
                f"(fields: {', '.join(sorted(fields))})."
            )
        annotation = fields[part].annotation
        rest = parts[depth + 1 :]
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        if rest and tuple(parts[: depth + 1]) == _OPTIONS_PATH:
            _check_option(path, ".".join(rest), cfg)
        elif rest:
            raise ConfigError(f"Space parameter {path!r}: {'.'.join(parts[: depth + 1])} has no sub-fields.")
        return


def _check_option(path: str, name: str, cfg: AgentConfig) -> None:
    """`retriever.options.<name>` must be a keyword the local retriever takes (other backends: any)."""
    if cfg.retriever.type != "local":
        return
    from ragworks.retrieval.local import LocalRetriever

    allowed = sorted(set(LocalRetriever.model_fields) - {"index", "k", "mode", "filters", "tags"})
    if name not in allowed:
        raise ConfigError(
            f"Space parameter {path!r}: the local retriever has no option {name!r} "
            f"(options: {', '.join(allowed)})."
        )


def _option_error(cfg: AgentConfig, name: str, value: Any) -> str | None:
    # Any: one option value
    if cfg.retriever.type != "local":
        return None
    from ragworks.retrieval.local import LocalRetriever

    info = LocalRetriever.model_fields.get(name)
    if info is None:
        return None
    # Any: a type built at run time from the field's annotation and its constraints
    kind: Any = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        return exc.errors()[0]["msg"]
    return None


def apply_params(cfg: AgentConfig, params: Mapping[str, Any]) -> AgentConfig:
    """A copy of `cfg` with each dotted path set to its value, validated as a config file is.

    Raises:
        ConfigError: a value the config refuses (one line).
    """
    data = cfg.model_dump(mode="json")
    for path, value in params.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[last] = value
    try:
        out = AgentConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError("; ".join(lines)) from None
    for name, value in out.retriever.options.items():
        problem = _option_error(out, name, value)
        if problem:
            raise ConfigError(f"retriever.options.{name}: {problem}")
    return out


def suggest(trial: optuna.Trial, space: Sequence[ParamSpec]) -> dict[str, Any]:
    """The values `trial` picks for each parameter whose `when` holds (Any: config values)."""
    picked: dict[str, Any] = {}
    for spec in space:
        if any(picked.get(name, _MISSING) not in values for name, values in spec.when.items()):
            continue
        picked[spec.path] = _suggest_one(trial, spec)
    return picked


_MISSING = object()


def _suggest_one(trial: optuna.Trial, spec: ParamSpec) -> Any:
    # Any: a config value
    if spec.type == "categorical":
        if all(isinstance(c, _PRIMITIVES) for c in spec.choices):
            return trial.suggest_categorical(spec.path, list(spec.choices))
        labels = [json.dumps(c, sort_keys=True) for c in spec.choices]  # optuna takes only primitives
        return spec.choices[labels.index(trial.suggest_categorical(spec.path, labels))]
    assert spec.low is not None and spec.high is not None
    if spec.type == "int":
        step = int(spec.step or 1)
        return trial.suggest_int(spec.path, int(spec.low), int(spec.high), step=step, log=spec.log)
    value = trial.suggest_float(spec.path, float(spec.low), float(spec.high), step=spec.step, log=spec.log)
    return round(value, 10) if spec.step is not None else value  # 0.35, not 0.35000000000000003


def current_values(cfg: AgentConfig, space: Sequence[ParamSpec]) -> dict[str, Any]:
    """What the config itself sets for each parameter's path (None where it sets nothing)."""
    data = cfg.model_dump(mode="json")
    out: dict[str, Any] = {}
    for spec in space:
        node: Any = data
        for part in spec.path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[spec.path] = node
    return out
