"""Synthetic clips for the reference-check and voice-store tests: speech-like syllable bursts with
pauses and a noise floor, encoded in any format libsndfile writes."""

from __future__ import annotations

import io

import numpy as np
import soundfile


def speechlike(
    seconds: float,
    rate: int = 32000,
    *,
    syllables_per_second: float = 4.0,
    level: float = 0.3,
    noise_dbfs: float = -70.0,
    pauses: tuple[tuple[float, float], ...] = (),
    seed: int = 0,
) -> np.ndarray:
    """Mono float32: 0.15 s harmonic syllables at the given rate, silent inside `pauses` (start,
    end seconds), over white noise at `noise_dbfs` RMS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    voice = sum(np.sin(2 * np.pi * 150.0 * k * t) / k for k in range(1, 6))
    phase = (t * syllables_per_second) % 1.0
    envelope = np.where(phase < 0.6, np.sin(np.pi * np.clip(phase / 0.6, 0, 1)), 0.0)
    for start, end in pauses:
        envelope[(t >= start) & (t < end)] = 0.0
    audio = level * voice / np.max(np.abs(voice)) * envelope
    audio += rng.normal(0.0, 10 ** (noise_dbfs / 20), size=t.shape)
    return audio.astype(np.float32)


def encode(audio: np.ndarray, rate: int, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()
