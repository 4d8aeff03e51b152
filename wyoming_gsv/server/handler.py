"""One handler per Wyoming connection: describe, ping, synthesize (plain and streamed)."""

from __future__ import annotations

import asyncio
import logging
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
from .info import ProgramSettings, build_info

_LOGGER = logging.getLogger(__name__)

SAMPLE_WIDTH = 2  # 16-bit
CHANNELS = 1


@dataclass(frozen=True)
class HandlerSettings:
    program: ProgramSettings = ProgramSettings()
    samples_per_chunk: int = 2048


class GsvEventHandler(AsyncEventHandler):
    """Reads events while audio is written by a separate task, so a disconnect is seen at once
    and cancels the running synthesis."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        service: TtsService,
        settings: HandlerSettings,
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.settings = settings
        self._session: SpeechSession | None = None
        self._streaming = False
        self._sender: asyncio.Task[None] | None = None
        self._rate: int | None = None  # one audio format per connection: fixed by the first audio-start

    async def run(self) -> None:
        try:
            await super().run()
        except ConnectionError as err:
            # A reset connection raises out of the library's read (or our write); the client is
            # gone and disconnect() has run, so it is not an error of ours to report.
            _LOGGER.debug("Client went away: %s", err)

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
        try:
            await self.write_event(Error(text=str(err), code=err.code).event())
        except (ConnectionError, RuntimeError):
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
