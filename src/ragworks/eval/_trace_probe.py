"""Whether MLflow traces calls right now: the one MLflow internal the conversation player reads.

`mlflow.genai.evaluate` (and our fast path, as it) first calls `predict_fn` once on the first row
with tracing turned off, to learn whether it traces itself. That call's answer is never scored, so
a conversation must not carry it into its next turn's history. `tracing_on` tells the two apart;
where this MLflow lacks `mlflow.tracing.provider.is_tracing_enabled`, it says True (every call
counts, as before) and logs so once.

Example:
    >>> tracing_on() in (True, False)
    True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)


def _detect() -> Callable[[], bool] | None:
    try:
        from mlflow.tracing.provider import is_tracing_enabled
    except ImportError:
        return None
    return is_tracing_enabled if callable(is_tracing_enabled) else None


_is_tracing_enabled = _detect()
AVAILABLE = _is_tracing_enabled is not None
"""Whether this MLflow says if tracing is on (else `tracing_on` is always True)."""
_fallback_logged = threading.Event()


def tracing_on() -> bool:
    """True unless MLflow's tracing is off now (as during evaluate's untraced first-row check)."""
    if _is_tracing_enabled is None:
        if not _fallback_logged.is_set():
            _fallback_logged.set()
            logger.warning(
                "This MLflow lacks mlflow.tracing.provider.is_tracing_enabled: a conversation's first "
                "turn may be answered twice (evaluate's trace check, then the scored call)."
            )
        return True
    try:
        return bool(_is_tracing_enabled())
    except Exception:  # a failed check must not stop the evaluation: count the call
        return True
