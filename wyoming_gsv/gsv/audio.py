"""Reading reference audio: soundfile to decode, soxr or a windowed sinc to resample.

The official code resamples with two different tools, and we follow each where it is used:
* `load_audio(path, 16000)` reproduces `librosa.load(path, sr=16000)` (what HuBERT gets):
  channel mean, soxr "HQ" resampling, length fixed to ceil(n * ratio).
* `load_reference_audio(path, rate)` reproduces `TTS._get_ref_spec` (what the reference
  spectrogram and the v2Pro speaker network get): channel mean, `torchaudio.transforms.Resample`
  (re-derived in `sinc_resample`, no torchaudio), peak normalisation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch
import torch.nn.functional as F


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


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    try:
        audio, file_sr = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioFileError(path, f"cannot read audio ({exc})") from exc
    if audio.size == 0:
        raise AudioFileError(path, "audio file contains no samples")
    mono = audio.mean(axis=1, dtype=np.float32) if audio.shape[1] > 1 else audio[:, 0]
    if not np.all(np.isfinite(mono)):
        raise AudioFileError(path, "audio contains NaN or infinite samples")
    return np.ascontiguousarray(mono), int(file_sr)


def load_audio(path: str | Path, sample_rate: int, *, normalize_peak: bool = False) -> np.ndarray:
    """Decode an audio file (wav, flac, ogg, mp3...) to mono float32 at `sample_rate` (soxr HQ).

    normalize_peak: divide by min(2, peak) when the peak exceeds 1.
    """
    mono, file_sr = _read_mono(Path(path))
    mono = resample(mono, file_sr, sample_rate)
    return _normalized(mono) if normalize_peak else mono.astype(np.float32, copy=False)


def load_reference_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """The reference as the official spectrogram path reads it: mono, sinc-resampled, peak <= 1."""
    return _normalized(load_reference_waveform(path, sample_rate))


def load_reference_waveform(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono, sinc-resampled, not normalised: what the v3/v4 reference mel is computed from."""
    mono, file_sr = _read_mono(Path(path))
    return sinc_resample(torch.from_numpy(mono), file_sr, sample_rate).numpy()


def _normalized(audio: np.ndarray) -> np.ndarray:
    peak = float(np.abs(audio).max())
    if peak > 1:
        audio = audio / min(2.0, peak)
    return audio.astype(np.float32, copy=False)


def _sinc_kernel(orig: int, new: int, lowpass_width: int, rolloff: float) -> tuple[torch.Tensor, int]:
    """Polyphase Hann-windowed sinc kernel [new, 1, taps] for rates already divided by their gcd."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64).unsqueeze(0) / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64).unsqueeze(1) / new + idx) * base
    t = t.clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * math.pi / lowpass_width / 2).pow(2)
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t)
    kernel = (sinc * window * (base / orig)).to(torch.float32).unsqueeze(1)
    return kernel, width


def sinc_resample(
    waveform: torch.Tensor, orig_rate: int, new_rate: int, lowpass_width: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Resample a 1-D waveform like `torchaudio.transforms.Resample` with its defaults."""
    if orig_rate == new_rate:
        return waveform
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    kernel, width = _sinc_kernel(orig, new, lowpass_width, rolloff)
    length = waveform.shape[-1]
    padded = F.pad(waveform.float().reshape(1, 1, length), (width, width + orig))
    out = F.conv1d(padded, kernel.to(waveform.device), stride=orig)
    out = out.transpose(1, 2).reshape(-1)
    return out[: math.ceil(new * length / orig)]
