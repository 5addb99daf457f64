"""Log an agent as an MLflow model from code, self-contained, with its config and Databricks resources.

The model MLflow stores is made of:

    agent_entry.py        the model's code: builds the agent from `ModelConfig`, then `set_model()`
    model_config          the `AgentConfig` as a dict (the same config the CLI and eval runner load)
    artifacts/index/      a local index, copied in, so the model answers without the original folder
    code/ragworks/        this package's source (ragworks is not on PyPI; editable installs have no wheel)
    requirements.txt      ragworks' own dependencies, pinned to the versions installed here
    resources             Databricks resources the config names (Vector Search index, serving endpoint)
    prompts               a `prompts:/` system prompt, as the version it resolved to (linked to the model)

At load time `agent_entry.py` is run from the model folder; it points `retriever.index` at the
shipped `index` artifact through `logged_config()` before the agent (and its index) is built.

Example:
    >>> info = log_agent({"retriever": {"type": "local", "index": "./index"}})   # doctest: +SKIP
    >>> agent = mlflow.pyfunc.load_model(info.model_uri)                         # doctest: +SKIP
    >>> agent.predict({"input": [{"role": "user", "content": "What is ragworks?"}]})  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

from ragworks.agents.prompt_registry import pinned_prompt_uris
from ragworks.agents.tracing import CONFIG_TAG
from ragworks.config import AgentConfig, env_flag
from ragworks.errors import ConfigError
from ragworks.retrieval.local import MANIFEST, index_embedder
from ragworks.tools.mcp_resources import mcp_databricks_resources, mcp_extras
from ragworks.tools.unity_catalog import PREFIX as UC_PREFIX
from ragworks.tools.unity_catalog import WAREHOUSE_ENV

if TYPE_CHECKING:
    from mlflow.models.model import ModelInfo
    from mlflow.models.resources import DatabricksResource

logger = logging.getLogger(__name__)

ENTRY_FILE = Path(__file__).with_name("agent_entry.py")
"""The file logged as the model's code."""
INDEX_ARTIFACT = "index"
"""The name of the shipped local index among the model's artifacts."""
INPUT_EXAMPLE: dict[str, Any] = {"input": [{"role": "user", "content": "What is ragworks?"}]}
"""The input example stored with the model; MLflow runs `predict` on it when logging."""
_DATABRICKS = "databricks:"


def log_agent(
    config: AgentConfig | dict[str, Any] | str | Path | None,
    name: str = "agent",
    registered_model_name: str | None = None,
    *,
    index_path: str | Path | None = None,
) -> ModelInfo:
    """Log the agent a config describes as an MLflow model (models-from-code).

    Logs to the current tracking URI and experiment; a run is not needed (MLflow 3 logged models).

    Args:
        config: An `AgentConfig`, a dict, a YAML path, or None for the defaults.
        name: The model's name within the experiment.
        registered_model_name: Also register the model under this name in the model registry.
        index_path: A local index folder to ship; replaces `retriever.index` (local retriever only).

    Returns:
        MLflow's `ModelInfo`; load the agent back with `mlflow.pyfunc.load_model(info.model_uri)`.

    Raises:
        ConfigError: The local index is missing, or `index_path` is given for a remote retriever.
    """
    import mlflow

    cfg = _with_index(AgentConfig.load(config), index_path)
    artifacts = {INDEX_ARTIFACT: cfg.retriever.index} if cfg.retriever.type == "local" else None
    prompts = pinned_prompt_uris(cfg)  # a registry system prompt: the version it resolves to now
    with tempfile.TemporaryDirectory(prefix="ragworks-model-") as tmp:
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY_FILE),
            model_config=cfg.model_dump(mode="json"),
            artifacts=artifacts,
            code_paths=[str(stage_package(Path(tmp)))],
            pip_requirements=pinned_requirements(cfg),
            input_example=INPUT_EXAMPLE,
            resources=databricks_resources(cfg) or None,
            registered_model_name=registered_model_name,
            prompts=prompts or None,
            tags={
                CONFIG_TAG: cfg.fingerprint(),
                "ragworks.llm": cfg.llm,
                "ragworks.retriever": cfg.retriever.type,
            },
        )
    logger.info("Logged agent %s as %s", cfg.name, info.model_uri)
    return info


def _with_index(cfg: AgentConfig, index_path: str | Path | None) -> AgentConfig:
    """A copy of the config whose local index is an absolute path to an existing index folder."""
    if cfg.retriever.type != "local":
        if index_path is not None:
            raise ConfigError(
                f"--index/index_path ships a local index, but retriever.type is {cfg.retriever.type!r}. "
                "Drop the index option, or set retriever.type to 'local'."
            )
        return cfg
    index = Path(index_path if index_path is not None else cfg.retriever.index).expanduser().resolve()
    if not (index / MANIFEST).is_file():
        raise ConfigError(
            f"No ragworks index at {index}: build one with `ragworks ingest DOCS --index {index}`, "
            "or point --index (retriever.index) at an existing one."
        )
    cfg = cfg.model_copy(deep=True)
    cfg.retriever.index = str(index)
    return cfg


def logged_config(raw: Mapping[str, Any], *, code_file: str | Path) -> AgentConfig:
    """The config a logged model runs with: `retriever.index` points at the shipped index artifact.

    MLflow runs the model's code file from the model folder, next to its `MLmodel`, whose pyfunc
    flavor lists the artifacts' paths relative to that folder. When the code runs anywhere else
    (while the model is being logged, or in development) the config is used as it is.

    Args:
        raw: The model config (`mlflow.models.ModelConfig(...).to_dict()`).
        code_file: The `__file__` of the model's code.
    """
    cfg = AgentConfig.load(dict(raw))
    shipped = shipped_artifact(Path(code_file).parent, INDEX_ARTIFACT)
    if shipped is not None and cfg.retriever.type == "local":
        cfg = cfg.model_copy(deep=True)
        cfg.retriever.index = str(shipped)
    return cfg


def shipped_artifact(model_dir: Path, name: str) -> Path | None:
    """The local path of artifact `name` of the MLflow model in `model_dir`, or None if there is none."""
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.pyfunc import FLAVOR_NAME
    from mlflow.pyfunc.model import CONFIG_KEY_ARTIFACT_RELATIVE_PATH, CONFIG_KEY_ARTIFACTS

    if not (model_dir / MLMODEL_FILE_NAME).is_file():
        return None
    flavor = Model.load(str(model_dir)).flavors.get(FLAVOR_NAME, {})
    entry = flavor.get(CONFIG_KEY_ARTIFACTS, {}).get(name)
    if not entry:
        return None
    return model_dir / entry[CONFIG_KEY_ARTIFACT_RELATIVE_PATH]


def stage_package(folder: Path) -> Path:
    """Copy the ragworks package source (no caches) into `folder/ragworks`, for `code_paths`.

    ragworks is usually an editable install and is not on PyPI, so a requirement line could not
    install it where the model is served. Shipping the source makes the model self-contained;
    MLflow puts the model's `code/` folder first on `sys.path` when it loads the model.
    """
    import ragworks

    source = Path(ragworks.__file__).parent
    target = folder / "ragworks"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    return target


def databricks_resources(cfg: AgentConfig) -> list[DatabricksResource]:
    """The Databricks resources a config uses, so Model Serving can grant the agent access to them.

    A `databricks-vector-search` retriever gives its index (and the endpoint that embeds queries,
    when `retriever.options.embedding_endpoint` names one); a `databricks:<endpoint>` llm gives its
    serving endpoint; `uc:` tools give their functions and the SQL warehouse they run on; `mcp:` tools of
    Databricks managed MCP servers give their Genie spaces, functions and indexes.
    """
    from mlflow.models.resources import (
        DatabricksFunction,
        DatabricksServingEndpoint,
        DatabricksSQLWarehouse,
        DatabricksVectorSearchIndex,
    )

    resources: list[DatabricksResource] = []
    if cfg.retriever.type == "databricks-vector-search":
        resources.append(DatabricksVectorSearchIndex(index_name=cfg.retriever.index))
        embedding_endpoint = cfg.retriever.options.get("embedding_endpoint")
        if embedding_endpoint:
            resources.append(DatabricksServingEndpoint(endpoint_name=str(embedding_endpoint)))
    if cfg.llm.startswith(_DATABRICKS):
        resources.append(DatabricksServingEndpoint(endpoint_name=cfg.llm.removeprefix(_DATABRICKS)))
    functions = _uc_functions(cfg)
    resources.extend(DatabricksFunction(function_name=name) for name in functions)
    warehouse = env_flag(WAREHOUSE_ENV)
    if functions and warehouse:
        resources.append(DatabricksSQLWarehouse(warehouse_id=warehouse))
    resources.extend(mcp_databricks_resources(cfg))  # managed MCP servers: Genie spaces, functions, indexes
    return resources


def _uc_functions(cfg: AgentConfig) -> list[str]:
    """The Unity Catalog functions a tool-calling config uses as tools."""
    if cfg.agent != "tool-calling":
        return []
    return [spec.removeprefix(UC_PREFIX) for spec in cfg.tools if spec.startswith(UC_PREFIX)]


def needed_extras(cfg: AgentConfig) -> set[str]:
    """The ragworks extras the logged agent needs where it is served."""
    extras: set[str] = set()
    if (
        cfg.retriever.type == "databricks-vector-search"
        or cfg.llm.startswith(_DATABRICKS)
        or _uc_functions(cfg)
    ):
        extras.add("databricks")
    extras |= mcp_extras(cfg)
    if cfg.retriever.type == "local" and index_embedder(Path(cfg.retriever.index)) == "minilm":
        extras.add("dense")
    if _offline_uses_minilm(cfg.llm):
        extras.add("dense")  # served as evaluated: plain `offline` would fall back to lexical without it
    return extras


def _offline_uses_minilm(llm: str) -> bool:
    """True for `offline:minilm`; plain `offline` uses MiniLM only over a MiniLM index (dense already)."""
    return llm == "offline:minilm"


def pinned_requirements(cfg: AgentConfig) -> list[str]:
    """ragworks' dependencies (and the extras `cfg` needs), pinned to the versions installed here.

    Dependencies that are not installed here are left unpinned, with their original specifier.
    """
    extras = needed_extras(cfg)
    pins: dict[str, str] = {}
    for line in importlib.metadata.requires("ragworks") or []:
        req = Requirement(line)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
            continue
        pins.setdefault(req.name.lower(), _pin(req))
    return sorted(pins.values())


def _pin(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    try:
        installed = Version(importlib.metadata.version(req.name)).public  # drop local labels like +cpu
    except (importlib.metadata.PackageNotFoundError, InvalidVersion):
        logger.info("%s is not installed here; its requirement stays %r", req.name, str(req.specifier))
        return f"{req.name}{extras}{req.specifier}"
    return f"{req.name}{extras}=={installed}"


__all__ = [
    "ENTRY_FILE",
    "INDEX_ARTIFACT",
    "INPUT_EXAMPLE",
    "databricks_resources",
    "log_agent",
    "logged_config",
    "needed_extras",
    "pinned_requirements",
    "shipped_artifact",
    "stage_package",
]
