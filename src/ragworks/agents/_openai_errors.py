"""What a failed `openai` call means for the caller: a `ModelError` with its message, HTTP status and wait.

    the model timed out (or answered 504)          504
    the model answered 429, or 503 (overloaded)    503, with `retry_after` from its Retry-After header
    anything else (401/403/404, 5xx, bad replies)  502, with a message saying what to check

Example:
    >>> model_error(exc, "openai:gpt-4o-mini", timeout=30.0).status  # doctest: +SKIP
    503
"""

from __future__ import annotations

import email.utils
import time

import openai

from ragworks.errors import ModelError

RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})


def model_error(exc: openai.APIError, label: str, *, timeout: float) -> ModelError:
    """The `ModelError` for a failed call to the model `label` (`provider:name`)."""
    provider = label.partition(":")[0]
    if isinstance(exc, openai.APITimeoutError):
        return ModelError(
            f"The model {label} did not answer within {timeout:.3g} s (llm_options.timeout_s, capped by "
            "the request's time left). Retry, or raise the timeout.",
            status=504,
        )
    if isinstance(exc, openai.APIConnectionError):
        hint = "DATABRICKS_HOST" if provider == "databricks" else "OPENAI_BASE_URL"
        return ModelError(f"Cannot reach the model {label}: {exc}. Check {hint} and the network.", status=502)
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc, label, provider)
    return ModelError(f"The model {label} failed: {exc}", status=502)


def _status_error(exc: openai.APIStatusError, label: str, provider: str) -> ModelError:
    code = exc.status_code
    wait = retry_after(exc.response.headers)
    if code in (401, 403):
        hint = "DATABRICKS_TOKEN / your Databricks profile" if provider == "databricks" else "OPENAI_API_KEY"
        return ModelError(
            f"The model {label} rejected the credentials ({code}): the key is wrong or lacks access. "
            f"Check {hint}.",
            status=502,
        )
    if code == 404:
        return ModelError(
            f"The model {label} was not found (404): check the name after '{provider}:' in `llm`.",
            status=502,
        )
    if code == 429:
        return ModelError(
            f"The model {label} is rate limited (429) even after retries. Wait, or lower concurrency.",
            status=503,
            retry_after=wait,
        )
    if code == 503:
        return ModelError(
            f"The model {label} is overloaded (503): {exc.message}. Retry later.",
            status=503,
            retry_after=wait,
        )
    if code == 504:
        return ModelError(f"The model {label} timed out upstream (504): {exc.message}", status=504)
    return ModelError(f"The model {label} failed with HTTP {code}: {exc.message}", status=502)


def retryable(exc: openai.APIError) -> bool:
    """True for failures another attempt may fix: connection errors, timeouts, 408/409/429/5xx."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code in RETRYABLE_STATUSES


def retry_after(headers: object) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, or `Retry-After` as seconds or a date)."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    millis = get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
