"""The chat page: `GET /` and its script and style files, read once, sent with a strict CSP.

The Content-Security-Policy allows scripts and styles from this server's own files only (no inline
script, no event-handler attributes, no other origins), so even text that reached the page as HTML by
mistake could not run. The page itself never inserts model or document text as HTML (see static/).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import Response

ASSETS = {
    "/chat.js": ("static/chat.js", "text/javascript; charset=utf-8"),
    "/markdown.js": ("static/markdown.js", "text/javascript; charset=utf-8"),
    "/chat.css": ("static/chat.css", "text/css; charset=utf-8"),
}
"""The page's own files by route: they hold no data, so they load without a token, like the page."""
PAGE_PATHS = frozenset({"/", *ASSETS})
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def add_chat_page(app: FastAPI) -> None:
    """Serve the chat page at `/` and its files beside it (relative URLs, so a path prefix works)."""
    page = _read("static/index.html")
    assets = {route: (_read(name), media) for route, (name, media) in ASSETS.items()}

    @app.get("/", include_in_schema=False)
    async def chat_page() -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=_HEADERS)

    for route, (text, media) in assets.items():
        app.add_api_route(route, _asset(text, media), methods=["GET"], include_in_schema=False)


def _asset(text: str, media: str) -> Callable[[], Awaitable[Response]]:
    async def asset() -> Response:
        return Response(text, media_type=media, headers=_HEADERS)

    return asset


def _read(name: str) -> str:
    return files("ragworks.serving").joinpath(name).read_text(encoding="utf-8")
