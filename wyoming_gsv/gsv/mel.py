"""Log-mel spectrograms as the v3/v4 models see them (upstream `mel_spectrogram_torch`).

Reflect padding of (n_fft - hop) / 2 on each side, no centering, periodic Hann window, magnitude
sqrt(re^2 + im^2 + 1e-8), a Slaney-style mel filterbank (librosa's default, re-derived here so
librosa is not needed), natural log of the magnitudes clamped at 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

# The DiT works on mels mapped from [-12, 2] (log magnitude) to [-1, 1].
SPEC_MIN, SPEC_MAX = -12.0, 2.0


@dataclass(frozen=True)
class MelConfig:
    sampling_rate: int
    n_fft: int
    hop_length: int
    win_length: int
    n_mels: int = 100
    fmin: float = 0.0
    fmax: float | None = None


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    min_log_mel, logstep = 1000.0 / (200.0 / 3), math.log(6.4) / 27.0
    return np.where(hz >= 1000.0, min_log_mel + np.log(np.maximum(hz, 1e-10) / 1000.0) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    min_log_mel, logstep = 1000.0 / (200.0 / 3), math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, 1000.0 * np.exp(logstep * (mel - min_log_mel)), mel * (200.0 / 3))


def mel_filterbank(sampling_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """[n_mels, n_fft // 2 + 1] float32 triangles, area-normalised (Slaney), like librosa.filters.mel."""
    fmax = sampling_rate / 2 if fmax is None else fmax
    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sampling_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[:, None]
    return weights


def log_mel_spectrogram(audio: Tensor, config: MelConfig) -> Tensor:
    """audio [T] or [1, T] float at config.sampling_rate -> [1, n_mels, frames] float32."""
    c = config
    audio = audio.reshape(1, 1, -1).float()
    pad = (c.n_fft - c.hop_length) // 2
    audio = F.pad(audio, (pad, pad), mode="reflect").reshape(1, -1)
    window = torch.hann_window(c.win_length, device=audio.device)
    stft = torch.stft(audio, c.n_fft, hop_length=c.hop_length, win_length=c.win_length, window=window,
                      center=False, return_complex=True)
    magnitude = torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-8)
    basis = torch.from_numpy(mel_filterbank(c.sampling_rate, c.n_fft, c.n_mels, c.fmin, c.fmax)).to(audio.device)
    return torch.log(torch.clamp(basis @ magnitude, min=1e-5))


def normalize_mel(mel: Tensor) -> Tensor:
    return (mel - SPEC_MIN) / (SPEC_MAX - SPEC_MIN) * 2 - 1


def denormalize_mel(mel: Tensor) -> Tensor:
    return (mel + 1) / 2 * (SPEC_MAX - SPEC_MIN) + SPEC_MIN
