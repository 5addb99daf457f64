"""`/agent/info`'s own key: what the chat page's empty state says about the served agent."""

from __future__ import annotations

from types import SimpleNamespace

from ragworks.config import AgentConfig
from ragworks.serving._info import describe_agent


def test_an_agent_with_a_config_names_its_model_and_index() -> None:
    config = AgentConfig.model_validate(
        {"llm": "openai:gpt-4o-mini", "retriever": {"type": "databricks-vector-search", "index": "c.s.docs"}}
    )
    about = describe_agent(SimpleNamespace(config=config), name="support-bot", conversations=True)
    assert about == {
        "agent": "support-bot",
        "model": "openai:gpt-4o-mini",
        "index": {"path": "c.s.docs", "backend": "databricks-vector-search"},
        "conversations": True,
    }


def test_an_agent_without_a_config_says_only_what_is_known() -> None:
    about = describe_agent(object(), name="ragworks-agent", conversations=False)
    assert about == {"agent": "ragworks-agent", "model": None, "index": None, "conversations": False}
