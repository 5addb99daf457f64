"""The LLM question writer for generated suites: a configured chat model asks in its own words.

The model gets the passage and one sentence of it and replies with JSON `{"question", "facts"}`. A
reply that is not that JSON counts as malformed and the sentence is skipped; a model that cannot be
reached fails the run with the model's error. The generator's own checks (verbatim runs, near-
duplicates) apply to its questions as to the offline ones.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from pathlib import Path

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field, ValidationError

from ragworks.errors import ConfigError

SYSTEM = (
    "You write test questions for a document search system. Given a passage and one sentence of it, "
    "write one question that the sentence answers, in your own words: never repeat eight or more words "
    "of the passage in a row. Keep the specific names and terms a searcher would use. Also list the "
    "facts a correct answer must state (short phrases from the sentence). Reply with JSON only: "
    '{"question": "...", "facts": ["...", "..."]}'
)
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


class _Reply(BaseModel):
    question: str = Field(min_length=8)
    facts: list[str] = Field(min_length=1)


class LLMWriter:
    """Asks a chat model for each question; counts replies that are not the JSON asked for."""

    def __init__(self, model: BaseChatModel, *, name: str) -> None:
        self.model = model
        self.name = name
        self.malformed = 0

    def __call__(
        self, sentence: str, passage: str, weights: Mapping[str, float], rng: random.Random
    ) -> tuple[str, list[str]] | None:
        """The model's question and facts for the sentence, or None for a malformed reply."""
        prompt = f"Passage:\n{passage}\n\nSentence:\n{sentence}"
        reply = self.model.invoke([SystemMessage(SYSTEM), HumanMessage(prompt)])
        text = reply.content if isinstance(reply.content, str) else json.dumps(reply.content)
        try:
            parsed = _Reply.model_validate_json(_FENCE.sub("", text.strip()))
        except ValidationError:
            self.malformed += 1
            return None
        facts = [f.strip() for f in parsed.facts if f.strip()]
        return (parsed.question.strip(), facts) if facts else None


def writer_for(model_name: str, *, timeout_s: float = 60.0, max_retries: int = 2) -> LLMWriter:
    """An LLM writer over the chat model a config names (`openai:<m>` or `databricks:<endpoint>`)."""
    from ragworks.models import get_chat_model

    if model_name.partition(":")[0] == "offline":
        raise ConfigError("The LLM generator needs a model: --model openai:<model> or llm: in the config.")
    model = get_chat_model(model_name, temperature=0.0, timeout_s=timeout_s, max_retries=max_retries)
    return LLMWriter(model, name=f"llm:{model_name}")


GENERATORS = ("auto", "offline", "llm")


def pick_writer(generator: str, *, model: str | None, config: Path | None) -> LLMWriter | None:
    """The LLM writer when asked for (`llm`, or `auto` with a model configured), else None (offline)."""
    from ragworks.config import AgentConfig, ModelOptions

    if generator not in GENERATORS:
        raise ConfigError(f"--generator {generator!r}: use one of {', '.join(GENERATORS)}.")
    cfg = AgentConfig.from_yaml(config) if config is not None else None
    name = model or (cfg.llm if cfg is not None else None)
    offline_model = name is None or name.partition(":")[0] == "offline"
    if generator == "offline" or (generator == "auto" and offline_model):
        return None
    opts = cfg.llm_options if cfg is not None else ModelOptions()
    return writer_for(name or "offline", timeout_s=opts.timeout_s, max_retries=opts.max_retries)
