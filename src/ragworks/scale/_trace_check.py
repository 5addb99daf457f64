"""Whether a predict_fn makes its own trace, decided once on the driver as `mlflow.genai.evaluate` decides it.

`evaluate` (and the local eval run, through MLflow's `convert_predict_fn`) calls the function once,
untraced, on the suite's first row, counts the spans it tries to start, and wraps it in
`mlflow.trace` when it starts none; a first row that fails stops the run. A Spark run makes the
same one check on the driver and tells the executors the answer, so no partition repeats it (a
partition whose first row fails would otherwise fail the whole job). This reaches two MLflow
internals, feature-detected here: `NoOpTracerPatcher` and `check_model_prediction`. Where they are
missing, `traces_itself` returns None after one log line and each partition runs MLflow's own check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

logger = logging.getLogger(__name__)


def _find_missing() -> tuple[str, ...]:
    missing = []
    try:
        from mlflow.genai.utils.trace_utils import NoOpTracerPatcher  # noqa: F401
    except ImportError:
        missing.append("mlflow.genai.utils.trace_utils.NoOpTracerPatcher")
    try:
        from mlflow.genai.utils.data_validation import check_model_prediction  # noqa: F401
    except ImportError:
        missing.append("mlflow.genai.utils.data_validation.check_model_prediction")
    return tuple(missing)


MISSING = _find_missing()
"""The internals this MLflow lacks (empty on the supported versions)."""
_fallback_logged = threading.Event()


def traces_itself(predict_fn: Callable[..., object], sample: Mapping[str, Any]) -> bool | None:
    """True when `predict_fn(**sample)` starts spans of its own (run once, untraced), as MLflow checks it.

    Also True when MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION is set (MLflow then never wraps); None
    where this MLflow lacks the internals (see the module docstring). Raises MLflow's error when
    the call fails, as the local run does.
    """
    from mlflow.environment_variables import MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION

    if MLFLOW_GENAI_EVAL_SKIP_TRACE_VALIDATION.get() or not sample:
        return True
    if MISSING:
        if not _fallback_logged.is_set():
            _fallback_logged.set()
            logger.warning(
                "This MLflow lacks %s: each Spark partition checks its own first row for tracing.",
                ", ".join(MISSING),
            )
        return None
    from mlflow.genai.utils.data_validation import check_model_prediction
    from mlflow.genai.utils.trace_utils import NoOpTracerPatcher
    from mlflow.models.evaluation.utils.trace import configure_autologging_for_evaluation

    with NoOpTracerPatcher() as counter, configure_autologging_for_evaluation(enable_tracing=True):
        check_model_prediction(predict_fn, dict(sample))
    return counter.count > 0
