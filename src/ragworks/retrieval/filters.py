"""Metadata filters in the Databricks Vector Search style, evaluated locally.

A filter is a dict; each key is a metadata field with an optional operator, all keys must match:

    {"source": "docs/a.md"}              equality
    {"source": ["a.md", "b.md"]}         value in the list
    {"year >=": 2020, "pages <": 10}     numeric comparison (<, <=, >, >=)
    {"lang !=": "fr"} / {"lang NOT": "fr"} / {"lang NOT IN": ["fr", "de"]}
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ragworks.errors import ConfigError

Predicate = Callable[[Mapping[str, Any]], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
OPERATORS = ("=", "==", "!=", "NOT", "IN", "NOT IN", *_COMPARE)


def _split_key(key: str) -> tuple[str, str]:
    for op in sorted(OPERATORS, key=len, reverse=True):
        suffix = f" {op}"
        if key.upper().endswith(suffix):
            return key[: -len(suffix)].strip(), op
    return key.strip(), "="


def _clause(field: str, op: str, value: Any) -> Predicate:
    if op in _COMPARE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Filter {field!r} {op} needs a number, got {value!r}.")
        cmp = _COMPARE[op]

        def compare(meta: Mapping[str, Any]) -> bool:
            got = meta.get(field)
            return isinstance(got, (int, float)) and not isinstance(got, bool) and cmp(got, value)

        return compare
    negate = op in {"!=", "NOT", "NOT IN"}
    allowed = list(value) if isinstance(value, (list, tuple, set)) else [value]
    if op in {"IN", "NOT IN"} and not isinstance(value, (list, tuple, set)):
        raise ConfigError(f"Filter {field!r} {op} needs a list of values, got {value!r}.")

    def member(meta: Mapping[str, Any]) -> bool:
        got = meta.get(field)
        hit = any(got == a for a in allowed)
        return hit != negate

    return member


def filter_fields(filters: Mapping[str, Any]) -> list[str]:
    """The metadata fields a filter dict reads, operators stripped."""
    return [_split_key(str(k))[0] for k in filters]


def compile_filters(filters: Mapping[str, Any] | None) -> Predicate | None:
    """Turn a filter dict into one predicate over a chunk's metadata (None for no filter)."""
    if not filters:
        return None
    if not isinstance(filters, Mapping):
        raise ConfigError(f"Filters must be a mapping of field to value, got {type(filters).__name__}.")
    clauses = [_clause(*_split_key(str(k)), v) for k, v in filters.items()]
    return lambda meta: all(c(meta) for c in clauses)


def parse_filter_arg(arg: str) -> tuple[str, Any]:
    """Parse a CLI `--filter` such as `source=a.md`, `year>=2020` or `lang!=fr` into a dict item."""
    for op in (">=", "<=", "!=", "=", "<", ">"):
        if op in arg:
            field, raw = arg.split(op, 1)
            field = field.strip()
            if not field:
                break
            value = _coerce(raw.strip())
            if op in _COMPARE:
                return f"{field} {op}", value
            if "," in raw:
                items = [_coerce(v.strip()) for v in raw.split(",")]
                return (f"{field} NOT IN", items) if op == "!=" else (field, items)
            return (f"{field} !=", value) if op == "!=" else (field, value)
    raise ConfigError(
        f"Cannot read filter {arg!r}: write FIELD=VALUE, FIELD=A,B, FIELD!=VALUE or FIELD>=NUMBER."
    )


def _coerce(raw: str) -> Any:
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw
