"""The chat page in headless Chromium: ask, watch the answer stream in with its sources, ask again."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from ragworks.agents import build_agent
from ragworks.serving import build_app, serve_in_thread

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TOKEN = "page-token"

if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
    pytest.skip(
        "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install selenium)"
)


@pytest.fixture(scope="module")
def page_url(docs_index: str) -> Iterator[str]:
    """The server with auth on; the page itself loads without a token."""
    agent = build_agent({"retriever": {"index": docs_index, "k": 3}})
    with serve_in_thread(build_app(agent, api_token=TOKEN)) as url:
        yield url + "/"


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


def _ask(browser: Any, question: str) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "question")
    box.send_keys(question)
    browser.find_element(By.ID, "send").click()


def _wait(browser: Any, css: str, count: int) -> list[Any]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, css)) >= count)
    return list(browser.find_elements(By.CSS_SELECTOR, css))


def test_streamed_answer_with_sources_and_history(browser: Any, page_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    _ask(browser, "Which files does the index folder hold?")
    answer = _wait(browser, ".turn.assistant.done", 1)[0]
    assert "[1]" in answer.text and ("JSON" in answer.text or "numpy" in answer.text)
    assert int(answer.get_attribute("data-deltas")) > 1  # it arrived as a stream of deltas
    sources = answer.find_elements(By.CSS_SELECTOR, ".sources li.source")
    assert sources and any("index.md" in s.text for s in sources)
    _ask(browser, "How are traces recorded for each request?")
    second = _wait(browser, ".turn.assistant.done", 2)[1]
    assert "trace" in second.text.lower()
    assert len(browser.find_elements(By.CSS_SELECTOR, ".turn.user")) == 2
    assert browser.execute_script("return conversation.length") == 4  # both turns go with the next question


def test_wrong_token_shows_the_error(browser: Any, page_url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.execute_script("sessionStorage.clear()")
    browser.get(page_url)
    browser.find_element(By.ID, "token").send_keys("not-the-token")
    _ask(browser, "Which files does the index folder hold?")
    error = _wait(browser, ".turn.assistant.error", 1)[0]
    assert "API token is wrong" in error.text
