"""Reference clip checks: readable, 3-10 s long, >= 16 kHz, not silent."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
MIN_SAMPLE_RATE = 16000
# Peak below this (full scale = 1.0) counts as silence: about -60 dBFS.
SILENCE_PEAK = 1e-3

REFERENCE_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")


@dataclass(frozen=True)
class ReferenceInfo:
    path: Path
    sample_rate: int
    seconds: float


class ReferenceProblem(ValueError):
    """What is wrong with a reference clip (the caller adds which voice and file)."""


def check_reference(path: Path) -> ReferenceInfo:
    """Check the clip's header, then (only if its length is right) read it once; raises
    ReferenceProblem with a readable reason. An hour-long file costs a header read, not a decode."""
    try:
        header = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise ReferenceProblem(f"cannot read audio ({err})") from err
    _check_format(header.samplerate, header.frames / float(header.samplerate) if header.samplerate else 0.0)
    try:
        audio, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True,
                                            frames=int((MAX_SECONDS + 1) * header.samplerate))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as err:
        raise ReferenceProblem(f"cannot read audio ({err})") from err
    # Compressed formats' headers may estimate; the decoded length is the one that counts.
    seconds = audio.shape[0] / float(sample_rate) if sample_rate else 0.0
    _check_format(sample_rate, seconds)
    if audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK:
        raise ReferenceProblem("clip is silent")
    return ReferenceInfo(path=path, sample_rate=int(sample_rate), seconds=seconds)


def _check_format(sample_rate: int, seconds: float) -> None:
    if sample_rate < MIN_SAMPLE_RATE:
        raise ReferenceProblem(f"sample rate {sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz")
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ReferenceProblem(f"clip is {seconds:.2f} s long; it must be {MIN_SECONDS:g}-{MAX_SECONDS:g} s")


def find_reference(folder: Path, stem: str = "ref") -> Path | None:
    """`ref.wav` (or .flac/.mp3/.ogg) in a voice folder."""
    for suffix in REFERENCE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None
