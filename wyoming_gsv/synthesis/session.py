"""One request: a text stream -> sentences -> engine jobs -> audio pieces, in order, cancellable."""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Protocol

from ..text.scripts import drop_unspeakable
from .engine import Engine, EngineJob
from .speech import AudioPiece, BadRequest, Speaker, Speech, SynthesisError
from .text_checks import has_speakable

_LOGGER = logging.getLogger(__name__)

# Longest text one request may have waiting to be spoken (characters): a plain synthesize's whole
# text; a stream is held back (see wait_for_room) and never refused for its total length.
DEFAULT_MAX_CHARS = 20_000


class SentenceSplitter(Protocol):
    """Incremental splitter: complete sentences as soon as they are known."""

    def feed(self, fragment: str) -> list[str]: ...

    def flush(self) -> list[str]: ...


_FINISHED = object()


class SpeechSession:
    """Feed text (all at once or in fragments), then iterate `pieces()` for audio in order.

    Sentences go to the engine as soon as they complete, so the first sentence is spoken while
    later text is still arriving. `cancel()` (e.g. on disconnect) stops the job within one
    decode step. Memory stays bounded: a sentence's text is let go once it is spoken, and a
    stream's reader awaits `wait_for_room()` while `max_chars` characters are waiting.
    Characters no voice can speak (emoji, Cyrillic or Arabic words) are dropped.
    """

    def __init__(
        self,
        engine: Engine,
        speaker: Speaker,
        splitter: SentenceSplitter,
        *,
        language: str,
        max_chars: int,
    ) -> None:
        self._engine = engine
        self._splitter = splitter
        self._language = language
        self._max_chars = max_chars
        self._loop = asyncio.get_running_loop()
        self._results: asyncio.Queue[object] = asyncio.Queue()
        self._job = EngineJob(speaker=speaker, on_result=self._on_result)
        self._submitted = 0
        self._finished = False
        self._waiting: dict[int, int] = {}  # sentence index -> characters, until it is spoken
        self._waiting_chars = 0
        self._room = asyncio.Event()
        self._room.set()
        self._dropped = ""  # what drop_unspeakable took out (first characters only, for the log)
        self._dropped_count = 0

    @property
    def cancelled(self) -> bool:
        return self._job.cancelled.is_set()

    def feed(self, fragment: str) -> None:
        """Add text; raises BadRequest if more than max_chars would be waiting to be spoken."""
        if self._finished:
            return
        if self._waiting_chars + len(fragment) > self._max_chars:
            raise BadRequest(f"text is over the limit of {self._max_chars} characters", code="text-too-long")
        speakable = drop_unspeakable(fragment)
        if speakable.dropped:
            self._dropped_count += len(speakable.dropped)
            self._dropped = (self._dropped + speakable.dropped)[:40]
        self._submit(self._splitter.feed(speakable.text))

    def finish(self) -> None:
        """No more text: the rest of the buffer becomes the last sentence(s)."""
        if self._finished:
            return
        self._submit(self._splitter.flush())
        self._finished = True
        self._room.set()
        if self._dropped_count:
            _LOGGER.debug("Dropped %d characters no voice can speak: %r", self._dropped_count, self._dropped)
        if self._submitted == 0:
            if self._dropped_count:
                raise BadRequest(
                    f"nothing left to speak: {self._dropped!r} is in a script no voice speaks",
                    code="unsupported-language",
                )
            raise BadRequest("text is empty (nothing to speak)", code="empty-text")
        self._results.put_nowait(_FINISHED)

    async def wait_for_room(self) -> None:
        """Until fewer than half of max_chars characters are waiting to be spoken (or the session
        ended): a stream reader that awaits this holds the client back instead of buffering."""
        await self._room.wait()

    def cancel(self) -> None:
        self._job.cancel()
        self._room.set()

    async def pieces(self) -> AsyncIterator[AudioPiece]:
        """Audio in sentence order, piece by piece as the engine makes it; raises SynthesisError
        if a sentence fails. (One worker runs a job's sentences in order, so pieces arrive in order.)"""
        done = 0
        finished = False
        open_sentence: int | None = None
        while not (finished and done >= self._submitted):
            item = await self._results.get()
            if item is _FINISHED:
                finished = True
                continue
            index, speech, error, last = item  # type: ignore[misc]
            if error is not None:
                self.cancel()
                if isinstance(error, SynthesisError):
                    raise error
                raise SynthesisError(f"synthesis failed: {error}") from error
            if last:
                done += 1
                self._spoken(index)
            if self.cancelled:
                continue
            first = open_sentence != index
            if speech is None and first:
                continue  # a sentence that produced no audio: nothing to open or close
            open_sentence = None if last else index
            yield AudioPiece(sentence=index, speech=speech, first=first, last=last)

    async def speeches(self) -> AsyncIterator[Speech]:
        """Just the audio, in order (for callers that do not care about sentence boundaries)."""
        async for piece in self.pieces():
            if piece.speech is not None:
                yield piece.speech

    def _submit(self, sentences: list[str]) -> None:
        for sentence in sentences:
            if not has_speakable(sentence):
                continue  # punctuation-only leftovers have nothing to say
            self._engine.submit(self._job, self._submitted, sentence)
            self._waiting[self._submitted] = len(sentence)
            self._waiting_chars += len(sentence)
            if self._waiting_chars >= self._max_chars // 2:
                self._room.clear()
            self._submitted += 1

    def _spoken(self, index: int) -> None:
        self._waiting_chars -= self._waiting.pop(index, 0)
        if self._waiting_chars < self._max_chars // 2:
            self._room.set()

    def _on_result(self, index: int, speech: Speech | None, error: BaseException | None, last: bool) -> None:
        """Worker thread -> event loop."""
        try:
            self._loop.call_soon_threadsafe(self._results.put_nowait, (index, speech, error, last))
        except RuntimeError:
            pass  # the loop is gone (server shutting down); nobody is listening
