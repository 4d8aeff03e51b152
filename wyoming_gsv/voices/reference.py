"""Reference clip checks for voice folders: readable, 3-10 s long, >= 16 kHz, not silent (check.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import soundfile

from .check import MAX_SECONDS, MIN_SAMPLE_RATE, MIN_SECONDS, ClipError, ClipReport, check_clip

__all__ = ["MAX_SECONDS", "MIN_SAMPLE_RATE", "MIN_SECONDS", "ReferenceInfo", "ReferenceProblem", "check_reference"]

REFERENCE_SUFFIXES: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg")


@dataclass(frozen=True)
class ReferenceInfo:
    path: Path
    sample_rate: int
    seconds: float
    report: ClipReport | None = None  # the full check (levels, noise, advice)


class ReferenceProblem(ValueError):
    """What is wrong with a reference clip (the caller adds which voice and file)."""


# Compressed formats' headers may estimate the length: only a clip clearly too long is refused
# from its header; the decoded length decides the rest.
HEADER_SLACK_SECONDS = 1.0


def check_reference(path: Path) -> ReferenceInfo:
    """Check the clip's header, then read the clip once and check it; raises ReferenceProblem
    with the check's reason. A clip far too long (an hour of audio) costs a header read, not a
    decode, at each rescan."""
    try:
        header = soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        header = None  # formats soundfile cannot name: check_clip decodes or explains
    if header is not None and header.samplerate > 0:
        seconds = header.frames / float(header.samplerate)
        if seconds > MAX_SECONDS + HEADER_SLACK_SECONDS:
            raise ReferenceProblem(f"clip is {seconds:.2f} s long; it must be {MIN_SECONDS:g}-{MAX_SECONDS:g} s")
    try:
        report = check_clip(path)
    except ClipError as err:
        raise ReferenceProblem(str(err)) from err
    if report.refused:
        raise ReferenceProblem("; ".join(report.problems))
    return ReferenceInfo(path=path, sample_rate=report.sample_rate, seconds=report.duration, report=report)


def find_reference(folder: Path, stem: str = "ref") -> Path | None:
    """`ref.wav` (or .flac/.mp3/.ogg) in a voice folder."""
    for suffix in REFERENCE_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None
