"""The exception for a voice folder that cannot be used."""

from __future__ import annotations

from pathlib import Path


class VoiceError(Exception):
    """A voice is unusable; names the voice, the file or field, and what is wrong."""

    def __init__(self, voice_id: str, path: str | Path, problem: str) -> None:
        self.voice_id = voice_id
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"voice {voice_id!r}: {self.path}: {problem}")


class ModelNotReady(VoiceError):
    """A model file the voice needs is still being written (a copy or download in progress): the
    voice is left out for now and checked again at the next rescan, not marked broken."""
