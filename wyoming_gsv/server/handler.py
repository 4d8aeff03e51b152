"""One handler per Wyoming connection: describe, ping, synthesize (plain and streamed)."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from ..synthesis.service import TtsService
from ..synthesis.session import SpeechSession
from ..synthesis.speech import BadRequest, SynthesisError
from .frames import FrameError, read_frame
from .info import ProgramSettings, build_info
from .limits import ConnectionLimits

_LOGGER = logging.getLogger(__name__)

SAMPLE_WIDTH = 2  # 16-bit
CHANNELS = 1


# An error event is small, but a client that reads nothing could still block its write.
ERROR_WRITE_TIMEOUT = 5.0


@dataclass(frozen=True)
class HandlerSettings:
    program: ProgramSettings = ProgramSettings()
    samples_per_chunk: int = 2048
    limits: ConnectionLimits = ConnectionLimits()


class ConnectionSlots:
    """The connections one server holds at once (shared by its handlers, on its event loop)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def take(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active -= 1


class GsvEventHandler(AsyncEventHandler):
    """Reads events while audio is written by a separate task, so a disconnect is seen at once
    and cancels the running synthesis. Frames are read with bounded lengths (see frames.py), and
    nothing a client sends ends the handler with an exception."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        service: TtsService,
        settings: HandlerSettings,
        slots: ConnectionSlots | None = None,
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.settings = settings
        self._slots = slots if slots is not None else ConnectionSlots(settings.limits.max_connections)
        self._session: SpeechSession | None = None
        self._streaming = False
        self._sender: asyncio.Task[None] | None = None
        self._rate: int | None = None  # one audio format per connection: fixed by the first audio-start
        self._last_activity = 0.0  # loop time of the last event received or answer finished

    async def run(self) -> None:
        if not self._slots.take():
            _LOGGER.warning("Refused a connection from %s: %d are open (--max-connections)", self._peer(), self._slots.limit)
            await self._send_error_event(f"too many connections (limit {self._slots.limit})", "too-many-connections")
            self.writer.close()
            return
        try:
            await self._serve_events()
        except ConnectionError as err:
            # A reset connection raises out of our read or write; the client is gone, so it is
            # not an error of ours to report.
            _LOGGER.debug("Client went away: %s", err)
        except Exception:  # a bug of ours: one traceback, never an unretrieved task exception
            _LOGGER.exception("Connection handler failed")
        finally:
            self._slots.release()
            await self.disconnect()
            self.writer.close()

    async def _serve_events(self) -> None:
        self._is_running = True
        self._last_activity = asyncio.get_running_loop().time()
        while self._is_running:
            event = await self._next_event()
            if event is None:
                break
            if not await self.handle_event(event):
                break

    async def _next_event(self) -> Event | None:
        """The next frame, or None when the connection should end: its input ended, a frame was
        malformed or too large, or it stayed idle too long (the last two are told to the client)."""
        loop = asyncio.get_running_loop()
        read = asyncio.ensure_future(read_frame(self.reader, self.settings.limits.frames))
        try:
            while True:
                done, _ = await asyncio.wait({read}, timeout=self._idle_time_left(loop.time()))
                if done:
                    break
                if self._idle_time_left(loop.time()) <= 0:
                    _LOGGER.info("Closing idle connection from %s (nothing received for %g s)", self._peer(), self.settings.limits.idle_timeout)
                    await self._send_error_event(
                        f"connection idle for {self.settings.limits.idle_timeout:g} s", "idle-timeout"
                    )
                    return None
        finally:
            if not read.done():
                read.cancel()
        try:
            event = read.result()
        except FrameError as err:
            _LOGGER.warning("Closing connection from %s: %s", self._peer(), err)
            await self._send_error_event(str(err), err.code)
            return None
        self._last_activity = loop.time()
        return event

    async def write_event(self, event: Event) -> None:
        """Send an event; a client that reads nothing for the idle timeout while audio waits for
        it is cut off (its answer would otherwise hold the connection, and the engine's output,
        forever)."""
        try:
            await asyncio.wait_for(super().write_event(event), self.settings.limits.idle_timeout)
        except asyncio.TimeoutError:
            _LOGGER.info("Closing connection from %s: it read nothing for %g s", self._peer(), self.settings.limits.idle_timeout)
            self.writer.transport.abort()
            raise ConnectionResetError("the client stopped reading") from None

    def _idle_time_left(self, now: float) -> float:
        """Seconds until the idle timeout; while an answer is being made it never runs out
        (an open stream is waiting for the client, so there it does)."""
        answering = self._sender is not None and not self._sender.done() and not self._streaming
        if answering:
            return self.settings.limits.idle_timeout
        return self._last_activity + self.settings.limits.idle_timeout - now

    def _peer(self) -> str:
        peer = self.writer.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            return f"{peer[0]}:{peer[1]}"
        return str(peer or "client")

    async def handle_event(self, event: Event) -> bool:
        try:
            return await self._dispatch(event)
        except SynthesisError as err:
            await self._send_error(err)
            return False
        except ConnectionError:
            raise  # the client is gone (see run)
        except Exception as err:  # a bug of ours: tell the client instead of just closing
            _LOGGER.exception("Failed to handle %s", event.type)
            await self._send_error(_internal_error(err))
            return False

    async def _dispatch(self, event: Event) -> bool:
        data: dict[str, Any] = event.data if isinstance(event.data, dict) else {}
        if Describe.is_type(event.type):
            info = await asyncio.get_running_loop().run_in_executor(None, self._info_event)
            await self.write_event(info)
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=data.get("text")).event())
        elif SynthesizeStart.is_type(event.type):
            await self._launch(await self._open(data), streaming=True)
        elif SynthesizeChunk.is_type(event.type):
            await self._chunk(data)
        elif Synthesize.is_type(event.type):
            if self._streaming:
                _LOGGER.debug("Ignoring synthesize inside a stream (sent for compatibility)")
            else:
                text = _required_text(data, "synthesize")
                session = await self._open(data)
                session.feed(text)
                session.finish()
                await self._launch(session, streaming=False)
        elif SynthesizeStop.is_type(event.type):
            if self._streaming and self._session is not None:
                self._streaming = False
                self._session.finish()
            else:
                await self._wait_for_sender()  # in order: after the audio of the request before
                await self.write_event(SynthesizeStopped().event())
        else:
            _LOGGER.debug("Ignoring event %s", event.type)
        return True

    def _info_event(self) -> Event:
        # Rescans voice folders (file stats), so it runs off the event loop.
        return build_info(self.settings.program, self.service.voices()).event()

    async def _open(self, data: dict[str, Any]) -> SpeechSession:
        # A new request before synthesize-stop: the client gave up on the open stream.
        self._drop_open_stream("New request before synthesize-stop; dropping the unfinished stream")
        await self._wait_for_sender()  # one request at a time per connection, in order
        voice_name, language, speaker = _voice_request(data.get("voice"))
        self._session = self.service.open_session(voice_name, language, speaker)
        return self._session

    def _drop_open_stream(self, why: str) -> None:
        """Cancel a stream that will never get its synthesize-stop (logged as `why`)."""
        if self._streaming and self._session is not None:
            _LOGGER.warning(why)
            self._streaming = False
            self._session.cancel()
            if self._sender is not None:
                self._sender.cancel()

    async def _wait_for_sender(self) -> None:
        if self._sender is not None and not self._sender.done():
            await asyncio.wait([self._sender])

    async def _launch(self, session: SpeechSession, *, streaming: bool) -> None:
        self._streaming = streaming
        self._sender = asyncio.create_task(self._send_audio(session, streaming=streaming))
        self._sender.add_done_callback(self._answer_finished)

    def _answer_finished(self, _sender: "asyncio.Task[None]") -> None:
        self._last_activity = asyncio.get_running_loop().time()  # idle from here on

    async def _chunk(self, data: dict[str, Any]) -> None:
        text = _required_text(data, "synthesize-chunk")
        if not self._streaming or self._session is None:
            _LOGGER.warning("Ignoring synthesize-chunk outside a stream")
            return
        self._session.feed(text)
        await self._session.wait_for_room()  # a long answer waits here, not in memory

    async def _send_audio(self, session: SpeechSession, *, streaming: bool) -> None:
        """Streaming: audio-start/chunks/audio-stop per sentence, then synthesize-stopped.
        Plain synthesize: a single audio-start ... audio-stop (HA reads up to the first stop)."""
        started = False
        try:
            async for piece in session.pieces():
                if not started or (streaming and piece.first):
                    if self._rate is None:
                        assert piece.speech is not None  # a sentence's first piece always has audio
                        self._rate = piece.speech.rate
                    await self.write_event(AudioStart(rate=self._rate, width=SAMPLE_WIDTH, channels=CHANNELS).event())
                    started = True
                if piece.speech is not None:
                    await self._write_samples(piece.speech.rate, piece.speech.samples.tobytes())
                if streaming and piece.last:
                    await self.write_event(AudioStop().event())
            if not started:
                # Every sentence came out silent; HA still builds its WAV header from an audio-start.
                self._rate = self._rate or 16000
                await self.write_event(AudioStart(rate=self._rate, width=SAMPLE_WIDTH, channels=CHANNELS).event())
                if streaming:
                    await self.write_event(AudioStop().event())
            if streaming:
                await self.write_event(SynthesizeStopped().event())
            else:
                await self.write_event(AudioStop().event())
        except SynthesisError as err:
            await self._send_error(err)
            await self.stop()
        except (ConnectionError, RuntimeError) as err:
            _LOGGER.debug("Client went away while audio was sent: %s", err)
            session.cancel()
        except Exception as err:  # a bug of ours: never leave the client waiting (HA has no timeout)
            _LOGGER.exception("Sending audio failed")
            await self._send_error(_internal_error(err))
            await self.stop()

    async def _write_samples(self, rate: int, pcm: bytes) -> None:
        target = self._rate or rate
        step = self.settings.samples_per_chunk * SAMPLE_WIDTH
        converter = AudioChunkConverter(rate=target) if rate != target else None
        for offset in range(0, len(pcm), step):
            chunk = AudioChunk(rate=rate, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm[offset : offset + step])
            if converter is not None:
                chunk = converter.convert(chunk)
            await self.write_event(chunk.event())

    async def _send_error(self, err: SynthesisError) -> None:
        _LOGGER.warning("Request refused (%s): %s", err.code, err)
        if self._session is not None:
            self._session.cancel()
        await self._send_error_event(str(err), err.code)

    async def _send_error_event(self, text: str, code: str) -> None:
        """Best effort: the client may be gone or reading nothing. Server paths stay in the log."""
        try:
            event = Error(text=without_paths(text), code=code).event()
            await asyncio.wait_for(self.write_event(event), ERROR_WRITE_TIMEOUT)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            pass

    async def finish_pending(self) -> None:
        """Until the request under way has sent its audio (the input ended; the output is open).
        A stream that never got its synthesize-stop would never end, so it is dropped."""
        self._drop_open_stream("Input ended inside a stream (no synthesize-stop); dropping it")
        await self._wait_for_sender()

    async def disconnect(self) -> None:
        if self._session is not None:
            self._session.cancel()
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()


# An absolute path: "/" after a start, space, quote or "(" and up to the next such stop.
_ABSOLUTE_PATH = re.compile(r"""(?<![\w.~:/])/(?:[^\s'"/():]+/)*([^\s'"/():]*)""")


def without_paths(text: str) -> str:
    """An error text for a client on the LAN: absolute paths reduced to their last part
    ('/data/voices/anna/ref.txt' -> 'ref.txt')."""
    return _ABSOLUTE_PATH.sub(lambda m: m.group(1) or "/", text)


def _internal_error(err: Exception) -> SynthesisError:
    return SynthesisError(f"internal error: {type(err).__name__}: {err}", code="internal-error")


def _required_text(data: dict[str, Any], event_type: str) -> str:
    text = data.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"{event_type} event has no text", code="missing-data")
    return text


def _voice_request(voice: Any) -> tuple[str | None, str | None, str | None]:
    """(name, language, speaker) from a voice field; tolerant of None and of a bare string."""
    if isinstance(voice, str):
        return voice or None, None, None
    if isinstance(voice, dict):
        name, language, speaker = voice.get("name"), voice.get("language"), voice.get("speaker")
        return (
            name if isinstance(name, str) and name else None,
            language if isinstance(language, str) else None,
            speaker if isinstance(speaker, str) and speaker else None,
        )
    return None, None, None
