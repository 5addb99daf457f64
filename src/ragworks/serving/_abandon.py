"""End the AGENT span of a stream the client abandoned, so its trace is stored complete, marked cancelled.

MLflow's `@mlflow.trace` wrapper of a generator (which ResponsesAgent applies to `predict_stream`) ends
its span only when the generator finishes or raises; a generator closed part-way (the client hung up)
leaves the span open forever, and with it a trace that is never exported. No public API reaches that
span, so this module reads it from the suspended wrapper's frame (its `span` and `generator` locals),
checked once at import against MLflow's code. When the check fails the stream is simply closed, and
one warning says that such traces will be missing.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator
from types import CodeType, GeneratorType
from typing import Any

from mlflow.entities import LiveSpan, SpanEvent, SpanStatus, SpanStatusCode

logger = logging.getLogger(__name__)

_LOCALS = ("span", "generator", "outputs")


class StreamCancelled(Exception):
    """Recorded on the AGENT span of a stream nobody was reading any more."""


def _wrapper_codes() -> Iterator[CodeType]:
    try:
        from mlflow.tracing.fluent import _wrap_generator
    except ImportError:
        return
    stack = [_wrap_generator.__code__]
    while stack:
        code = stack.pop()
        for const in code.co_consts:
            if isinstance(const, CodeType):
                if const.co_name == "wrapper":
                    yield const
                stack.append(const)


def _supported() -> bool:
    """Whether MLflow's generator wrapper keeps the locals this module reads."""
    codes = list(_wrapper_codes())
    return bool(codes) and all(set(_LOCALS) <= set(code.co_varnames) for code in codes)


SUPPORTED = _supported()
"""True on the MLflow versions ragworks supports; a test fails when it is not."""
_warned = False


def close_abandoned(stream: GeneratorType[Any, None, None], *, reason: str) -> bool:
    """Close a stream the client left: the agent's generator first, then its AGENT span with an error.

    Returns True when a span was ended here, False when there was none (the stream never started, or
    it was not traced) or this MLflow cannot be reached into (then the stream is only closed).
    """
    frame = stream.gi_frame
    names = frame.f_locals if frame is not None and SUPPORTED else {}
    span, inner = names.get("span"), names.get("generator")
    if isinstance(inner, Generator):
        try:
            inner.close()  # the agent's own cleanup first: its child spans end before their parent
        except Exception as exc:  # its cleanup failing must not keep the AGENT span open
            logger.warning("Closing an abandoned agent stream failed: %s", exc)
    ended = isinstance(span, LiveSpan) and _end(span, reason)
    if not ended:
        _warn_once(stream)
    stream.close()  # the wrapper returns without touching the span again
    return ended


def end_cancelled(span: LiveSpan, reason: str) -> bool:
    """End `span` as cancelled (an exception event and an ERROR status); False for an untraced span."""
    return _end(span, reason)


def _end(span: LiveSpan, reason: str) -> bool:
    if not span.span_id:  # a no-op span: this request was not sampled
        return False
    span.add_event(SpanEvent.from_exception(StreamCancelled(reason)))
    span.end(status=SpanStatus(SpanStatusCode.ERROR, f"Cancelled: {reason}"))
    return True


def _warn_once(stream: GeneratorType[Any, None, None]) -> None:
    global _warned
    if SUPPORTED or _warned or stream.gi_frame is None:
        return
    _warned = True
    logger.warning(
        "This MLflow's stream tracing cannot be reached: traces of streams that clients abandon "
        "will not be stored. Install an MLflow version that ragworks supports."
    )
