"""The real engine served over real TCP for the server tests: a started runtime, a Wyoming server
on a free loopback port, and one whose connection handlers report how they ended."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import torch
from wyoming.server import AsyncTcpServer

from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.server.limits import ConnectionLimits
from wyoming_gsv.server.run import bound_port, handler_factory
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings


@contextmanager
def started_runtime(data_dir: Path, **settings: Any) -> Iterator[Runtime]:
    """A runtime on one thread without the fallback voice (`settings`: further RuntimeSettings
    fields), its voices loaded and its engine started; closed when the block ends."""
    torch.set_num_threads(1)
    runtime = Runtime(RuntimeSettings(data_dir=data_dir, threads=1, use_fallback=False, **settings))
    runtime.warm_up()
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.close()


@asynccontextmanager
async def serving(runtime: Runtime, settings: HandlerSettings = HandlerSettings()) -> AsyncIterator[int]:
    """The runtime served over Wyoming on a free loopback port (the port is yielded) until the block ends."""
    server = AsyncTcpServer("127.0.0.1", 0)
    await server.start(handler_factory(runtime.service, settings))
    try:
        yield bound_port(server)
    finally:
        await server.stop()


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


@asynccontextmanager
async def recording_server(
    runtime: Runtime, limits: ConnectionLimits = ConnectionLimits()
) -> AsyncIterator[RecordingServer]:
    """A started RecordingServer for the runtime, stopped when the block ends."""
    served = await RecordingServer(limits).start(runtime)
    try:
        yield served
    finally:
        await served.stop()
