"""A local emulator of Unity Catalog functions and the SQL Statement Execution API, on 127.0.0.1.

Each function is a Python callable registered under its full name; its signature and docstring make
its Unity Catalog description (`GET /api/2.1/unity-catalog/functions/{name}`): typed parameters,
defaults, comments from `Annotated[..., "comment"]`, and a table return for `list[dict]` results.
`POST /api/2.0/sql/statements` runs the one statement shape ragworks sends,
`SELECT <fn>(a => :a, ...) AS result` or `SELECT * FROM <fn>(...)`, with typed parameters, on the
registered warehouse; an exception in the callable is a FAILED statement, as a SQL error would be.
With `pending_polls`, statements first answer PENDING, to be polled (`GET .../statements/{id}`) or
cancelled (`POST .../cancel`).

Example:
    >>> def add(a: int, b: int = 1) -> int:
    ...     '''Add two integers.'''
    ...     return a + b
    >>> with UnityCatalogEmulator({"main.tools.add": add}, warehouse_id="wh") as uc:   # doctest: +SKIP
    ...     WorkspaceClient(host=uc.host, token=uc.token).functions.get("main.tools.add")
"""

from __future__ import annotations

import inspect
import json
import re
import time
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from ragworks.testing.emulators._workspace import ApiError, Route, WorkspaceEmulator

_SQL_TYPES: dict[type, tuple[str, str]] = {
    bool: ("BOOLEAN", "boolean"),
    int: ("LONG", "bigint"),
    float: ("DOUBLE", "double"),
    str: ("STRING", "string"),
    list: ("ARRAY", "array<string>"),
    dict: ("MAP", "map<string,string>"),
}
_CALL = re.compile(
    r"^SELECT (?P<table>\* FROM )?(?P<fn>[A-Za-z0-9_.]+)\((?P<args>.*)\)(?: AS result)?$", re.S
)
_ARG = re.compile(r"(?P<name>\w+) => (?::(?P<plain>\w+)|from_json\(:(?P<json>\w+), '[^']*'\))")


class UnityCatalogEmulator(WorkspaceEmulator):
    """Serve Python callables as Unity Catalog functions, run by statements on `warehouse_id`."""

    thread_name = "uc-emulator"
    routes: ClassVar[list[Route]] = [
        ("GET", re.compile(r"^/api/2\.1/unity-catalog/functions/(?P<full_name>[^/]+)$"), "function_info"),
        ("POST", re.compile(r"^/api/2\.0/sql/statements/?$"), "execute"),
        ("GET", re.compile(r"^/api/2\.0/sql/statements/(?P<statement_id>[^/]+)$"), "poll"),
        ("POST", re.compile(r"^/api/2\.0/sql/statements/(?P<statement_id>[^/]+)/cancel$"), "cancel"),
    ]

    def __init__(
        self,
        functions: Mapping[str, Callable[..., Any]],
        *,
        warehouse_id: str = "emulator-warehouse",
        token: str = "dapi-emulator",
        pending_polls: int = 0,
    ) -> None:
        super().__init__(token=token)
        self.functions = dict(functions)
        self.warehouse_id = warehouse_id
        self.pending_polls = pending_polls
        """Statements answer PENDING this many times (first reply and polls) before their result."""
        self._running: dict[str, tuple[int, dict[str, Any]]] = {}
        self.execute_delay_s = 0.0
        """How long each statement submission takes to answer (a slow warehouse)."""

    def _function(self, full_name: str) -> Callable[..., Any]:
        try:
            return self.functions[full_name]
        except KeyError:
            raise ApiError(404, "FUNCTION_DOES_NOT_EXIST", f"Function '{full_name}' not found.") from None

    def function_info(self, body: dict[str, Any], *, full_name: str) -> dict[str, Any]:
        """GET a function: its FunctionInfo, from the callable's signature and docstring."""
        fn = self._function(full_name)
        hints = typing.get_type_hints(fn, include_extras=True)
        parameters = []
        for position, (name, param) in enumerate(inspect.signature(fn).parameters.items()):
            python_type, comment = _unwrap(hints.get(name, str))
            type_name, type_text = _SQL_TYPES.get(python_type, ("STRING", "string"))
            info: dict[str, Any] = {
                "name": name,
                "position": position,
                "type_name": type_name,
                "type_text": type_text,
                "parameter_mode": "IN",
                "parameter_type": "PARAM",
            }
            if comment:
                info["comment"] = comment
            if param.default is not inspect.Parameter.empty:
                info["parameter_default"] = json.dumps(param.default)
            parameters.append(info)
        returns, _ = _unwrap(hints.get("return", str))
        catalog, schema, function = full_name.split(".")
        return {
            "name": function,
            "catalog_name": catalog,
            "schema_name": schema,
            "full_name": full_name,
            "comment": inspect.getdoc(fn) or "",
            "data_type": "TABLE_TYPE" if returns is list else _SQL_TYPES.get(returns, ("STRING", ""))[0],
            "full_data_type": "TABLE" if returns is list else _SQL_TYPES.get(returns, ("", "string"))[1],
            "input_params": {"parameters": parameters},
            "routine_body": "EXTERNAL",
            "external_language": "Python",
        }

    def execute(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a statement: its result, or PENDING first when `pending_polls` says so."""
        time.sleep(self.execute_delay_s)
        reply = self._run(body)
        if self.pending_polls <= 0:
            return reply
        with self._lock:
            self._running[reply["statement_id"]] = (self.pending_polls - 1, reply)
        return {"statement_id": reply["statement_id"], "status": {"state": "PENDING"}}

    def poll(self, body: dict[str, Any], *, statement_id: str) -> dict[str, Any]:
        """GET a statement: PENDING until its polls run out, then its result."""
        with self._lock:
            if statement_id not in self._running:
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Statement {statement_id} not found.")
            left, reply = self._running[statement_id]
            if left > 0 and reply["status"]["state"] != "CANCELED":
                self._running[statement_id] = (left - 1, reply)
                return {"statement_id": statement_id, "status": {"state": "PENDING"}}
        return reply

    def cancel(self, body: dict[str, Any], *, statement_id: str) -> dict[str, Any]:
        """POST a cancel: the statement ends CANCELED."""
        with self._lock:
            self._running[statement_id] = (0, {"statement_id": statement_id, "status": {"state": "CANCELED"}})
        return {}

    def _run(self, body: dict[str, Any]) -> dict[str, Any]:
        """Run the registered function a statement calls; an inline JSON_ARRAY result."""
        if body.get("warehouse_id") != self.warehouse_id:
            raise ApiError(404, "RESOURCE_DOES_NOT_EXIST", f"Warehouse {body.get('warehouse_id')} not found.")
        statement_id = uuid.uuid4().hex
        match = _CALL.match(str(body.get("statement", "")).strip())
        if match is None:
            return _failed(statement_id, "The emulator runs only SELECT <function>(name => :param, ...).")
        fn = self._function(match["fn"])
        values = {p["name"]: p for p in body.get("parameters") or []}
        kwargs = {}
        for arg in _ARG.finditer(match["args"]):
            marker = arg["plain"] or arg["json"]
            if marker not in values:
                return _failed(statement_id, f"UNBOUND_SQL_PARAMETER: Found the unbound parameter: {marker}.")
            kwargs[arg["name"]] = _value(values[marker], as_json=bool(arg["json"]))
        try:
            result = fn(**kwargs)
        except Exception as exc:  # a SQL error in a real function
            return _failed(statement_id, f"{type(exc).__name__}: {exc}")
        truncated = False
        if match["table"]:
            rows = list(result or [])
            limit = body.get("row_limit")
            if isinstance(limit, int) and len(rows) > limit:
                rows, truncated = rows[:limit], True
            columns = list(rows[0]) if rows else []
            data = [[_text(row.get(c)) for c in columns] for row in rows]
        else:
            columns, data = ["result"], [[_text(result)]]
        return {
            "statement_id": statement_id,
            "status": {"state": "SUCCEEDED"},
            "manifest": {
                "format": "JSON_ARRAY",
                "schema": {
                    "column_count": len(columns),
                    "columns": [
                        {"name": c, "position": i, "type_name": "STRING"} for i, c in enumerate(columns)
                    ],
                },
                "total_row_count": len(data),
                "truncated": truncated,
            },
            "result": {"chunk_index": 0, "row_offset": 0, "row_count": len(data), "data_array": data},
        }


def _unwrap(hint: Any) -> tuple[Any, str | None]:
    """(Python type, comment) from a hint such as `Annotated[int, "comment"]` or `list[dict]`."""
    comment = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        comment = next((e for e in extras if isinstance(e, str)), None)
    origin = typing.get_origin(hint)
    return (origin if origin in (list, dict) else hint), comment


def _value(parameter: dict[str, Any], *, as_json: bool) -> Any:
    """A statement parameter's value, typed as its SQL type says (strings on the wire)."""
    text = parameter.get("value")
    if text is None:
        return None
    if as_json:
        return json.loads(text)
    kind = str(parameter.get("type") or "STRING").upper()
    if kind in ("INT", "LONG", "SHORT", "BYTE", "BIGINT"):
        return int(text)
    if kind.startswith(("DOUBLE", "FLOAT", "DECIMAL")):
        return float(text)
    if kind == "BOOLEAN":
        return text.lower() == "true"
    return text


def _text(value: Any) -> str | None:
    """A cell as the JSON_ARRAY format sends it: text, or null."""
    if value is None:
        return None
    return json.dumps(value) if isinstance(value, (bool, list, dict)) else str(value)


def _failed(statement_id: str, message: str) -> dict[str, Any]:
    return {
        "statement_id": statement_id,
        "status": {"state": "FAILED", "error": {"error_code": "BAD_REQUEST", "message": message}},
    }
