"""Unity Catalog functions as agent tools, through databricks-sdk: `uc:<catalog>.<schema>.<function>`.

    tools: ["uc:main.finance.convert_currency"]     # in an agent config, next to module:function tools

The function's Unity Catalog description gives the tool its name (`main__finance__convert_currency`:
tool names allow no dots), its description (the function's comment) and a pydantic argument schema
(one field per parameter, typed from its SQL type, described by its comment, optional when it has a
default). A call runs `SELECT <function>(:a, :b)` (or `SELECT * FROM <function>(...)` for a table
function) on the SQL warehouse named by `DATABRICKS_WAREHOUSE_ID`, with the arguments as statement
parameters typed with their full SQL type, never spliced into the SQL text. A scalar result comes back
as its text; a table as JSON rows (at most `MAX_ROWS`; the answer says when rows were cut). A failed
statement, or one still running after `STATEMENT_TIMEOUT_S` (then cancelled), is a `ToolError`,
which the agent shows the model as the tool's answer.

Workspace and credentials come from databricks-sdk's unified auth (`DATABRICKS_HOST` +
`DATABRICKS_TOKEN`, a service principal, or a profile).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, Field, create_model

from ragworks._databricks import workspace_client
from ragworks.config import env_flag
from ragworks.errors import ConfigError, ToolError

PREFIX = "uc:"
WAREHOUSE_ENV = "DATABRICKS_WAREHOUSE_ID"
STATEMENT_TIMEOUT_S: float = 50
"""How long a call waits for its statement, all told, before cancelling it."""
POLL_S = 0.5
MAX_ROWS = 100
"""Rows of a table function's result given to the model; more are cut, and the answer says so."""
_NAME = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
_PARAM = re.compile(r"^(?!model_)[A-Za-z][A-Za-z0-9_]*$")  # pydantic reserves _x and model_x
_TYPE_TEXT = re.compile(r"^[A-Za-z0-9_<>,:() ]*$")
"""What a parameter's name and type text may hold: both are written into the SQL text."""
_PYTHON_TYPES: dict[str, type] = {
    "STRING": str,
    "CHAR": str,
    "INT": int,
    "LONG": int,
    "SHORT": int,
    "BYTE": int,
    "DOUBLE": float,
    "FLOAT": float,
    "DECIMAL": float,
    "BOOLEAN": bool,
    "DATE": str,
    "TIMESTAMP": str,
    "TIMESTAMP_NTZ": str,
    "ARRAY": list,
    "MAP": dict,
    "STRUCT": dict,
}
_COMPLEX = frozenset({"ARRAY", "MAP", "STRUCT"})
"""Types statement parameters cannot carry: sent as JSON text and parsed with `from_json` in SQL."""


class UCFunctionTool(BaseTool):
    """One Unity Catalog function, called on a SQL warehouse."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    function: str
    """The function's full name, `catalog.schema.function`."""
    warehouse_id: str
    params: list[dict[str, str]]
    """Each parameter's `name`, `type_name` and `type_text`, in order."""
    returns_table: bool = False
    client: Any = None
    """A databricks-sdk `WorkspaceClient` (Any: the SDK is an optional extra)."""

    def _run(self, **kwargs: Any) -> str:
        from databricks.sdk.service.sql import Disposition, Format, StatementParameterListItem, StatementState

        markers, parameters = [], []
        for param in self.params:
            name, type_name = param["name"], param["type_name"]
            if name not in kwargs or kwargs[name] is None:
                continue  # the function's default applies
            value = kwargs[name]
            if type_name in _COMPLEX:
                markers.append(f"{name} => from_json(:{name}, '{param['type_text']}')")
                parameters.append(StatementParameterListItem(name=name, value=json.dumps(value)))
            else:
                markers.append(f"{name} => :{name}")
                text = json.dumps(value) if isinstance(value, bool) else str(value)
                # The full type (DECIMAL(10,2), not DECIMAL = DECIMAL(10,0)) so values are not rounded.
                sql_type = param["type_text"] or type_name
                parameters.append(StatementParameterListItem(name=name, value=text, type=sql_type))
        call = f"{self.function}({', '.join(markers)})"
        statement = f"SELECT * FROM {call}" if self.returns_table else f"SELECT {call} AS result"
        deadline = time.monotonic() + STATEMENT_TIMEOUT_S
        try:
            response = self.client.statement_execution.execute_statement(
                statement=statement,
                warehouse_id=self.warehouse_id,
                parameters=parameters,
                wait_timeout=_wait_timeout(),
                format=Format.JSON_ARRAY,
                disposition=Disposition.INLINE,
                row_limit=MAX_ROWS + 1 if self.returns_table else None,
            )
            while response.status.state in (StatementState.PENDING, StatementState.RUNNING):
                if time.monotonic() > deadline:
                    self.client.statement_execution.cancel_execution(response.statement_id)
                    raise ToolError(f"{self.function} took over {STATEMENT_TIMEOUT_S} s and was cancelled.")
                time.sleep(POLL_S)
                response = self.client.statement_execution.get_statement(response.statement_id)
        except ToolError:
            raise
        except Exception as exc:  # the SDK's own errors: say which function, keep its message
            raise ToolError(f"Calling {self.function} failed: {exc}") from exc
        if response.status.state != StatementState.SUCCEEDED:
            error = response.status.error
            message = error.message if error is not None and error.message else response.status.state.value
            raise ToolError(f"{self.function} failed: {message}")
        rows = (response.result.data_array if response.result else None) or []
        if not self.returns_table:
            return "" if not rows or rows[0][0] is None else str(rows[0][0])
        columns = [c.name for c in response.manifest.schema.columns or []] if response.manifest else []
        table = json.dumps([dict(zip(columns, row, strict=False)) for row in rows[:MAX_ROWS]])
        truncated = len(rows) > MAX_ROWS or bool(response.manifest and response.manifest.truncated)
        return f"{table}\n(only the first {MAX_ROWS} rows)" if truncated else table


def _wait_timeout() -> str:
    """How long the first request waits for the result: the API takes 0 s or 5-50 s, within our deadline."""
    wait = int(min(30, STATEMENT_TIMEOUT_S))
    return f"{wait}s" if wait >= 5 else "0s"


def load_uc_function(spec: str) -> UCFunctionTool:
    """The tool for a `uc:catalog.schema.function` spec (or the bare full name)."""
    full_name = spec.removeprefix(PREFIX)
    if not _NAME.match(full_name):
        raise ConfigError(f"Unity Catalog tool {spec!r} must be uc:<catalog>.<schema>.<function>.")
    warehouse_id = env_flag(WAREHOUSE_ENV)
    if not warehouse_id:
        raise ConfigError(
            f"Unity Catalog tools run on a SQL warehouse: set {WAREHOUSE_ENV} to its id (for {full_name})."
        )
    client = workspace_client("Unity Catalog tools")
    try:
        info = client.functions.get(full_name)
    except Exception as exc:
        raise _explain(exc, full_name) from exc
    declared = sorted((info.input_params.parameters if info.input_params else None) or [], key=_position)
    for p in declared:
        if not _PARAM.match(p.name or "") or not _TYPE_TEXT.match(p.type_text or ""):
            raise ConfigError(
                f"Unity Catalog function {full_name!r} has a parameter ragworks cannot call safely "
                f"({p.name!r}: {p.type_text!r}); wrap it in a function with plain parameter names and types."
            )
    params = [
        {"name": p.name, "type_name": _type_name(p.type_name), "type_text": p.type_text or ""}
        for p in declared
    ]
    fields: dict[str, Any] = {}
    for p in declared:
        python_type = _PYTHON_TYPES.get(_type_name(p.type_name), str)
        if p.parameter_default is not None:  # optional: the function's default applies when omitted
            fields[p.name] = (python_type | None, Field(default=None, description=p.comment))
        else:
            fields[p.name] = (python_type, Field(description=p.comment))
    schema: type[BaseModel] = create_model(f"{full_name.replace('.', '__')}_args", **fields)
    return UCFunctionTool(
        name=full_name.replace(".", "__"),
        description=info.comment or f"The Unity Catalog function {full_name}.",
        args_schema=schema,
        function=full_name,
        warehouse_id=warehouse_id,
        params=params,
        returns_table=_type_name(info.data_type) == "TABLE_TYPE",
        client=client,
    )


def _position(param: Any) -> int:
    return int(param.position or 0)


def _type_name(value: Any) -> str:
    """An SDK enum or a string, as the SQL type name."""
    return str(getattr(value, "value", value) or "STRING").upper()




def _explain(exc: Exception, full_name: str) -> ConfigError:
    """A ConfigError for a failed function lookup: what to check."""
    kind = type(exc).__name__
    if kind in ("NotFound", "ResourceDoesNotExist"):
        return ConfigError(
            f"Unity Catalog function {full_name!r} was not found: check the name "
            "(catalog.schema.function) and DATABRICKS_HOST."
        )
    if kind in ("PermissionDenied", "Unauthenticated"):
        return ConfigError(
            f"Databricks refused access to the Unity Catalog function {full_name!r} ({exc}): check "
            "DATABRICKS_TOKEN and the EXECUTE grant on the function."
        )
    return ConfigError(f"Could not describe the Unity Catalog function {full_name!r}: {exc}")
