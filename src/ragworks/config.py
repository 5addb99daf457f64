"""Configuration: `AgentConfig` (one file, everywhere) and `Settings` (the environment).

`AgentConfig` names the retriever, chat model, prompts, tools and limits of an agent. The CLI,
`log_agent`, the served model and the eval runner all load it the same way. Secrets never live
here: they come from the environment (`OPENAI_API_KEY`, `DATABRICKS_TOKEN`, ...).

Example:
    >>> cfg = AgentConfig(retriever={"type": "local", "index": "./index", "k": 5})
    >>> cfg.llm, cfg.agent
    ('offline', 'rag')
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragworks.errors import ConfigError

EmbeddingsName = Literal["auto", "minilm", "hashing", "none"]
SearchMode = Literal["hybrid", "bm25", "dense"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class FilterableField(_Strict):
    """A metadata field the model may filter on in a tool-calling agent (see `retriever.filterable`)."""

    type: Literal["string", "int", "float", "bool"] = "string"
    """The type of the field's values."""
    values: list[str | int | float | bool] | None = None
    """The values allowed, shown to the model as an enum (None: any value of the type)."""
    description: str | None = None
    """What the field holds, shown to the model."""


class RetrieverConfig(_Strict):
    """Which retriever to use and how many chunks it returns."""

    type: str = "local"
    """`local`, `databricks-vector-search`, or `langchain:<module>:<attr>` for any LangChain retriever."""
    index: str = "./index"
    """A local index folder, or a Unity Catalog index name for Databricks Vector Search. A relative
    folder written in a config file is read from the file's folder (from the working directory when
    the config is given as a dict)."""
    k: int = Field(default=5, ge=1, le=200)
    """How many chunks each retrieval returns."""
    mode: SearchMode = "hybrid"
    """`hybrid` (BM25 + dense), `bm25`, or `dense`."""
    filters: dict[str, Any] | None = None
    """Metadata filters applied to every query, e.g. `{"source": "docs/a.md", "year >=": 2020}`."""
    filterable: dict[str, FilterableField] = Field(default_factory=dict)
    """Metadata fields the model may filter on through the retriever tool (tool-calling agents), e.g.
    `{"source": {"values": ["a.md", "b.md"]}, "year": {"type": "int"}}`; checked before each search."""
    endpoint: str | None = None
    """The Databricks Vector Search endpoint (databricks-vector-search only)."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Backend-specific keyword arguments passed to the retriever's constructor."""
    reranker: str = "none"
    """`none`, `minilm` (built in, offline), `cross-encoder:<local folder or cached model name>` (never
    downloaded), or `databricks` (the Vector Search index reranks; databricks-vector-search only)."""
    rerank_candidates: int = Field(default=30, ge=1, le=1000)
    """How many chunks the first stage returns for the reranker, which keeps the best `k`."""
    query: Literal["plain", "multi-query", "hyde"] = "plain"
    """Query rewriting: `plain` (none), `multi-query` (variants fused by RRF) or `hyde` (search with a
    hypothetical answer); offline, both are made deterministically from a first search."""

    @field_validator("reranker")
    @classmethod
    def _known_reranker(cls, value: str) -> str:
        if value in {"none", "minilm", "databricks"} or (
            value.startswith("cross-encoder:") and value != "cross-encoder:"
        ):
            return value
        raise ValueError("must be 'none', 'minilm', 'databricks' or 'cross-encoder:<path or name>'")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value in {"local", "databricks-vector-search"} or value.startswith("langchain:"):
            return value
        raise ValueError("must be 'local', 'databricks-vector-search' or 'langchain:<module>:<attr>'")


class IngestConfig(_Strict):
    """How documents are chunked and embedded when an index is built."""

    chunk_size: int = Field(default=1000, ge=50, le=100_000)
    """Maximum characters per chunk."""
    chunk_overlap: int = Field(default=150, ge=0)
    """Characters shared by neighbouring chunks."""
    embeddings: EmbeddingsName = "auto"
    """`minilm` (needs the dense extra), `hashing` (no dependencies), `none` (BM25 only), `auto`."""
    max_file_mb: float = Field(default=50.0, gt=0)
    """Files larger than this are skipped."""


class ModelOptions(_Strict):
    """How calls to a remote chat model (`openai:`, `databricks:`) are bounded."""

    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Seconds one model call may take (each read of a stream); capped by the request's time left."""
    max_retries: int = Field(default=2, ge=0, le=10)
    """Further attempts after a 429, 5xx, timeout or lost connection, while the request has time left."""


class TrackingConfig(_Strict):
    """Where the agent's traces go when it is served (`ragworks serve`) or chatted with (`ragworks chat`)."""

    experiment: str | None = None
    """The MLflow experiment for its traces (created when missing); `--experiment` overrides it."""


class ServingConfig(_Strict):
    """What the server keeps between requests: conversations (see `ragworks.serving.state`)."""

    state: str = "auto"
    """`auto` (SQLite beside the tracking store), a SQLite file path, `postgresql://...`, or `off`."""
    max_age_days: float = Field(default=30.0, gt=0)
    """Stored responses older than this are forgotten (`previous_response_id` then gets a 400)."""
    max_responses: int = Field(default=100_000, ge=1)
    """The oldest stored responses beyond this many are forgotten."""

    @field_validator("state", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        # Any: raw YAML, where an unquoted `off` is the boolean false
        return "off" if value is False or value is None else value


class MCPServerConfig(_Strict):
    """One MCP server whose tools an agent may use (`tools: ["mcp:<name>"]`; see `ragworks.tools.mcp`).

    Exactly one of `command` (a process speaking MCP on stdin/stdout), `url` (streamable HTTP or SSE)
    or `databricks` (a Databricks managed MCP server, with workspace auth) says where the server is.
    """

    command: list[str] | str | None = None
    """The program to start (and its first arguments), e.g. `["python", "server.py"]`."""
    args: list[str] = Field(default_factory=list)
    """More arguments for `command`."""
    env: dict[str, str] | None = None
    """Extra environment for `command`'s process; `${VAR}` in a value is read from the environment."""
    cwd: str | None = None
    """The working directory of `command`'s process (default: the current one)."""
    url: str | None = None
    """The server's HTTP endpoint, e.g. `http://127.0.0.1:8000/mcp`."""
    headers: dict[str, str] = Field(default_factory=dict)
    """HTTP headers for `url`; `${VAR}` in a value is read from the environment when the server is
    started (secrets must be written so: they are never stored in the config, traces or models)."""
    transport: Literal["stdio", "streamable_http", "sse"] | None = None
    """Default: `stdio` for `command`, `streamable_http` for `url` and `databricks`."""
    databricks: str | None = None
    """`vector-search/<catalog>/<schema>[/<index>]`, `functions/<catalog>/<schema>[/<function>]` or
    `genie/<space_id>`: the workspace's managed MCP server (`DATABRICKS_HOST` and its credentials)."""
    timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Seconds one tool call may take; capped by the request's time left."""
    startup_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Seconds to start or reach the server and list its tools when the agent is built."""
    prefix: bool = False
    """Name the server's tools `<server>_<tool>` (for tool names that clash with other tools)."""

    @model_validator(mode="after")
    def _one_place(self) -> MCPServerConfig:
        given = [f for f in ("command", "url", "databricks") if getattr(self, f)]
        if len(given) != 1:
            raise ValueError("give exactly one of command (stdio), url (HTTP) or databricks")
        if (self.transport == "stdio") != bool(self.command) and self.transport is not None:
            raise ValueError(f"transport {self.transport!r} does not fit {given[0]}")
        return self


class AgentConfig(_Strict):
    """Everything an agent is made of; load it with `AgentConfig.from_yaml(path)`."""

    llm: str = "offline"
    """`offline` (MiniLM sentence matching over a MiniLM-embedded local index, lexical otherwise;
    `offline:minilm` and `offline:lexical` choose), `openai:<model>` or `databricks:<endpoint>`."""
    llm_options: ModelOptions = Field(default_factory=ModelOptions)
    """Timeout and retries of the model calls (`openai:` and `databricks:` models)."""
    agent: Literal["rag", "tool-calling"] = "rag"
    """`rag` (retrieve, then answer) or `tool-calling` (the model decides which tools to call)."""
    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    tools: list[str] = Field(default_factory=list)
    """Extra tools as `module:function`, `uc:catalog.schema.function` (a Unity Catalog function), or
    `mcp:<server>` / `mcp:<server>/<tool>` (an MCP server of `mcp_servers`); the retriever tool is always
    present in tool-calling agents."""
    mcp_servers: dict[str, MCPServerConfig] = Field(default_factory=dict)
    """MCP servers by name, for `mcp:<name>` tools."""
    system_prompt: str | None = None
    """Replaces the built-in system prompt."""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    max_steps: int = Field(default=6, ge=1, le=50)
    """Tool-calling agents stop after this many model calls."""
    name: str = "ragworks-agent"
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, value: str) -> str:
        if value in ("offline", "offline:minilm", "offline:lexical"):
            return value
        if value.startswith(("openai:", "databricks:")):
            if value.endswith(":"):
                raise ValueError(f"{value!r} names no model: write e.g. 'openai:gpt-4o-mini'")
            return value
        raise ValueError(
            "must be 'offline' ('offline:minilm', 'offline:lexical'), 'openai:<model>' "
            "or 'databricks:<endpoint>'"
        )

    @classmethod
    def load(cls, data: AgentConfig | dict[str, Any] | str | Path | None) -> AgentConfig:
        """Build a config from an instance, a dict, a YAML path, or None (the defaults)."""
        if isinstance(data, AgentConfig):
            return data
        if data is None:
            return cls()
        if isinstance(data, (str, Path)):
            return cls.from_yaml(data)
        return _validate(cls, data, source="config")

    @classmethod
    def from_yaml(cls, path: str | Path) -> AgentConfig:
        """Read a config from a YAML file, with errors that name the file and field.

        Relative paths the file names (a local `retriever.index`) are read from the file's folder,
        not from the working directory, so the config means the same wherever it is run from.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"Config file {path} does not exist.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"Config file {path} is not valid YAML: {exc}") from exc
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"Config file {path} must hold a mapping of fields, not {type(raw).__name__}.")
        return _state_from(_paths_from(_validate(cls, raw, source=str(path)), path.parent), path.parent)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """Dump the config as YAML (fields at their defaults included); write it if `path` is given."""
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def fingerprint(self) -> str:
        """A short stable hash of the config, for trace tags and caches."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _paths_from(cfg: AgentConfig, base: Path) -> AgentConfig:
    """A copy of `cfg` whose relative local paths, as written in its file, are made absolute under `base`.

    Only values the file sets are moved: a default (`./index`) keeps meaning the working directory.
    """
    retriever = cfg.retriever
    if retriever.type != "local" or "index" not in retriever.model_fields_set:
        return cfg
    index = Path(retriever.index).expanduser()
    if index.is_absolute():
        return cfg
    moved = cfg.model_copy(deep=True)
    moved.retriever.index = str((base / index).resolve())
    return moved


_NOT_PATHS = frozenset({"auto", "off", "none", "false", ""})
"""`serving.state` values that name no file."""


def _state_from(cfg: AgentConfig, base: Path) -> AgentConfig:
    """A copy of `cfg` whose relative SQLite `serving.state` path, as the file writes it, is under `base`."""
    state = cfg.serving.state
    if "state" not in cfg.serving.model_fields_set or state.lower() in _NOT_PATHS or "://" in state:
        return cfg
    path = Path(state).expanduser()
    if path.is_absolute():
        return cfg
    moved = cfg.model_copy(deep=True)
    moved.serving.state = str((base / path).resolve())
    return moved


def _validate(model: type[AgentConfig], data: dict[str, Any], *, source: str) -> AgentConfig:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source=source)) from None


def format_validation_error(exc: ValidationError, *, source: str) -> str:
    """Turn a pydantic error into lines that say which field is wrong and what is allowed."""
    lines = [f"Invalid {source}:"]
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling (see `ragworks` docs for the fields allowed)"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        elif "input" in err and err["type"] != "missing":
            msg = f"{msg} (got {err['input']!r})"
        lines.append(f"  {field}: {msg}")
    return "\n".join(lines)


class Settings(BaseSettings):
    """Process-wide settings from `RAGWORKS_*` environment variables; the only reader of env."""

    model_config = SettingsConfigDict(env_prefix="RAGWORKS_", extra="ignore")

    index: str = "./index"
    """Default index folder for the CLI."""
    embeddings: EmbeddingsName = "auto"
    """Default embedder for new indexes."""
    api_token: str | None = Field(default=None, repr=False)
    """When set, the server requires `Authorization: Bearer <token>`."""
    mlflow_ui: str | None = None
    """The MLflow UI's address (RAGWORKS_MLFLOW_UI) for trace links in eval reports; default: an http(s)
    tracking URI."""
    debug: bool = False


def get_settings() -> Settings:
    """Read the settings from the environment now (not at import)."""
    return Settings()


def env_flag(name: str) -> str | None:
    """Read one environment variable; the single place other modules go through for env."""
    return os.environ.get(name)
