"""Read the question, the answer and the retrieved documents out of inputs, outputs and traces."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mlflow.entities import SpanType

# Any below: inputs, outputs and span payloads are whatever JSON the agent produced.


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrievedDoc:
    """One retrieved chunk, with every identifier an expected_doc_id may name."""

    text: str
    id: str | None = None
    doc_uri: str | None = None
    chunk_id: str | None = None
    source: str | None = None

    @property
    def keys(self) -> set[str]:
        """The identifiers of the chunk, plus the file names of its URIs."""
        raw = {k for k in (self.id, self.doc_uri, self.chunk_id, self.source) if k}
        return raw | {k.replace("\\", "/").rsplit("/", 1)[-1] for k in raw}

    @property
    def label(self) -> str:
        """A short name for reports: the file name, else the id."""
        uri = self.doc_uri or self.source
        return uri.replace("\\", "/").rsplit("/", 1)[-1] if uri else (self.chunk_id or self.id or "?")


def matches(doc: RetrievedDoc, expected: str) -> bool:
    """True when an expected id names this chunk (id, chunk id, URI, or the URI's file name)."""
    expected = expected.strip()
    return expected in doc.keys or any(k.endswith("/" + expected) for k in doc.keys)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def question_of(inputs: Any) -> str:
    """The question: inputs["question"], else the last user message of a Responses / chat request."""
    if isinstance(inputs, str):
        return inputs
    if not isinstance(inputs, dict):
        return str(inputs)
    if isinstance(inputs.get("question"), str):
        return inputs["question"]
    if isinstance(inputs.get("request"), dict):  # a predict_fn(request=...) signature
        return question_of(inputs["request"])
    messages = inputs.get("input", inputs.get("messages"))
    if isinstance(messages, str):
        return messages
    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role", "user") == "user":
            return _text_of(message.get("content"))
    return json.dumps(inputs, default=str)


def answer_of(outputs: Any) -> str:
    """The answer text of a Responses response, a chat completion, a dict with `answer`, or a string."""
    if outputs is None:
        return ""
    if isinstance(outputs, str):
        return outputs
    if hasattr(outputs, "model_dump"):
        outputs = outputs.model_dump()
    if not isinstance(outputs, dict):
        return str(outputs)
    if isinstance(outputs.get("output"), list):
        texts = [
            _text_of(item.get("content"))
            for item in outputs["output"]
            if isinstance(item, dict) and item.get("type", "message") == "message"
        ]
        return "\n".join(t for t in texts if t)
    if outputs.get("choices"):
        return _text_of(outputs["choices"][0].get("message", {}).get("content"))
    for key in ("answer", "response", "text", "content"):
        if isinstance(outputs.get(key), str):
            return outputs[key]
    return json.dumps(outputs, default=str)


def _doc(raw: Any) -> RetrievedDoc | None:
    if isinstance(raw, str):
        return RetrievedDoc(text=raw)
    if not isinstance(raw, dict):
        return None
    meta: dict[str, Any] = raw["metadata"] if isinstance(raw.get("metadata"), dict) else {}
    text = raw.get("page_content", raw.get("content", raw.get("text", raw.get("snippet", ""))))

    def pick(*names: str) -> str | None:
        for name in names:
            for where in (meta, raw):
                if where.get(name) not in (None, ""):
                    return str(where[name])
        return None

    return RetrievedDoc(
        text=str(text or ""),
        id=pick("id"),
        doc_uri=pick("doc_uri", "uri"),
        chunk_id=pick("chunk_id"),
        source=pick("source"),
    )


def _top_level_retriever_spans(trace: Any) -> list[Any]:
    spans = list(getattr(getattr(trace, "data", None), "spans", None) or [])
    by_id = {s.span_id: s for s in spans}
    found = []
    for span in spans:
        if span.span_type != SpanType.RETRIEVER:
            continue
        parent, nested = by_id.get(span.parent_id), False
        while parent is not None and not nested:
            nested = parent.span_type == SpanType.RETRIEVER
            parent = by_id.get(parent.parent_id)
        if not nested:
            found.append(span)
    return sorted(found, key=lambda s: s.start_time_ns or 0)


def retrieved_of(trace: Any, outputs: Any = None) -> list[RetrievedDoc]:
    """The documents of the trace's top-level RETRIEVER spans in order, else custom_outputs sources."""
    docs: list[RetrievedDoc] = []
    for span in _top_level_retriever_spans(trace):
        payload = span.outputs
        if isinstance(payload, str):
            try:
                payload = json.loads(payload)
            except json.JSONDecodeError:
                payload = [payload]
        docs.extend(d for d in map(_doc, payload or []) if d is not None)
    if docs or not isinstance(outputs, dict):
        return docs
    sources = (outputs.get("custom_outputs") or {}).get("sources") or []
    return [d for d in map(_doc, sources) if d is not None]
