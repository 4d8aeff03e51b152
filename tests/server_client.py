"""Wyoming clients for the server tests, including one that reads audio the way Home Assistant does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

TIMEOUT = 60.0


@dataclass
class HaResult:
    """What HA would hand on: a WAV format from the first audio-start/chunk plus raw PCM."""

    rate: int | None = None
    width: int | None = None
    channels: int | None = None
    audio: bytes = b""
    events: list[str] = field(default_factory=list)
    error: Error | None = None
    first_audio_at: float | None = None

    @property
    def seconds(self) -> float:
        return len(self.audio) / (self.rate * self.width * self.channels) if self.rate else 0.0

    def record(self, event: Event) -> None:
        """Every event's type, and the error if one came."""
        self.events.append(event.type)
        if Error.is_type(event.type):
            self.error = Error.from_event(event)


async def _events_until_closed(client: AsyncTcpClient) -> AsyncIterator[Event]:
    while True:
        event = await asyncio.wait_for(client.read_event(), TIMEOUT)
        if event is None:
            return
        yield event


async def describe(port: int) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
            assert event is not None, "connection closed before info"
            if Info.is_type(event.type):
                return Info.from_event(event)


async def ha_synthesize(port: int, text: str, voice: str | None = None) -> HaResult:
    """HA's non-streaming path: send synthesize, read up to the FIRST audio-stop."""
    result = HaResult()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
        async for event in _events_until_closed(client):
            result.record(event)
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                if result.rate is None:
                    result.rate, result.width, result.channels = chunk.rate, chunk.width, chunk.channels
                    result.first_audio_at = loop.time() - started
                result.audio += chunk.audio
            elif AudioStop.is_type(event.type):
                break
    return result


async def ha_stream(port: int, fragments: list[str], voice: str | None = None, *, compat: bool = True) -> HaResult:
    """HA's streaming path: start, chunks, the compatibility synthesize, stop; the WAV header comes
    from the first audio-start only and every later chunk payload is passed through raw."""
    result = HaResult()
    loop = asyncio.get_running_loop()
    started = loop.time()
    synth_voice = SynthesizeVoice(name=voice) if voice else None
    async with AsyncTcpClient("127.0.0.1", port) as client:

        async def write() -> None:
            await client.write_event(SynthesizeStart(voice=synth_voice).event())
            for fragment in fragments:
                await client.write_event(SynthesizeChunk(text=fragment).event())
            if compat:
                await client.write_event(Synthesize(text="".join(fragments), voice=synth_voice).event())
            await client.write_event(SynthesizeStop().event())

        writer = asyncio.create_task(write())
        async for event in _events_until_closed(client):
            result.record(event)
            if AudioStart.is_type(event.type) and result.rate is None:
                start = AudioStart.from_event(event)
                result.rate, result.width, result.channels = start.rate, start.width, start.channels
            elif AudioChunk.is_type(event.type):
                if result.first_audio_at is None:
                    result.first_audio_at = loop.time() - started
                result.audio += AudioChunk.from_event(event).audio
            elif SynthesizeStopped.is_type(event.type):
                break
        await writer
    return result


async def send_and_collect(port: int, events: list[Event]) -> list[Event]:
    """Send raw events, then read until the server closes the connection."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
        return [event async for event in _events_until_closed(client)]
