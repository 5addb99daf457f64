"""The LLM judges' prompts, versioned: bump `version` whenever the text changes (it keys the cache)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Prompt:
    """A system + user prompt pair with `{placeholders}` and a version."""

    id: str
    version: int
    system: str
    user: str

    def render(self, **values: str) -> list[dict[str, str]]:
        """The chat messages with the placeholders filled in."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.user.format(**values)},
        ]

    @property
    def key(self) -> str:
        """`id@vN`, recorded with every judgement."""
        return f"{self.id}@v{self.version}"


_JSON_ONLY = "Reply with one JSON object and nothing else."

CLAIMS = Prompt(
    id="faithfulness.claims",
    version=1,
    system=(
        "You split an answer into atomic factual claims: short standalone statements, each checkable on "
        "its own. Leave out greetings, hedges and citations. " + _JSON_ONLY + ' Shape: {"claims": ["..."]}'
    ),
    user="Question:\n{question}\n\nAnswer:\n{answer}",
)

VERIFY = Prompt(
    id="faithfulness.verify",
    version=1,
    system=(
        "You check claims against context passages. A claim is supported only if the passages state or "
        "directly imply it; outside knowledge does not count. " + _JSON_ONLY + ' Shape: {"verdicts": '
        '[{"claim": "...", "supported": true, "reason": "..."}]} with one verdict per claim, in order.'
    ),
    user="Context passages:\n{contexts}\n\nClaims:\n{claims}",
)

ANSWER_RELEVANCE = Prompt(
    id="answer_relevance",
    version=1,
    system=(
        "You grade whether an answer addresses the question asked. Rubric for rating: 5 answers it "
        "fully and directly; 4 answers it with minor gaps; 3 partly answers it; 2 mostly off topic; "
        "1 unrelated. noncommittal is true when the answer evades or says it cannot answer. "
        + _JSON_ONLY
        + ' Shape: {"rating": 1-5, "noncommittal": false, "rationale": "..."}'
    ),
    user="Question:\n{question}\n\nAnswer:\n{answer}",
)

CONTEXT_RELEVANCE = Prompt(
    id="context_relevance",
    version=1,
    system=(
        "You decide whether a retrieved passage holds information useful to answer the question. "
        + _JSON_ONLY
        + ' Shape: {"relevant": true, "rationale": "..."}'
    ),
    user="Question:\n{question}\n\nPassage:\n{passage}",
)

CORRECTNESS = Prompt(
    id="correctness",
    version=1,
    system=(
        "You check whether an answer states each expected fact (in any wording), and does not contradict "
        "it. " + _JSON_ONLY + ' Shape: {"facts": [{"fact": "...", "present": true, "reason": "..."}]} '
        "with one entry per expected fact, in order."
    ),
    user="Question:\n{question}\n\nAnswer:\n{answer}\n\nExpected facts:\n{facts}",
)

def numbered(items: list[str]) -> str:
    """Lines `1. ...`, `2. ...` for a prompt."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, 1))
