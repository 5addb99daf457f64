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
    name: str = "offline",
    *,
    temperature: float = 0.0,
    max_tokens: int | None = None,
    timeout_s: float = 60.0,
    max_retries: int = 2,
) -> BaseChatModel:
    """Build the chat model a config names; no network call and no key lookup happen here.

    Args:
        name: `offline` (`offline:minilm`, `offline:lexical`: how it matches sentences to the question;
            plain `offline` uses MiniLM when the dense extra is installed), `openai:<model>` or
            `databricks:<endpoint>`.
        temperature: Sampling temperature (remote models).
        max_tokens: Longest answer, in tokens.
        timeout_s: Seconds one call may take (remote models), capped by the request's time left.
        max_retries: Further attempts after a 429, a 5xx, a timeout or a connection error (remote models).
    """
    provider, _, model = name.partition(":")
    if provider == "offline":
        from ragworks.agents.offline import OfflineChatModel
        from ragworks.agents.sentence_similarity import SIMILARITIES, sentence_similarity

        similarity = model or "auto"
        if similarity not in SIMILARITIES or name == "offline:auto":
            raise ConfigError(
                f"Unknown offline model {name!r}: use 'offline', 'offline:minilm' or 'offline:lexical'."
            )
        sentence_similarity(similarity)  # `offline:minilm` without the dense extra fails here, not per reply
        return OfflineChatModel(max_tokens=max_tokens, similarity=similarity)
    if provider in ("openai", "databricks") and model:
        from ragworks.agents.openai_chat import OpenAIChatModel

        return OpenAIChatModel(
            model_name=model,
            client_factory=make_databricks_client if provider == "databricks" else make_openai_client,
            provider=provider,
            temperature=temperature,
            max_tokens=max_tokens,
            timeout_s=timeout_s,
            max_retries=max_retries,
        )
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
    # Retries and per-call timeouts are the chat model's (bounded by the request being served).
    return openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=60.0)


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
    return openai.OpenAI(api_key=token, base_url=f"{host}/serving-endpoints", max_retries=0, timeout=60.0)
