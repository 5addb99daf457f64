"""Metadata filters the model chooses: extra arguments of the retriever tool, from `retriever.filterable`.

Each declared field becomes optional tool arguments, with its allowed values as a JSON-schema enum:

    source  {type: string, values: [a.md, b.md]}  ->  source: one allowed value, or a list of them
    year    {type: int}                           ->  year (equal), year_min (>=), year_max (<=)
    draft   {type: bool}                          ->  draft: true or false

The model's arguments are checked before any search (`to_filters`): an unknown argument, a value of
the wrong type or one that is not allowed raises a `ToolException` whose message names the field and
what it accepts, so the model can call again; no search runs. Valid arguments become a filter dict of
`ragworks.retrieval.filters`, which the local index and Databricks Vector Search both apply.

Example:
    >>> from ragworks.config import FilterableField
    >>> fields = {"source": FilterableField(values=["a.md", "b.md"]), "year": FilterableField(type="int")}
    >>> to_filters(fields, {"source": ["a.md"], "year_min": 2020})
    {'source': ['a.md'], 'year >=': 2020}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.tools import ToolException

from ragworks.config import FilterableField, RetrieverConfig
from ragworks.errors import ConfigError
from ragworks.retrieval.filters import filter_fields

QUERY_ARG = "query"
QUERY_DESCRIPTION = "What to look for, as a short standalone search query."
MIN_SUFFIX = "_min"
MAX_SUFFIX = "_max"
_BACKENDS = ("local", "databricks-vector-search")
_JSON_TYPES = {"string": "string", "int": "integer", "float": "number", "bool": "boolean"}
_NAMED = {"string": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
Value = str | int | float | bool


def _ranged(spec: FilterableField) -> bool:
    """Numeric fields without a list of values also take `_min` / `_max` bounds."""
    return spec.type in ("int", "float") and spec.values is None


def argument_names(fields: Mapping[str, FilterableField]) -> dict[str, tuple[str, str]]:
    """Each tool argument the fields make, as `argument -> (field, operator)`."""
    names: dict[str, tuple[str, str]] = {}
    for field, spec in fields.items():
        names[field] = (field, "=")
        if _ranged(spec):
            names[field + MIN_SUFFIX] = (field, ">=")
            names[field + MAX_SUFFIX] = (field, "<=")
    return names


def check_filterable(config: RetrieverConfig) -> dict[str, FilterableField]:
    """The retriever config's filterable fields, checked so that the tool can offer them.

    Raises:
        ConfigError: a backend that takes no per-query filters, a field also fixed in
            `retriever.filters`, an argument name used twice, or an allowed value of the wrong type.
    """
    fields = dict(config.filterable)
    if not fields:
        return fields
    if config.type not in _BACKENDS:
        raise ConfigError(
            f"retriever.filterable needs a retriever that takes filters per query ({', '.join(_BACKENDS)}); "
            f"{config.type!r} does not. Remove retriever.filterable."
        )
    fixed = sorted(set(filter_fields(config.filters or {})) & set(fields))
    if fixed:
        raise ConfigError(
            f"retriever.filterable field(s) {', '.join(fixed)} are also fixed in retriever.filters; the "
            "model could then widen a fixed filter. Keep each field in one of the two."
        )
    made: list[str] = []
    for field, spec in fields.items():
        made.extend(n for n in argument_names({field: spec}))
        for value in spec.values or []:
            if not _fits(spec, value):
                raise ConfigError(
                    f"retriever.filterable.{field}: the allowed value {value!r} is not {_NAMED[spec.type]}."
                )
    clashes = sorted({n for n in made if made.count(n) > 1} | ({QUERY_ARG} & set(made)))
    if clashes:
        raise ConfigError(
            f"retriever.filterable: the tool argument(s) {', '.join(clashes)} would be defined twice "
            f"(`{QUERY_ARG}` is the search text; a numeric field also makes <field>{MIN_SUFFIX} and "
            f"<field>{MAX_SUFFIX}). Rename the field."
        )
    return fields


def args_schema(fields: Mapping[str, FilterableField]) -> dict[str, Any]:
    """The retriever tool's arguments as a JSON schema: the query, then every filter argument.

    Any: JSON schema values.
    """
    properties: dict[str, Any] = {QUERY_ARG: {"type": "string", "description": QUERY_DESCRIPTION}}
    for field, spec in fields.items():
        properties[field] = _equal_schema(field, spec)
        if _ranged(spec):
            kind = _JSON_TYPES[spec.type]
            about = f"Only chunks whose {field} is"
            properties[field + MIN_SUFFIX] = {"type": kind, "description": f"{about} at least this."}
            properties[field + MAX_SUFFIX] = {"type": kind, "description": f"{about} at most this."}
    return {
        "type": "object",
        "title": "search_documents",
        "description": "Search the documents, optionally only those whose metadata match the filters.",
        "properties": properties,
        "required": [QUERY_ARG],
    }


def _equal_schema(field: str, spec: FilterableField) -> dict[str, Any]:
    one: dict[str, Any] = {"type": _JSON_TYPES[spec.type]}
    about = f" {spec.description}." if spec.description else ""
    if spec.type == "bool":
        return {**one, "description": f"Only chunks whose {field} is this.{about}"}
    if spec.values is not None:
        one["enum"] = list(spec.values)
    return {
        "anyOf": [one, {"type": "array", "items": one}],
        "description": f"Only chunks whose {field} is this value, or any of these values.{about}",
    }


def to_filters(fields: Mapping[str, FilterableField], args: Mapping[str, Any]) -> dict[str, Any]:
    """The filter dict for the model's filter arguments (the query excluded), checked against `fields`.

    Any: the model's JSON arguments, and the filter dict's values.

    Raises:
        ToolException: an unknown argument, a value of the wrong type, or a value that is not allowed;
            the message names the field and what it accepts.
    """
    names = argument_names(fields)
    filters: dict[str, Any] = {}
    for arg, value in args.items():
        if arg == QUERY_ARG or value is None or value == []:
            continue
        if arg not in names:
            raise ToolException(
                f"Error: {arg!r} is not a filter of this search. Filters: {describe(fields)}. "
                "Call the tool again with these, or with the query alone."
            )
        field, op = names[arg]
        spec = fields[field]
        if op == "=":
            filters[field] = _checked_values(arg, spec, value)
        else:
            filters[f"{field} {op}"] = _checked_bound(arg, spec, value)
    return filters


def _checked_values(arg: str, spec: FilterableField, value: Any) -> Value | list[Value]:
    # Any: the model's JSON value
    items = value if isinstance(value, list) and spec.type != "bool" else [value]
    for item in items:
        if not _fits(spec, item):
            raise ToolException(
                f"Error: filter {arg!r} takes {_accepts(spec)}; got {item!r}. Call the tool again with "
                f"{'one of those' if spec.values is not None else _NAMED[spec.type]}, or without {arg!r}."
            )
        if spec.values is not None and item not in spec.values:
            raise ToolException(
                f"Error: {item!r} is not an allowed value of filter {arg!r}. Allowed values: "
                f"{', '.join(map(str, spec.values))}. Call the tool again with one of them, "
                f"or without {arg!r}."
            )
    checked = [int(i) if spec.type == "int" else i for i in items]  # 2020.0 from JSON is 2020
    return checked if isinstance(value, list) else checked[0]


def _checked_bound(arg: str, spec: FilterableField, value: Any) -> int | float:
    # Any: the model's JSON value
    if not _fits(spec, value):
        raise ToolException(
            f"Error: filter {arg!r} takes {_NAMED[spec.type]}; got {value!r}. Call the tool again with "
            f"{_NAMED[spec.type]}, or without {arg!r}."
        )
    return int(value) if spec.type == "int" else float(value)


def _fits(spec: FilterableField, value: Any) -> bool:
    # Any: a JSON value of any type
    if spec.type == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if spec.type == "string":
        return isinstance(value, str)
    if spec.type == "int":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    return isinstance(value, (int, float))


def _accepts(spec: FilterableField) -> str:
    if spec.values is not None:
        return f"one of {', '.join(map(str, spec.values))} (or a list of them)"
    return _NAMED[spec.type] + (" (or a list of them)" if spec.type != "bool" else "")


def describe(fields: Mapping[str, FilterableField]) -> str:
    """The filters a search takes, for the model: each field with its type and allowed values."""
    parts = []
    for field, spec in fields.items():
        text = f"{field} ({spec.type}"
        if spec.values is not None:
            text += ": " + ", ".join(map(str, spec.values))
        if _ranged(spec):
            text += f"; also {field}{MIN_SUFFIX}, {field}{MAX_SUFFIX}"
        parts.append(text + ")")
    return "; ".join(parts)
