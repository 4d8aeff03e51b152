"""Start the voice studio beside the Wyoming server, in the same loop and process."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .app import create_app
from .settings import WebSettings, is_loopback
from .actions import StudioActions

_LOGGER = logging.getLogger(__name__)


async def start_studio(runtime: Any, settings: WebSettings) -> web.AppRunner:
    """Listening when it returns; `cleanup()` the runner to stop."""
    if not is_loopback(settings.host) and not settings.ingress_only:
        _LOGGER.warning(
            "The voice studio listens on %s, reachable from the network: anyone with the token can "
            "add and delete voices", settings.host
        )
    runner = web.AppRunner(create_app(StudioActions(runtime, settings), settings), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    _LOGGER.info("Voice studio: http://%s:%s/", settings.host, bound_port(runner) or settings.port)
    return runner


def bound_port(runner: web.AppRunner) -> int | None:
    """The port a started studio listens on (for port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    return None
