"""Read files into plain text: .txt, .md, .html (scripts and styles dropped), .pdf with pypdf."""

from __future__ import annotations

import importlib.util
from pathlib import Path

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
PDF_SUFFIXES = frozenset({".pdf"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES


class SkipFile(Exception):
    """The file cannot be ingested; the message is the reason shown in the report."""


def read_document(path: Path, *, data: bytes) -> str:
    """Extract the text of one file from its bytes, or raise SkipFile with the reason."""
    suffix = path.suffix.lower()
    if suffix in PDF_SUFFIXES:
        text = _pdf_text(path, data)
    else:
        if b"\x00" in data[:8192]:
            raise SkipFile("binary file")
        try:
            raw = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise SkipFile("unreadable: not UTF-8 text") from None
        text = _html_text(raw) if suffix in HTML_SUFFIXES else raw
    if not text.strip():
        raise SkipFile("empty: no text to index")
    return text


def _html_text(raw: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(raw, "html.parser")
    for tag in soup(["script", "style", "noscript", "template", "svg"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf_text(path: Path, data: bytes) -> str:
    if importlib.util.find_spec("pypdf") is None:
        raise SkipFile("PDF support needs pypdf: pip install pypdf")
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        return "\n\n".join(page.extract_text() or "" for page in reader.pages)
    except (PyPdfError, ValueError, KeyError) as exc:
        raise SkipFile(f"unreadable PDF: {exc}") from None
