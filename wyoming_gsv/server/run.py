"""Start the Wyoming server (and zeroconf) for a ready TtsService."""

from __future__ import annotations

import logging
import resource
from asyncio import StreamReader, StreamWriter
from dataclasses import dataclass
from functools import partial
from typing import Callable

from wyoming.server import AsyncServer, AsyncStdioServer, AsyncTcpServer

from ..synthesis.service import TtsService
from .handler import ConnectionSlots, GsvEventHandler, HandlerSettings
from .zeroconf import ZeroconfAdvertiser, advertise_address

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ZeroconfSettings:
    name: str = "gsv"
    host: str | None = None  # advertised IP; default: detected, never 0.0.0.0
    interfaces: tuple[str, ...] | None = None  # None: every interface (tests pass loopback)


# File descriptors kept free of connections: the listening socket, zeroconf, logs, and the voice
# scans and model/cache files a describe or request opens.
RESERVED_DESCRIPTORS = 32


def handler_factory(service: TtsService, settings: HandlerSettings) -> partial[GsvEventHandler]:
    """One factory per server: its handlers share the count of open connections."""
    slots = ConnectionSlots(connection_limit(settings.limits.max_connections))
    return partial(GsvEventHandler, service=service, settings=settings, slots=slots)


def connection_limit(wanted: int) -> int:
    """`wanted`, or fewer where the process may not open that many files: connections past the
    descriptor limit would make every file open fail (a describe's voice scan included)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted + RESERVED_DESCRIPTORS <= soft:
        return wanted
    allowed = max(1, soft - RESERVED_DESCRIPTORS)
    _LOGGER.warning("Serving at most %d connections, not %d: the process may open %d files", allowed, wanted, soft)
    return allowed


async def serve(
    uri: str,
    service: TtsService,
    settings: HandlerSettings,
    zeroconf: ZeroconfSettings | None = None,
) -> None:
    """Listen until cancelled or SIGTERM."""
    server = AsyncServer.from_uri(uri)
    advertiser = None
    if zeroconf is not None:
        if not isinstance(server, AsyncTcpServer):
            raise ValueError("--zeroconf needs a tcp:// URI")
        advertiser = ZeroconfAdvertiser(
            name=zeroconf.name,
            port=server.port,
            address=advertise_address(server.host, zeroconf.host),
            interfaces=list(zeroconf.interfaces) if zeroconf.interfaces is not None else None,
        )
        await advertiser.start()
    _LOGGER.info("Ready: listening on %s", uri)
    handlers: list[GsvEventHandler] = []
    factory = _kept(handler_factory(service, settings), handlers)
    try:
        await server.run(factory)
        if isinstance(server, AsyncStdioServer):
            # The end of stdin ends the stdio server's loop but, unlike a TCP disconnect, stdout
            # is still open: the last request's audio must go out before we return.
            for handler in handlers:
                await handler.finish_pending()
                await _flush(handler.writer)
    finally:
        # Stopping (a signal, or the end of stdin): whatever is still being spoken is cancelled.
        for handler in handlers:
            await handler.disconnect()
        if advertiser is not None:
            await advertiser.stop()


async def _flush(writer: StreamWriter) -> None:
    """Until every buffered byte is written: drain() alone returns while up to 64 KiB still wait
    in the transport, which a process that exits next would lose."""
    try:
        writer.transport.set_write_buffer_limits(high=0)
        await writer.drain()
    except ConnectionError:
        pass  # nobody reads stdout any more


def _kept(
    factory: Callable[[StreamReader, StreamWriter], GsvEventHandler], handlers: list[GsvEventHandler]
) -> Callable[[StreamReader, StreamWriter], GsvEventHandler]:
    """The factory, also keeping the handlers it makes (those of closed connections are dropped)."""

    def make(reader: StreamReader, writer: StreamWriter) -> GsvEventHandler:
        handlers[:] = [h for h in handlers if not h.writer.is_closing()]
        handlers.append(factory(reader, writer))
        return handlers[-1]

    return make


def bound_port(server: AsyncTcpServer) -> int:
    """The port a started server listens on (for port 0)."""
    assert server._server is not None and server._server.sockets
    return int(server._server.sockets[0].getsockname()[1])
