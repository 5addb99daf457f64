"""A labelled set of answers and non-answers built from SQuAD 2.0 dev (the 5-article slice).

For every answerable question (each has human answer spans in its paragraph), the same question
gets two real answers and five non-answers:

- label True, `sentence`: the paragraph's sentence that holds the first human answer span (what an
  extractive RAG answer looks like); `short`: the human span alone ("France.").
- label False, one each of `pointer` (a pointer elsewhere: "See the blog post", a link), `command`
  (a bare install command or code dump), `metadata` (source / id / score lines, a JSON record),
  `refusal` (declines, though the paragraph holds the answer) and `echo` (restates the question).

Non-answers are written from templates that reuse the question's own topic words, because that is
what fools a judge that counts question terms. The articles and the templates are split: `dev`
(Normans, Computational complexity theory, Southern California; dev templates) is for developing a
judge; `test` (Sky (United Kingdom), Victoria (Australia); other templates) is what is reported.
A template is picked per question with a seeded generator, so the set is the same on every run.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEV_ARTICLES = ("Normans", "Computational_complexity_theory", "Southern_California")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
_GRAMMAR_TEXT = (
    "a an the of in on at to for by with from and or is are was were be been did do does what which "
    "who whom whose when where why how many much name named type kind s it its that this as"
)
_GRAMMAR = frozenset(_GRAMMAR_TEXT.split())

# Each kind has dev templates and test templates; {topic} = the question's topic words, {title} = the
# article's title, {slug} = a lower-case identifier from the topic, {question} = the question.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "pointer": {
        "dev": (
            "See the blog post.",
            "For more on {topic}, see the blog post.",
            "Check out the {title} article for details about {topic}.",
            "Refer to the documentation: https://docs.example.org/{slug}",
        ),
        "test": (
            "Please read the {title} page for more information on {topic}.",
            "You can find everything about {topic} here: https://en.wikipedia.org/wiki/{title}",
            "More details on {topic} are in the linked guide.",
            "See the FAQ section on {topic} below.",
        ),
    },
    "command": {
        "dev": (
            "pip install {slug}",
            "$ curl -s 'https://api.example.org/search?q={slug}' | jq .",
            '```python\nimport {slug}\nprint({slug}.lookup("{topic}"))\n```',
        ),
        "test": (
            "npm install --save {slug}",
            "git clone https://github.com/example/{slug}.git && cd {slug} && make",
            '```bash\n{slug} --query "{topic}" --format json\n```',
            "SELECT * FROM {slug} WHERE topic = '{topic}';",
        ),
    },
    "metadata": {
        "dev": (
            "Source: {title}.md (chunk 3, score 0.83)",
            "Title: {title} | Section: {topic} | id: {qid}",
        ),
        "test": (
            '{{"doc_id": "{qid}", "title": "{title}", "section": "{topic}", "score": 0.91}}',
            "[1] {title}.html, updated 2019-05-04, {topic}",
            "Document: {title}\nTopic: {topic}\nLast modified: 2021-11-30",
        ),
    },
    "refusal": {
        "dev": (
            "I could not find this in the documents.",
            "I'm sorry, but I don't have enough information to answer that.",
        ),
        "test": (
            "Unfortunately, the provided sources do not say anything about {topic}.",
            "I am not able to answer questions about {topic} from the given context.",
            "There is no information on {topic} in the documents I have.",
        ),
    },
    "echo": {
        "dev": ("You asked: {question}", "That is a good question about {topic}."),
        "test": ("The question is {question_lower}", "This concerns {topic}, which is an interesting topic."),
    },
}


@dataclass(frozen=True, slots=True)
class Item:
    """One labelled (question, answer) pair: label True for a real answer."""

    question: str
    answer: str
    context: str
    label: bool
    kind: str
    article: str


def _topic(question: str) -> str:
    words = [w for w in _WORD.findall(question) if w.lower() not in _GRAMMAR]
    return " ".join(words) or question.rstrip("?")


def _slug(topic: str) -> str:
    return "-".join(w.lower() for w in topic.split()[:2]) or "docs"


def _sentence_with(context: str, start: int) -> str:
    offset = 0
    for sentence in _SENTENCE_END.split(context):
        where = context.find(sentence, offset)
        if where <= start < where + len(sentence):
            return sentence.strip()
        offset = where + len(sentence)
    return context.strip()


def _fill(template: str, question: str, title: str, qid: str) -> str:
    topic = _topic(question)
    return template.format(
        topic=topic,
        title=title,
        slug=_slug(topic),
        qid=qid,
        question=question,
        question_lower=question[0].lower() + question[1:],
    )


def _items(title: str, paragraph: dict, qa: dict, split: str, rng: random.Random) -> Iterator[Item]:
    context, question = paragraph["context"], qa["question"].strip()
    answer = qa["answers"][0]
    article = title.replace("_", " ")
    yield Item(question, _sentence_with(context, answer["answer_start"]), context, True, "sentence", title)
    yield Item(question, answer["text"].strip().rstrip(".") + ".", context, True, "short", title)
    for kind, pools in TEMPLATES.items():
        text = _fill(rng.choice(pools[split]), question, article.split(" (")[0], qa["id"])
        yield Item(question, text, context, False, kind, title)


def build_set(data: Path, *, split: str = "test", seed: int = 13) -> list[Item]:
    """The labelled set of `split` (dev, test or all) from the SQuAD 2.0 slice in `data`."""
    path = data / "squad2_dev_5_articles.json" if data.is_dir() else data
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    rng = random.Random(seed)
    out: list[Item] = []
    for article in articles:
        part = "dev" if article["title"] in DEV_ARTICLES else "test"
        if split not in {"all", part}:
            continue
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if not qa.get("is_impossible") and qa["answers"]:
                    out.extend(_items(article["title"], paragraph, qa, part, rng))
    return out
