"""The LLM judge's preflight: one `GET /models` proves the key and the endpoint before any row runs."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import openai
import pytest

from ragworks.errors import ConfigError, EvalError
from ragworks.eval._llm_judge import JudgeClient, LLMJudge, make_client

BASE = "http://127.0.0.1:9/v1"


def _judge(handler: Callable[[httpx.Request], httpx.Response], seen: list[httpx.Request]) -> LLMJudge:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    def factory() -> openai.OpenAI:
        http = httpx.Client(transport=httpx.MockTransport(record))
        return openai.OpenAI(base_url=BASE, api_key="sk-test", http_client=http, max_retries=0)

    return LLMJudge(JudgeClient("judge-model", client_factory=factory, cache=None), name="openai:judge-model")


@pytest.mark.parametrize("status", [200, 404, 405])
def test_an_endpoint_that_answers_passes_with_one_request(status: int) -> None:
    seen: list[httpx.Request] = []
    judge = _judge(lambda request: httpx.Response(status, json={"object": "list", "data": []}), seen)
    judge.check()
    assert [(r.method, r.url.path) for r in seen] == [("GET", "/v1/models")]
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert judge.client.stats.calls == 0  # the preflight is not a judge call


def test_rejected_credentials_are_a_config_error_that_names_the_key() -> None:
    judge = _judge(lambda request: httpx.Response(401, json={"error": {"message": "bad key"}}), [])
    with pytest.raises(ConfigError, match=r"rejected the credentials \(HTTP 401\).*OPENAI_API_KEY"):
        judge.check()


def test_a_server_error_is_an_eval_error_with_the_status() -> None:
    judge = _judge(lambda request: httpx.Response(503, json={"error": {"message": "down"}}), [])
    with pytest.raises(EvalError, match=r"answered HTTP 503 to a preflight call"):
        judge.check()


@pytest.mark.parametrize(
    ("failure", "words"),
    [(httpx.ConnectError("refused"), "is unreachable"), (httpx.ReadTimeout("slow"), "timed out")],
)
def test_an_endpoint_that_does_not_answer_is_named(failure: Exception, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(EvalError, match=f"the endpoint {BASE} {words}") as caught:
        _judge(handler, []).check()
    assert "\n" not in str(caught.value)


def test_no_key_and_no_base_url_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    judge = LLMJudge(make_client("openai", "m", cache=False), name="openai:m")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        judge.check()
