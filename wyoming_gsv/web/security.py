"""Who may use the studio: the add-on admits only Home Assistant's ingress gateway and loopback;
elsewhere a token (header or cookie, compared in constant time) guards every API call; changes
need the page's own header (no cross-site form can send it)."""

from __future__ import annotations

import hmac
import logging
from typing import Awaitable, Callable

from aiohttp import web

from .settings import PAGE_HEADER, TOKEN_COOKIE, TOKEN_HEADER, WebSettings

_LOGGER = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def access_middleware(settings: WebSettings) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    expected = settings.token.encode() if settings.token else None

    @web.middleware
    async def check_access(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not settings.admits(request.remote or ""):
            _LOGGER.warning("Refused a studio connection from %s (only ingress and loopback)", request.remote)
            return web.json_response({"error": "this page is only reachable through Home Assistant"}, status=403)
        # The page's files hold nothing private; it asks for the token when the API answers 401.
        if expected is not None and request.path.startswith("/api/") and not _token_matches(request, expected):
            return web.json_response({"error": "a valid studio token is required", "field": "token"}, status=401)
        if request.method not in ("GET", "HEAD") and PAGE_HEADER not in request.headers:
            return web.json_response({"error": f"changes need the {PAGE_HEADER} header the page sends"}, status=403)
        return await handler(request)

    return check_access


def _token_matches(request: web.Request, expected: bytes) -> bool:
    given = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
    return hmac.compare_digest(given.encode(), expected)
