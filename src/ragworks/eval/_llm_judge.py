"""LLM judges over any OpenAI-compatible endpoint (OpenAI, a local server, Databricks serving).

`JudgeClient` sends one JSON-mode chat call per judgement step: at most `concurrency` calls in
flight, retries with exponential backoff on 429 / 5xx / timeouts / malformed JSON (honouring
Retry-After), and a SQLite cache keyed by model + prompt version + inputs. `LLMJudge` turns replies
into `Judgement`s: faithfulness = supported claims / claims.
"""

from __future__ import annotations

import copy
import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from ragworks.config import env_flag
from ragworks.errors import ConfigError, EvalError
from ragworks.eval import prompts as P
from ragworks.eval._cache import JudgeCache, cache_key, default_cache_path, repeat_key
from ragworks.eval.judges import Judgement

logger = logging.getLogger(__name__)
R = TypeVar("R", bound=BaseModel)
_RETRY_STATUS = {408, 409, 429}
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
MAX_PASSAGE_CHARS = 4000
PREFLIGHT_TIMEOUT_S = 5.0
"""Seconds the judge's preflight call may take: a live endpoint answers a model list at once."""


class _Claims(BaseModel):
    claims: list[str]


class _Verdict(BaseModel):
    claim: str = ""
    supported: bool
    reason: str = ""


class _Verdicts(BaseModel):
    verdicts: list[_Verdict]


class _Relevance(BaseModel):
    rating: int = Field(ge=1, le=5)
    noncommittal: bool = False
    rationale: str = ""


class _Passage(BaseModel):
    relevant: bool
    rationale: str = ""


class _Fact(BaseModel):
    fact: str = ""
    present: bool
    reason: str = ""


class _Facts(BaseModel):
    facts: list[_Fact]


@dataclass(slots=True)
class ClientStats:
    """Counters of one client: HTTP calls sent, cache hits, retries and failed judgements."""

    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0


class _SchemaRefused(Exception):
    """The endpoint answered 400 / 422 to a JSON schema `response_format`."""


class _Retryable(Exception):
    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class JudgeClient:
    """JSON chat completions with bounded concurrency, retries and a cache."""

    schema_refused: bool = False
    """True once the endpoint refused a JSON schema `response_format`: later calls ask for JSON mode."""
    repeat: int = 0
    """Which judging of the same inputs this is (see `for_repeat`); part of the cache key when not 0."""

    def __init__(
        self,
        model: str,
        *,
        client_factory: Callable[[], Any],
        headers: Callable[[], dict[str, str]] | None = None,
        cache: JudgeCache | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        json_mode: bool = True,
    ) -> None:
        self.model = model
        self.cache = cache
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.json_mode = json_mode
        self.stats = ClientStats()
        self._factory = client_factory
        self._headers = headers
        self._client: Any = None  # Any: openai.OpenAI, created on first use (secrets resolved late)
        self._slots = threading.BoundedSemaphore(max(1, concurrency))
        self._lock = threading.Lock()

    def complete(
        self,
        prompt: P.Prompt,
        schema: type[R],
        *,
        response_format: dict[str, Any] | None = None,
        **values: str,
    ) -> R:
        """Ask the model; return its reply validated against `schema` (cached when a cache is set).

        `response_format` (Any: JSON) is sent instead of JSON mode, e.g. a JSON schema; an endpoint
        that refuses it gets JSON mode from then on, and the reply is validated against `schema` either way.
        """
        messages = prompt.render(**values)
        key = repeat_key(cache_key(self.model, prompt.id, prompt.version, messages), self.repeat)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self._count("cache_hits")
            return schema.model_validate(hit)
        try:
            reply = self._with_retries(prompt, schema, messages, response_format)
        except EvalError:
            self._count("failures")
            raise
        if self.cache is not None:
            self.cache.put(key, reply.model_dump(mode="json"), model=self.model, prompt=prompt.key)
        return reply

    def _with_retries(
        self,
        prompt: P.Prompt,
        schema: type[R],
        messages: list[dict[str, str]],
        response_format: dict[str, Any] | None = None,
    ) -> R:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return _parse(self._send_structured(prompt, messages, attempt, response_format), schema)
            except _Retryable as exc:
                if attempt == self.max_attempts:
                    raise EvalError(
                        f"Judge {self.model} failed on {prompt.key} after {attempt} attempts: {exc}"
                    ) from None
                self._count("retries")
                time.sleep(self._delay(attempt, exc.delay))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, hinted: float | None) -> float:
        if hinted is not None:
            return min(max(hinted, 0.0), self.max_backoff)
        base = self.backoff * 2 ** (attempt - 1)
        return min(base * (0.5 + random.random()), self.max_backoff)  # full jitter around the base

    def _send_structured(
        self,
        prompt: P.Prompt,
        messages: list[dict[str, str]],
        attempt: int,
        response_format: dict[str, Any] | None,
    ) -> str:
        if response_format is None or self.schema_refused:
            return self._send(prompt, messages, attempt)
        try:
            return self._send(prompt, messages, attempt, response_format)
        except _SchemaRefused:
            if not self.schema_refused:
                logger.warning(
                    "Judge %s refused a JSON schema response_format; asking for JSON mode and "
                    "validating the replies instead.",
                    self.model,
                )
            self.schema_refused = True
            return self._send(prompt, messages, attempt)

    def _send(
        self,
        prompt: P.Prompt,
        messages: list[dict[str, str]],
        attempt: int,
        response_format: dict[str, Any] | None = None,
    ) -> str:
        import openai
        from openai.types.chat import ChatCompletion

        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0.0}
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        if response_format is not None:
            body["response_format"] = response_format
        headers = self._headers() if self._headers is not None else {}
        logger.info("Judge call %s %s (attempt %d)", self.model, prompt.key, attempt)
        with self._slots:
            self._count("calls")
            try:
                # The client's plain POST, not `chat.completions.create`: MLflow's OpenAI
                # autologging (on while `mlflow.genai.evaluate` runs) patches `create` and would
                # trace every judge call into the experiment.
                response = self._openai().post(
                    "/chat/completions", body=body, cast_to=ChatCompletion, options={"headers": headers}
                )
            except openai.APIConnectionError as exc:  # includes APITimeoutError
                raise _Retryable(type(exc).__name__) from None
            except openai.APIStatusError as exc:
                if exc.status_code in _RETRY_STATUS or exc.status_code >= 500:
                    raise _Retryable(f"HTTP {exc.status_code}", _retry_after(exc.response)) from None
                if response_format is not None and exc.status_code in (400, 422):
                    raise _SchemaRefused from None
                raise EvalError(f"Judge {self.model} rejected the request: HTTP {exc.status_code}.") from None
        choices = getattr(response, "choices", None) or []
        return (choices[0].message.content or "") if choices else ""

    def preflight(self, *, timeout: float = PREFLIGHT_TIMEOUT_S) -> None:
        """One cheap call (`GET /models`, no tokens) to prove the key and the endpoint, before any row runs.

        A 404 or 405 (servers that have no model list) still proves the endpoint answers.

        Raises:
            ConfigError: no key is configured, or the server rejected it (401 / 403).
            EvalError: the endpoint is unreachable, timed out, or answered with a server error.
        """
        import openai

        client = self._openai()  # ConfigError when there is no key
        where = str(getattr(client, "base_url", "")).rstrip("/")
        headers = self._headers() if self._headers is not None else {}
        fix = "Check OPENAI_BASE_URL / the endpoint, or use --judge offline."
        try:
            client.with_options(timeout=timeout, max_retries=0).get(
                "/models", cast_to=object, options={"headers": headers}
            )
        except openai.APIConnectionError as exc:  # includes APITimeoutError
            reason = "timed out" if isinstance(exc, openai.APITimeoutError) else "is unreachable"
            raise EvalError(
                f"Judge {self.model}: the endpoint {where} {reason} (after {timeout:g} s). {fix}"
            ) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in (401, 403):
                raise ConfigError(
                    f"Judge {self.model}: {where} rejected the credentials (HTTP {status}). "
                    "Set a valid OPENAI_API_KEY (or the Databricks token), or use --judge offline."
                ) from None
            if status >= 500:
                raise EvalError(
                    f"Judge {self.model}: {where} answered HTTP {status} to a preflight call. {fix}"
                ) from None
            logger.debug("Judge preflight: %s answered HTTP %d (the endpoint is up).", where, status)

    def for_repeat(self, repeat: int) -> JudgeClient:
        """This client (same connection, bound, counters and cache) for repeat `repeat` of a judging."""
        self.connect()  # the twin shares the HTTP client instead of creating its own
        twin = copy.copy(self)
        twin.repeat = repeat
        return twin

    def connect(self) -> None:
        """Create the HTTP client now, on this thread (see `LLMJudge.prepare`); errors wait for a call."""
        try:
            self._openai()
        except Exception as exc:  # e.g. no API key: each judge call reports it on its row
            logger.debug("Judge client not created yet: %s", exc)

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._factory()
            return self._client

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)


def _retry_after(response: Any) -> float | None:
    """Seconds the server asked us to wait (retry-after-ms, or Retry-After seconds / HTTP date)."""
    headers = getattr(response, "headers", None) or {}
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value)
        return None if when is None else max(0.0, when.timestamp() - time.time())


def _parse(text: str, schema: type[R]) -> R:
    cleaned = _FENCE.sub("", text.strip())
    start, end = cleaned.find("{"), cleaned.rfind("}")
    try:
        return schema.model_validate(json.loads(cleaned[start : end + 1] if start >= 0 else cleaned))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise _Retryable(f"malformed JSON reply ({type(exc).__name__})") from None


class LLMJudge:
    """The judge backed by a chat model (see the prompts in `ragworks.eval.prompts`)."""

    def __init__(self, client: JudgeClient, *, name: str) -> None:
        self.client = client
        self.name = name

    def prepare(self) -> None:
        """Create the client on the calling thread before judging from a pool.

        Creating it imports modules (httpx transports, TLS); on a judge thread while
        `mlflow.genai.evaluate` sets up autologging, those imports deadlock with MLflow's import hooks.
        """
        self.client.connect()

    def check(self) -> None:
        """Prove the key and the endpoint with one cheap call (see `JudgeClient.preflight`)."""
        self.client.preflight()

    def for_repeat(self, repeat: int) -> LLMJudge:
        """This judge for repeat `repeat` of the same rows: a fresh call, not the cached reply."""
        return LLMJudge(self.client.for_repeat(repeat), name=self.name)

    def faithfulness(self, question: str, answer: str, contexts: Sequence[str]) -> Judgement:
        """Split the answer into claims, verify each against the contexts; score = supported share."""
        if not answer.strip():
            return Judgement(score=0.0, rationale="The answer is empty.")
        claims = self.client.complete(P.CLAIMS, _Claims, question=question, answer=answer).claims
        claims = [c for c in claims if c.strip()]
        if not claims:
            return Judgement(score=1.0, rationale="The answer makes no factual claims.", details=self._meta())
        passages = P.numbered([c[:MAX_PASSAGE_CHARS] for c in contexts]) or "(no passages retrieved)"
        verdicts = self.client.complete(
            P.VERIFY, _Verdicts, contexts=passages, claims=P.numbered(claims)
        ).verdicts
        if len(verdicts) != len(claims):
            raise EvalError(f"Judge {self.name} gave {len(verdicts)} verdicts for {len(claims)} claims.")
        unsupported = [c for c, v in zip(claims, verdicts, strict=True) if not v.supported]
        rationale = f"{len(claims) - len(unsupported)} of {len(claims)} claims are supported by the context"
        rationale += ". Unsupported: " + "; ".join(unsupported) + "." if unsupported else "."
        details = {
            "claims": [
                {"claim": c, "supported": v.supported, "reason": v.reason}
                for c, v in zip(claims, verdicts, strict=True)
            ],
            **self._meta(P.CLAIMS, P.VERIFY),
        }
        return Judgement(score=1 - len(unsupported) / len(claims), rationale=rationale, details=details)

    def answer_relevance(self, question: str, answer: str) -> Judgement:
        """Rubric rating 1-5 mapped to [0, 1]; a noncommittal answer scores 0."""
        reply = self.client.complete(P.ANSWER_RELEVANCE, _Relevance, question=question, answer=answer)
        score = 0.0 if reply.noncommittal else (reply.rating - 1) / 4
        prefix = "Noncommittal. " if reply.noncommittal else f"Rated {reply.rating}/5. "
        details = {
            "rating": reply.rating,
            "noncommittal": reply.noncommittal,
            **self._meta(P.ANSWER_RELEVANCE),
        }
        return Judgement(score=score, rationale=prefix + reply.rationale, details=details)

    def context_relevance(self, question: str, passage: str) -> Judgement:
        """A relevant / not relevant verdict on one passage."""
        reply = self.client.complete(
            P.CONTEXT_RELEVANCE, _Passage, question=question, passage=passage[:MAX_PASSAGE_CHARS]
        )
        details = {"relevant": reply.relevant, **self._meta(P.CONTEXT_RELEVANCE)}
        return Judgement(score=float(reply.relevant), rationale=reply.rationale, details=details)

    def correctness(
        self,
        question: str,
        answer: str,
        *,
        expected_response: str | None = None,
        expected_facts: Sequence[str] | None = None,
    ) -> Judgement:
        """Share of expected facts (the expected response counts as one fact) the answer states."""
        facts = list(expected_facts or []) or ([expected_response] if expected_response else [])
        if not facts:
            return Judgement(score=0.0, rationale="No expected facts or response to compare with.")
        reply = self.client.complete(
            P.CORRECTNESS, _Facts, question=question, answer=answer, facts=P.numbered(facts)
        )
        if len(reply.facts) != len(facts):
            raise EvalError(f"Judge {self.name} gave {len(reply.facts)} verdicts for {len(facts)} facts.")
        missing = [f for f, v in zip(facts, reply.facts, strict=True) if not v.present]
        rationale = f"{len(facts) - len(missing)} of {len(facts)} expected facts stated"
        rationale += "; missing: " + "; ".join(missing) + "." if missing else "."
        details = {"facts": [v.model_dump() for v in reply.facts], **self._meta(P.CORRECTNESS)}
        return Judgement(score=1 - len(missing) / len(facts), rationale=rationale, details=details)

    def _meta(self, *used: P.Prompt) -> dict[str, Any]:
        return {"model": self.client.model, "prompts": [p.key for p in used]}


def make_client(
    provider: str,
    model: str,
    *,
    cache: str | Path | bool | None = True,
    concurrency: int = 8,
    timeout: float = 60.0,
    max_attempts: int = 5,
) -> JudgeClient:
    """A JudgeClient for `openai` (OPENAI_BASE_URL / OPENAI_API_KEY) or `databricks` (SDK auth)."""
    store = None
    if cache:
        store = JudgeCache(default_cache_path() if cache is True else Path(cache))
    options = {"cache": store, "concurrency": concurrency, "timeout": timeout, "max_attempts": max_attempts}
    if provider == "databricks":
        factory, headers = _databricks(timeout)
        return JudgeClient(model, client_factory=factory, headers=headers, **options)  # type: ignore[arg-type]
    return JudgeClient(model, client_factory=lambda: _openai_client(timeout), **options)  # type: ignore[arg-type]


def _openai_client(timeout: float) -> Any:
    import openai

    base_url = env_flag("OPENAI_BASE_URL")
    api_key = env_flag("OPENAI_API_KEY")
    if not api_key and not base_url:
        raise ConfigError(
            "An openai:<model> judge needs OPENAI_API_KEY (and OPENAI_BASE_URL for another "
            "OpenAI-compatible server), or use --judge offline."
        )
    return openai.OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=0)


def _databricks(timeout: float) -> tuple[Callable[[], Any], Callable[[], dict[str, str]]]:
    try:
        from databricks.sdk.core import Config
    except ImportError as exc:
        raise ConfigError(
            "A databricks:<endpoint> judge needs the databricks extra: pip install 'ragworks[databricks]'."
        ) from exc
    config = Config()

    def factory() -> Any:
        import openai

        host = (config.host or "").rstrip("/")
        # The Authorization header comes from the SDK on every call (tokens may refresh).
        return openai.OpenAI(
            base_url=f"{host}/serving-endpoints", api_key="databricks-sdk", timeout=timeout, max_retries=0
        )

    return factory, config.authenticate
