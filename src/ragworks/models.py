"""Chat models by name: `offline`, `openai:<model>`, `databricks:<endpoint>`.

    offline                 the extractive offline model: no network, no key
    openai:<model>          any OpenAI-compatible server via the `openai` client
                            (OPENAI_API_KEY, OPENAI_BASE_URL)
    databricks:<endpoint>   Databricks Model Serving via its OpenAI-compatible route
                            `{host}/serving-endpoints`, authenticated by databricks-sdk's `Config`

Example:
    >>> get_chat_model("offline").invoke("hello").content
    'I could not find this in the documents.'
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from langchain_core.language_models import BaseChatModel

from ragworks.config import env_flag
from ragworks.errors import ConfigError

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import openai


def get_chat_model(
    name: str = "offline", *, temperature: float = 0.0, max_tokens: int | None = None
) -> BaseChatModel:
    """Build the chat model a config names; no network call and no key lookup happen here."""
    if name == "offline":
        from ragworks.agents.offline import OfflineChatModel

        return OfflineChatModel(max_tokens=max_tokens)
    provider, _, model = name.partition(":")
    if provider == "openai" and model:
        return _openai_model(model, temperature=temperature, max_tokens=max_tokens)
    if provider == "databricks" and model:
        return _databricks_model(model, temperature=temperature, max_tokens=max_tokens)
    raise ConfigError(
        f"Unknown chat model {name!r}. Use 'offline', 'openai:<model>' (e.g. 'openai:gpt-4o-mini') "
        "or 'databricks:<serving endpoint>'."
    )


def make_openai_client() -> openai.OpenAI:
    """An `openai.OpenAI` client from OPENAI_API_KEY / OPENAI_BASE_URL, read now."""
    import openai

    base_url = env_flag("OPENAI_BASE_URL") or None
    api_key = env_flag("OPENAI_API_KEY")
    if not api_key:
        if not base_url:
            raise ConfigError(
                "No OpenAI key found: set OPENAI_API_KEY, or OPENAI_BASE_URL for a local "
                "OpenAI-compatible server, or use llm: offline."
            )
        api_key = "unused"  # local servers (vLLM, Ollama, the test stub) accept any key
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=2, timeout=120.0)


def _openai_model(model: str, *, temperature: float, max_tokens: int | None) -> BaseChatModel:
    from ragworks.agents.openai_chat import OpenAIChatModel

    return OpenAIChatModel(
        model_name=model,
        client_factory=make_openai_client,
        temperature=temperature,
        max_tokens=max_tokens,
    )


def make_databricks_client() -> openai.OpenAI:
    """An `openai.OpenAI` client for `{host}/serving-endpoints`, with a token that refreshes per request."""
    import openai

    try:
        from databricks.sdk.core import Config
    except ImportError:
        raise ConfigError(
            "databricks:<endpoint> models need databricks-sdk: pip install 'ragworks[databricks]'"
        ) from None
    try:
        config = Config()
    except Exception as exc:  # the SDK raises ValueError subclasses with its own advice
        raise ConfigError(f"Databricks authentication is not configured: {exc}") from exc

    def token() -> str:
        header = config.authenticate().get("Authorization", "")
        return header.removeprefix("Bearer ")

    host = (config.host or "").rstrip("/")
    return openai.OpenAI(api_key=token, base_url=f"{host}/serving-endpoints", max_retries=2, timeout=120.0)


def _databricks_model(endpoint: str, *, temperature: float, max_tokens: int | None) -> BaseChatModel:
    from ragworks.agents.openai_chat import OpenAIChatModel

    return OpenAIChatModel(
        model_name=endpoint,
        client_factory=make_databricks_client,
        provider="databricks",
        temperature=temperature,
        max_tokens=max_tokens,
    )
