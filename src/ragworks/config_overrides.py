"""`--set KEY=VALUE` overrides of an `AgentConfig`: dotted field paths, values read as YAML scalars.

Example:
    >>> from ragworks.config import AgentConfig
    >>> cfg = apply_overrides(AgentConfig(), ["retriever.k=3", "system_prompt=prompts:/support/2"])
    >>> cfg.retriever.k, cfg.system_prompt
    (3, 'prompts:/support/2')
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ragworks.config import AgentConfig
from ragworks.errors import ConfigError

_YAML_NULLS = frozenset({"null", "Null", "NULL", "~"})


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` as (["a", "b"], value); the value is read as YAML (`3` is an int, `[a, b]` a list).

    Any: a YAML value of any type, validated when the config is rebuilt.
    """
    key, sep, raw = item.partition("=")
    path = [p.strip() for p in key.split(".")]
    if not sep or not all(path):
        raise ConfigError(f"--set {item!r}: write FIELD=VALUE, e.g. --set retriever.k=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc}).") from exc
    text = raw.strip()
    if (value is None or isinstance(value, str)) and text not in _YAML_NULLS and text[:1] not in "'\"":
        # YAML reads `#` as a comment: `Be brief #1 rule` would quietly become `Be brief`. Unquoted text
        # stays as written; quote it for YAML's reading.
        value = text
    return path, value


def apply_overrides(cfg: AgentConfig, items: Sequence[str]) -> AgentConfig:
    """A copy of `cfg` with each `FIELD=VALUE` set, validated like a config file (unknown fields refused)."""
    if not items:
        return cfg
    data = cfg.model_dump(mode="json")
    for item in items:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section of the config.")
            node = child
        node[path[-1]] = value
    return AgentConfig.load(data)


def overridden_config(path: str | Path | None, items: Sequence[str]) -> AgentConfig:
    """The config file at `path` with `--set` overrides applied (a logged model's config cannot be set)."""
    if path is None:
        raise ConfigError("--set changes a config file: pass --config agent.yaml (not --model-uri).")
    return apply_overrides(AgentConfig.from_yaml(path), items)
