"""What the engine runs: a Speaker turns one sentence into audio; errors a client can be told."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

ShouldStop = Callable[[], bool]


@dataclass(frozen=True)
class Speech:
    """One sentence of audio: mono int16 samples at `rate` Hz."""

    rate: int
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / float(self.rate)


Emit = Callable[[Speech], None]


@dataclass(frozen=True)
class AudioPiece:
    """Part of a sentence's audio as a session yields it; `speech` is None when a piece only
    closes its sentence."""

    sentence: int
    speech: Speech | None
    first: bool  # the sentence's first piece
    last: bool  # the sentence's last piece


class Pending(Protocol):
    """Audio of a sentence still being made on another worker (see synthesis/pipeline.py)."""

    def when_done(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call `callback(error or None)` right after the sentence's last piece was emitted."""

    def wait(self) -> None:
        """Block until the sentence's audio is all out; raises its error."""


class Speaker(Protocol):
    """A voice bound to its models and settings, run on the engine's worker thread."""

    def prepare(self) -> None:
        """Load models and the voice bundle (idempotent; may raise)."""

    def speak(self, text: str, should_stop: ShouldStop, emit: Emit) -> Pending | None:
        """Speak one sentence, handing its audio to `emit` in one or more pieces, in order;
        returns early (emitting nothing more) once should_stop() is True. A speaker whose audio
        is made on another worker returns a Pending (the engine goes on with the next sentence)."""


class SynthesisError(Exception):
    """A request that cannot be served; `code` goes into the Wyoming `error` event."""

    code = "synthesis-failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class EngineBusy(SynthesisError):
    code = "busy"


class BadRequest(SynthesisError):
    code = "bad-request"


def float_to_int16(audio: np.ndarray, normalize: bool = True) -> np.ndarray:
    """Float waveform -> int16, scaled down if it would clip (as upstream does per sentence);
    normalize=False clips instead (for pieces of a sentence, whose levels must match)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if normalize and peak > 1.0:
        audio = audio / peak
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)
