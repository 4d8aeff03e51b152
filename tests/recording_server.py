"""A real Wyoming server on a free loopback port whose connection handlers report how they ended."""

from __future__ import annotations

import asyncio
import time

from wyoming.server import AsyncTcpServer

from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.server.limits import ConnectionLimits
from wyoming_gsv.server.run import bound_port, handler_factory
from wyoming_gsv.synthesis.runtime import Runtime


class RecordingServer:
    """Each ended connection handler leaves None, or the exception that escaped it, in `endings`
    (asyncio would only log that as "Task exception was never retrieved")."""

    def __init__(self, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.server = AsyncTcpServer("127.0.0.1", 0)
        self.limits = limits
        self.endings: list[BaseException | None] = []
        self.port = 0

    async def start(self, runtime: Runtime) -> RecordingServer:
        factory = handler_factory(runtime.service, HandlerSettings(samples_per_chunk=1024, limits=self.limits))

        def recording_factory(reader, writer):
            handler = factory(reader, writer)
            run = handler.run

            async def recorded_run() -> None:
                try:
                    await run()
                except BaseException as err:
                    self.endings.append(err)
                    raise
                self.endings.append(None)

            handler.run = recorded_run
            return handler

        await self.server.start(recording_factory)
        self.port = bound_port(self.server)
        return self

    async def stop(self) -> None:
        await self.server.stop()

    async def wait_for_endings(self, count: int, timeout: float = 30.0) -> list[BaseException | None]:
        """The endings once `count` handlers have ended (or, past `timeout`, those there are)."""
        deadline = time.monotonic() + timeout
        while len(self.endings) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.endings
