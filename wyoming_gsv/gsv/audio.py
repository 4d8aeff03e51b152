"""Reading reference audio: soundfile to decode, soxr to resample (no librosa/torchaudio).

`load_audio(path, 16000)` reproduces `librosa.load(path, sr=16000)` (what the official code
feeds HuBERT): channel mean, soxr "HQ" resampling, length fixed to ceil(n * ratio).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import soxr


class AudioFileError(ValueError):
    """An audio file cannot be used; names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """soxr HQ resampling with librosa's length rule (ceil(n * target / orig) samples)."""
    if orig_sr == target_sr:
        return audio
    out = soxr.resample(audio, orig_sr, target_sr, quality="HQ")
    length = math.ceil(audio.shape[-1] * target_sr / orig_sr)
    if out.shape[-1] < length:
        out = np.pad(out, (0, length - out.shape[-1]))
    return np.ascontiguousarray(out[:length], dtype=np.float32)


def load_audio(path: str | Path, sample_rate: int, *, normalize_peak: bool = False) -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3...) to mono float32 at `sample_rate`.

    normalize_peak: divide by min(2, peak) when the peak exceeds 1, as the official code does
    for the reference spectrogram (not for the HuBERT input).
    """
    path = Path(path)
    try:
        audio, file_sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(path, f"cannot read audio ({exc})") from exc
    if audio.size == 0:
        raise AudioFileError(path, "audio file contains no samples")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioFileError(path, "audio contains NaN or infinite samples")
    mono = resample(np.ascontiguousarray(mono), int(file_sr), sample_rate)
    if normalize_peak:
        peak = float(np.abs(mono).max())
        if peak > 1:
            mono = mono / min(2.0, peak)
    return mono.astype(np.float32, copy=False)
