"""Kaldi-compatible filterbank features in plain torch.

The v2Pro speaker network was trained on `torchaudio.compliance.kaldi.fbank`; torchaudio is not
installable beside our torch, so the features are re-derived here from Kaldi's definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class FbankOptions:
    """The Kaldi options the speaker network uses (everything else at Kaldi's defaults)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0 means an offset from Nyquist, as in Kaldi

    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << (self.window_size - 1).bit_length()


def _mel(freq: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def _mel_banks(options: FbankOptions) -> torch.Tensor:
    """Triangular mel filters [num_mel_bins, fft_size // 2 + 1] (last column zero, as Kaldi)."""
    nyquist = options.sample_rate / 2
    high_freq = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    num_fft_bins = options.fft_size // 2
    fft_bin_width = options.sample_rate / options.fft_size
    mel_low, mel_high = _mel(options.low_freq), _mel(high_freq)
    mel_delta = (mel_high - mel_low) / (options.num_mel_bins + 1)

    bins = torch.arange(options.num_mel_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + bins * mel_delta
    center = mel_low + (bins + 1.0) * mel_delta
    right = mel_low + (bins + 2.0) * mel_delta
    mel = _mel(fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(banks, (0, 1))


def _povey_window(size: int) -> torch.Tensor:
    return torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85)


def kaldi_fbank(waveform: torch.Tensor, options: FbankOptions = FbankOptions()) -> torch.Tensor:
    """Log mel filterbank [frames, num_mel_bins] of a float waveform [T] (dither 0, snip_edges)."""
    if waveform.dim() != 1:
        raise ValueError(f"kaldi_fbank expects a 1-D waveform, got shape {tuple(waveform.shape)}")
    size, shift = options.window_size, options.window_shift
    if waveform.numel() < size:
        raise ValueError(f"waveform of {waveform.numel()} samples is shorter than one frame ({size})")
    frames = waveform.float().unfold(0, size, shift)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    frames = (frames - options.preemphasis * previous) * _povey_window(size)
    frames = F.pad(frames, (0, options.fft_size - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    energies = power @ _mel_banks(options).T
    return torch.clamp(energies, min=torch.finfo(torch.float32).eps).log()
