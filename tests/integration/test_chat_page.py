"""The chat page in headless Chromium against our app on 127.0.0.1, with a scripted model.

One browser and one server for the module. A recording ASGI wrapper around the app keeps every POST
body the page sends, and answers a route itself where a test needs a server reply that the app does
not give (a lost conversation, a stream cut short, feedback before that route exists).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import mlflow
import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.retrievers import BaseRetriever

from ragworks.agents.graphs import build_rag_graph
from ragworks.agents.responses_agent import RagResponsesAgent
from ragworks.config import AgentConfig
from ragworks.errors import RetrievalError
from ragworks.serving import build_app, serve_in_thread
from ragworks.serving._dispatch import RESPONSE_ID_TAG
from ragworks.serving.feedback import FEEDBACK_NAME
from ragworks.testing import ScriptedChatModel

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "page-token"
WAIT_S = 60  # the first traced request of a test run creates the MLflow store (~20 s on 2 cores)

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)
from selenium.webdriver.common.by import By  # noqa: E402  # after the skip: selenium may be absent
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 1">'
GATE = threading.Event()
"""Questions with "slow" in them wait for this before retrieval returns (the pending indicator test)."""


def _doc(source: str, chunk: int, text: str) -> Document:
    return Document(
        id=f"{source}#{chunk}", page_content=text, metadata={"source": source, "chunk_index": chunk}
    )


class PageRetriever(BaseRetriever):
    """Three chunks (two of one file); hostile ones for "hostile"; a failure for "explode"."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if "explode" in query:
            raise RetrievalError("The index backend is down; try again once it is back.")
        if "slow" in query:
            GATE.wait(WAIT_S)
        if "hostile" in query:
            return [_doc("javascript:window.__pwned=1", 0, HOSTILE), _doc("docs/x.md", 0, "plain")]
        return [
            _doc("docs/a.md", 0, "Indexes are folders."),
            _doc("docs/a.md", 1, "Folders hold JSON files."),
            _doc("docs/b.md", 0, "Traces record each request."),
        ]


Reply = tuple[int, str, bytes, dict[str, str]]
Fake = Callable[[dict[str, Any]], Reply | None]


@dataclass
class Recorder:
    """ASGI wrapper: records POST bodies by path; `fakes[path]` may answer a POST instead of the app."""

    app: Any
    posts: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    fakes: dict[str, Fake] = field(default_factory=dict)

    def bodies(self, path: str) -> list[dict[str, Any]]:
        """The JSON bodies POSTed to `path`, in order."""
        return [body for p, body, _ in self.posts if p == path]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        body = json.loads(raw or b"{}")
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.posts.append((scope["path"], body, headers))
        fake = self.fakes.get(scope["path"])
        reply = fake(body) if fake else None
        if reply is not None:
            status, media, content, extra = reply
            headers = [(k.lower().encode(), v.encode()) for k, v in {**extra, "content-type": media}.items()]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": content})
            return
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}

        await self.app(scope, replay, send)


def _json(status: int, body: dict[str, Any], **headers: str) -> Reply:
    return status, "application/json", json.dumps(body).encode(), headers


@dataclass
class Site:
    url: str
    recorder: Recorder
    model: ScriptedChatModel
    info: dict[str, Any]

    def reply(self, *answers: str) -> None:
        """Queue the scripted model's next answers."""
        self.model.responses.extend(AIMessage(a) for a in answers)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """Our app with auth on, a scripted model and the page's test retriever."""
    model = ScriptedChatModel(responses=[])
    with _serve(model, state="off") as site:
        yield site


@pytest.fixture(scope="module")
def conversing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same app keeping conversations in a SQLite file of its own."""
    state = tmp_path_factory.mktemp("page-state") / "conversations.db"
    with _serve(ScriptedChatModel(responses=[]), state=str(state)) as site:
        yield site


@contextlib.contextmanager
def _serve(model: ScriptedChatModel, *, state: str) -> Iterator[Site]:
    config = AgentConfig.model_validate(
        {"name": "page-agent", "retriever": {"index": "/srv/page-index"}, "serving": {"state": state}}
    )
    agent = RagResponsesAgent(build_rag_graph(PageRetriever(), model, condense="none"), config=config)
    recorder = Recorder(build_app(agent, api_token=TOKEN))
    with serve_in_thread(recorder) as url:  # type: ignore[arg-type]  # any ASGI app serves
        info = httpx.get(url + "/agent/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        yield Site(url=url + "/", recorder=recorder, model=model, info=info)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven through the system chromedriver (no browser download)."""
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture()
def page(browser: Any, site: Site) -> Any:
    """A fresh page load with the token entered and /agent/info read; no fakes left from other tests."""
    site.recorder.fakes.clear()
    site.recorder.posts.clear()
    browser.get(site.url)
    _set_token(browser, TOKEN)
    _wait(browser, ".info-agent", 1)
    return browser


def _set_token(browser: Any, token: str) -> None:
    box = browser.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token, Keys.TAB)  # leaving the field saves it and reloads /agent/info


def _ask(browser: Any, question: str) -> None:
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "send").click()


def _wait(browser: Any, css: str, count: int) -> list[Any]:
    WebDriverWait(browser, WAIT_S).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= count)
    return list(browser.find_elements(By.CSS_SELECTOR, css))


def _answered(browser: Any, count: int) -> Any:
    """The count-th finished turn (answer or error)."""
    return _wait(browser, ".turn.assistant.done, .turn.assistant.error", count)[count - 1]


def test_empty_state_names_the_agent_index_and_model(browser: Any, site: Site) -> None:
    browser.get(site.url)
    browser.execute_script("sessionStorage.clear()")
    browser.get(site.url)
    WebDriverWait(browser, WAIT_S).until(lambda d: "API token" in d.find_element(By.ID, "empty").text)
    _set_token(browser, TOKEN)
    _wait(browser, ".info-agent", 1)
    text = browser.find_element(By.ID, "empty").text
    assert browser.find_element(By.CSS_SELECTOR, ".info-agent").text == "page-agent"
    assert browser.find_element(By.CSS_SELECTOR, ".info-model").text == "offline"
    assert browser.find_element(By.CSS_SELECTOR, ".info-index").text == "/srv/page-index (local)"
    assert "sent whole" in text  # this server keeps no conversations yet
    assert site.info["ragworks"] == {
        "agent": "page-agent",
        "model": "offline",
        "index": {"path": "/srv/page-index", "backend": "local"},
        "conversations": False,
    }


def test_markdown_citations_and_show_all(page: Any, site: Site) -> None:
    site.reply(
        "**Indexes** are *folders* holding `chunks.jsonl` [1].\n\n"
        "- one\n- two [3]\n\n```python\nx = 1 < 2\n```\n"
        "See [the docs](https://example.com/docs) or [3]."
    )
    _ask(page, "What is an index?")
    turn = _answered(page, 1)
    assert "done" in turn.get_attribute("class") and int(turn.get_attribute("data-deltas")) > 1
    answer = turn.find_element(By.CSS_SELECTOR, ".answer")
    assert answer.find_element(By.CSS_SELECTOR, "strong").text == "Indexes"
    assert answer.find_element(By.CSS_SELECTOR, "em").text == "folders"
    assert answer.find_element(By.CSS_SELECTOR, "p > code").text == "chunks.jsonl"
    assert [li.text for li in answer.find_elements(By.CSS_SELECTOR, "ul > li")] == ["one", "two [3]"]
    assert answer.find_element(By.CSS_SELECTOR, "pre > code").text == "x = 1 < 2"
    link = answer.find_element(By.CSS_SELECTOR, "a:not(.cite)")
    assert (link.text, link.get_attribute("href")) == ("the docs", "https://example.com/docs")
    cites = answer.find_elements(By.CSS_SELECTOR, "a.cite")
    assert [c.text for c in cites] == ["[1]", "[3]", "[3]"]
    items = turn.find_elements(By.CSS_SELECTOR, ".sources li.source")
    assert [i.is_displayed() for i in items] == [True, False, True]  # only the cited ones
    names = [i.find_element(By.TAG_NAME, "strong").get_attribute("textContent") for i in items]
    assert names == ["docs/a.md · part 1", "docs/a.md · part 2", "docs/b.md"]
    cites[1].click()
    WebDriverWait(page, 5).until(lambda d: "highlight" in items[2].get_attribute("class"))
    turn.find_element(By.CSS_SELECTOR, "button.show-all").click()
    assert all(i.is_displayed() for i in items)


def test_hostile_answers_and_documents_show_as_text(page: Any, site: Site) -> None:
    site.reply(f"{HOSTILE} [tap](javascript:window.__pwned=1) [1]")
    _ask(page, "hostile question")
    turn = _answered(page, 1)
    turn.find_element(By.CSS_SELECTOR, "button.show-all").click()
    answer = turn.find_element(By.CSS_SELECTOR, ".answer")
    assert HOSTILE in answer.text and "[tap](javascript:window.__pwned=1)" in answer.text
    snippets = [s.text for s in turn.find_elements(By.CSS_SELECTOR, ".snippet")]
    assert HOSTILE in snippets
    assert "javascript:window.__pwned=1" in turn.find_element(By.CSS_SELECTOR, ".sources").text
    log = page.find_element(By.ID, "log")
    assert not log.find_elements(By.CSS_SELECTOR, "script, img, [onerror]")
    hrefs = [a.get_attribute("href") or "" for a in log.find_elements(By.CSS_SELECTOR, "a:not(.cite)")]
    assert not [h for h in hrefs if not h.startswith("http")], hrefs
    assert page.execute_script("return window.__pwned") is None  # nothing ran
    flood = "const t = '['.repeat(200000), s = performance.now(); ragworksMarkdown.render(t, {});"
    took_ms = page.execute_script(flood + " return performance.now() - s;")
    assert took_ms < 1000, took_ms  # an answer of 200,000 '[' does not freeze the page (~0.1 s)
    csp = httpx.get(site.url).headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_pending_indicator_until_the_first_token(page: Any, site: Site) -> None:
    GATE.clear()
    site.reply("Done now [1].")
    try:
        _ask(page, "slow question")
        (indicator,) = _wait(page, ".turn.assistant.pending .pending-indicator", 1)
        assert indicator.is_displayed() and "Waiting" in indicator.text
    finally:
        GATE.set()
    turn = _answered(page, 1)
    assert not turn.find_elements(By.CSS_SELECTOR, ".pending-indicator")
    assert "Done now" in turn.text


@pytest.fixture()
def traced(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every answer traced (the suite may run with sampling off), so feedback has a trace to land on."""
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1")
    mlflow.tracing.reset()
    yield
    monkeypatch.undo()
    mlflow.tracing.reset()


@pytest.mark.usefixtures("traced")
def test_feedback_lands_on_the_answers_trace(page: Any, site: Site) -> None:
    waiting = {"error": {"message": "The answer's trace is not stored yet.", "type": "conflict"}}
    replies = [_json(409, waiting, **{"Retry-After": "0.1"})]  # the trace still on its way: retried
    site.recorder.fakes["/v1/feedback"] = lambda body: replies.pop() if replies else None  # then ours
    site.reply("Folders [1].")
    _ask(page, "What is an index?")
    turn = _answered(page, 1)
    response_id = page.execute_script("return ragworksChat.lastResponseId")
    assert response_id.startswith("resp")
    turn.find_element(By.CSS_SELECTOR, "button.thumb.down").click()
    status = turn.find_element(By.CSS_SELECTOR, ".feedback .status")
    WebDriverWait(page, WAIT_S).until(lambda d: "sent" in status.get_attribute("class"))
    turn.find_element(By.CSS_SELECTOR, "textarea.comment").send_keys("It missed part 2.")
    turn.find_element(By.CSS_SELECTOR, "button.send-comment").click()
    WebDriverWait(page, 5).until(lambda d: len(site.recorder.bodies("/v1/feedback")) == 3)
    assert site.recorder.bodies("/v1/feedback") == [
        {"response_id": response_id, "value": False},
        {"response_id": response_id, "value": False},
        {"response_id": response_id, "value": False, "comment": "It missed part 2."},
    ]
    headers = [h for p, _, h in site.recorder.posts if p == "/v1/feedback"]
    assert all(h["authorization"] == f"Bearer {TOKEN}" for h in headers)
    WebDriverWait(page, WAIT_S).until(lambda d: "sent" in status.get_attribute("class"))
    assert "recorded" in status.text
    found = mlflow.search_traces(
        filter_string=f"feedback.`{FEEDBACK_NAME}` IS NOT NULL", return_type="list", flush=True
    )
    (trace,) = [t for t in found if t.info.tags.get(RESPONSE_ID_TAG) == response_id]
    verdicts = [
        (a.value, a.rationale, a.source.source_type)
        for a in trace.info.assessments
        if a.name == FEEDBACK_NAME
    ]
    assert sorted(verdicts, key=lambda v: v[1] or "") == [
        (False, None, "HUMAN"),  # the thumb at once
        (False, "It missed part 2.", "HUMAN"),  # then the comment with it
    ]
    site.recorder.fakes["/v1/feedback"] = lambda body: _json(
        404, {"error": {"message": "No response 'resp_x' is stored.", "type": "invalid_request_error"}}
    )
    turn.find_element(By.CSS_SELECTOR, "button.thumb.up").click()
    WebDriverWait(page, 5).until(lambda d: "failed" in status.get_attribute("class"))
    assert "not recorded: No response 'resp_x' is stored." in status.text


def test_without_server_conversations_the_history_is_resent(page: Any, site: Site) -> None:
    site.reply("First [1].", "Second [3].")
    _ask(page, "What is an index?")
    _answered(page, 1)
    _ask(page, "And traces?")
    _answered(page, 2)
    _, second = site.recorder.bodies("/v1/responses")
    assert "previous_response_id" not in second
    assert [m["content"] for m in second["input"]] == ["What is an index?", "First [1].", "And traces?"]


def test_second_turn_sends_previous_response_id_and_a_lost_one_resends_history(
    browser: Any, conversing: Site
) -> None:
    if not conversing.info["ragworks"]["conversations"]:
        pytest.skip("this build of the server keeps no conversations (serving.state)")
    site, recorder = conversing, conversing.recorder
    browser.get(site.url)
    _set_token(browser, TOKEN)
    WebDriverWait(browser, WAIT_S).until(lambda d: d.execute_script("return ragworksChat.conversations"))
    site.reply("First [1].", "Second [3].", "Third [2].")
    for n, question in enumerate(["What is an index?", "And traces?"], start=1):
        _ask(browser, question)
        assert "done" in _answered(browser, n).get_attribute("class")
    first, second = recorder.bodies("/v1/responses")
    assert "previous_response_id" not in first and len(first["input"]) == 1
    first_id = _completed_id(browser, 1)
    assert second["previous_response_id"] == first_id
    assert second["input"] == [{"role": "user", "content": "And traces?"}]  # not the whole history
    seen = [str(m.content) for m in site.model.history[-1]]  # the server brought back the earlier turns
    earlier = seen.index("First [1].")
    assert any("What is an index?" in m for m in seen[:earlier]) and "And traces?" in seen[-1]

    second_id = _completed_id(browser, 2)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    deleted = httpx.delete(f"{site.url}v1/responses/{second_id}", headers=auth)
    assert deleted.status_code == 200, deleted.text  # as retention would forget it
    _ask(browser, "And chunks?")
    third = _answered(browser, 3)
    assert "done" in third.get_attribute("class") and "Third" in third.text
    refused, resent = recorder.bodies("/v1/responses")[2:]
    assert refused["previous_response_id"] == second_id  # the server answered 400 for it
    assert [m["content"] for m in resent["input"]] == [
        "What is an index?", "First [1].", "And traces?", "Second [3].", "And chunks?"
    ]
    assert "previous_response_id" not in resent


def _completed_id(browser: Any, n: int) -> str:
    """The response id the n-th answer's feedback names (the id of its response.completed)."""
    ids = browser.execute_script("return ragworksChat.ids")
    return str(ids[n - 1])


def test_failures_show_as_errors_never_as_answers(page: Any, site: Site) -> None:
    _ask(page, "explode please")  # the retriever fails: the stream ends with an error event
    failed = _answered(page, 1)
    assert "error" in failed.get_attribute("class") and "done" not in failed.get_attribute("class")
    assert "Error: The index backend is down" in failed.text
    assert not failed.find_elements(By.CSS_SELECTOR, ".feedback, .sources")
    cut = b'data: {"type": "response.output_text.delta", "delta": "Half an"}\n\n'
    site.recorder.fakes["/v1/responses"] = lambda body: (200, "text/event-stream", cut, {})
    _ask(page, "What is an index?")
    broken = _answered(page, 2)
    assert "error" in broken.get_attribute("class")
    assert "ended before the answer was complete" in broken.text
    assert "Half an" in broken.find_element(By.CSS_SELECTOR, "details .partial").get_attribute(
        "textContent"
    )
    del site.recorder.fakes["/v1/responses"]
    _set_token(page, "not-the-token")
    _ask(page, "What is an index?")
    refused = _answered(page, 3)
    assert "error" in refused.get_attribute("class") and "API token is wrong" in refused.text
    assert page.execute_script("return ragworksChat.history.length") == 0  # no failure joined it
