"""The HiFi-GAN's long convolutions as block DFTs done by GEMMs (overlap-save), on the CPU.

Why: the generator's fp32 direct convs already run at the core's FMA peak (oneDNN), so they get
cheaper only with fewer multiplies. Cut into blocks of N samples, a K-tap conv over C -> C channels
costs, per output sample, N/2+1 channel products per N-K+1 outputs (three real multiply-adds at
each complex frequency, Gauss's trick; one at the real frequencies 0 and N/2) instead of K, plus
the transforms, which are small GEMMs against fixed cos/sin bases (no FFT calls, no complex
tensors, no permuting copies: every operand is a strided view BLAS takes as it is). For N = 32
that is 2.1 instead of 11 per channel pair for 11 taps, 1.8 instead of 7 for 7 taps; it pays from
about 128 channels and 7 taps (`benchmarks/bench_conv_algorithms.py` times every generator shape).
The sums differ from the direct conv's by float rounding (~1e-6 of the peak).

A dilated conv is `dilation` undilated ones on the interleaved streams x[j::dilation] (polyphase),
so the block size does not grow with the dilation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SpectralWeights:
    """One conv's weights in the block-DFT domain (float32 on the conv's device). The F = N/2 + 1
    frequencies of a real N-sample block; the inner ones (1 .. F-2) are complex, while frequencies
    0 and N/2 are real for real signals and kernels (their sines vanish at whole samples), so they
    take one real product instead of three and no imaginary rows."""

    analysis: Tensor  # [N, N]: the cos rows of the F frequencies, then the -sin rows of the inner ones
    real: Tensor  # [F, Ci, Co]: Re W
    real_plus_imag: Tensor  # [F-2, Ci, Co]: Re W + Im W of the inner frequencies (Gauss: three real products per complex one)
    imag_minus_real: Tensor  # [F-2, Ci, Co]: Im W - Re W
    synthesis_real: Tensor  # [hop, F]: the hop valid outputs of a block from the real parts
    synthesis_imag: Tensor  # [hop, F-2]: ... and from the inner imaginary parts
    bias_at_dc: Tensor | None  # [Co]: N * bias, added at frequency 0 it is the bias of every output
    hop: int  # outputs per block: N - K + 1

    @property
    def block(self) -> int:
        return self.analysis.shape[1]

    @property
    def frequencies(self) -> int:
        return self.real.shape[0]


def block_fits(kernel: int, block: int) -> bool:
    """Whether blocks of `block` samples can carry a `kernel`-tap conv: even (frequency N/2 is
    then real) and larger than the kernel."""
    return block % 2 == 0 and block > kernel


def block_work_ratio(in_channels: int, out_channels: int, kernel: int, block: int) -> float:
    """Multiply-adds per output sample of the block path (analysis, channel product, synthesis)
    over the direct conv's; inf where the block does not fit (`block_fits`)."""
    if not block_fits(kernel, block):
        return math.inf
    hop = block - kernel + 1
    freqs = block // 2 + 1
    products = (freqs + 2 * (freqs - 2)) * in_channels * out_channels  # Gauss: 3 per inner frequency, 1 at 0 and N/2
    per_output = (products + block * block * in_channels + block * hop * out_channels) / hop
    return per_output / (kernel * in_channels * out_channels)


def spectral_weights(weight: Tensor, bias: Tensor | None, block: int) -> SpectralWeights:
    """Conv weight [Co, Ci, K] (+ bias [Co]) -> its block-DFT form for blocks of `block` samples
    (even, larger than the kernel).

    The block output y[t] = sum_k w[k] x[t + k] is the circular convolution of the block with the
    flipped kernel, read at t + K - 1 (the first K - 1 positions wrap around and are dropped)."""
    out_ch, in_ch, kernel = weight.shape
    if not block_fits(kernel, block):
        raise ValueError(f"block {block} must be even and exceed the kernel ({kernel} taps)")
    frequencies = block // 2 + 1
    inner = slice(1, frequencies - 1)
    hop = block - kernel + 1
    f = torch.arange(frequencies, dtype=torch.float64)
    angle = 2 * math.pi * f[:, None] * torch.arange(block, dtype=torch.float64)[None, :] / block
    analysis = torch.cat([torch.cos(angle), -torch.sin(angle[inner])])
    spectrum = torch.fft.rfft(weight.detach().double().cpu().flip(-1), n=block).permute(2, 1, 0)  # [F, Ci, Co]
    real, imag = spectrum.real, spectrum.imag
    # Inverse real DFT at positions K-1 .. N-1: frequencies 0 and N/2 once, the others twice.
    multiplicity = torch.full((frequencies,), 2.0, dtype=torch.float64)
    multiplicity[0] = multiplicity[-1] = 1.0
    positions = torch.arange(kernel - 1, block, dtype=torch.float64)
    angle = 2 * math.pi * positions[:, None] * f[None, :] / block
    synthesis_real = multiplicity * torch.cos(angle) / block
    synthesis_imag = -multiplicity[inner] * torch.sin(angle[:, inner]) / block

    def out(t: Tensor) -> Tensor:
        return t.to(device=weight.device, dtype=torch.float32).contiguous()

    return SpectralWeights(
        analysis=out(analysis),
        real=out(real),
        real_plus_imag=out(real[inner] + imag[inner]),
        imag_minus_real=out(imag[inner] - real[inner]),
        synthesis_real=out(synthesis_real),
        synthesis_imag=out(synthesis_imag),
        bias_at_dc=None if bias is None else out(bias.detach().double() * block),
        hop=hop,
    )


def overlap_save_conv(x: Tensor, weights: SpectralWeights, kernel: int, dilation: int, padding: int) -> Tensor:
    """Time-major x [T, Ci] (contiguous, float32) -> [T', Co]: the conv with `padding` zeros on
    each side, T' = T + 2 padding - dilation (K - 1), as nn.Conv1d computes it."""
    length, in_ch = x.shape
    block, hop, freqs = weights.block, weights.hop, weights.frequencies
    out_len = length + 2 * padding - dilation * (kernel - 1)
    if out_len <= 0:
        raise ValueError(f"input of {length} samples is shorter than the kernel's span")
    per_stream = -(-out_len // dilation)  # outputs of the longest stream
    blocks = -(-per_stream // hop)
    stream_len = blocks * hop + kernel - 1
    padded = F.pad(x, (0, 0, padding, stream_len * dilation - length - padding))  # row s*d + j: stream j, sample s
    rows = dilation * blocks  # (stream, block)
    spectra = x.new_empty(rows, block, in_ch)  # per row: Re of each frequency, then Im of the inner ones
    for stream in range(dilation):
        windows = padded.as_strided((blocks, block, in_ch), (hop * dilation * in_ch, dilation * in_ch, 1), stream * in_ch)
        torch.matmul(weights.analysis, windows, out=spectra[stream * blocks : (stream + 1) * blocks])
    real = spectra[:, :freqs].transpose(0, 1)  # [F, rows, Ci], strided views BLAS reads as they are
    imag = spectra[:, freqs:].transpose(0, 1)  # [F-2, rows, Ci]: the inner frequencies
    # Per frequency, the complex channel product in three real GEMMs (one at frequencies 0 and N/2):
    # (Xr + Xi) Wr, then Re = that - Xi (Wr + Wi) and Im = that + Xr (Wi - Wr).
    mixed = x.new_empty(freqs, rows, in_ch)
    mixed[0], mixed[-1] = real[0], real[-1]
    torch.add(real[1:-1], imag, out=mixed[1:-1])
    out_real = torch.bmm(mixed, weights.real)  # [F, rows, Co]
    inner = out_real[1:-1]
    out_imag = torch.baddbmm(inner, real[1:-1], weights.imag_minus_real)
    inner.baddbmm_(imag, weights.real_plus_imag, alpha=-1)
    if weights.bias_at_dc is not None:
        out_real[0] += weights.bias_at_dc
    y = torch.matmul(weights.synthesis_real, out_real.transpose(0, 1))  # [rows, hop, Co]
    y.baddbmm_(weights.synthesis_imag.expand(rows, -1, -1), out_imag.transpose(0, 1))
    out_ch = y.shape[-1]
    if dilation == 1:
        return y.view(blocks * hop, out_ch)[:out_len]
    # row (stream j, block b), position t -> time (b * hop + t) * dilation + j
    return y.view(dilation, blocks * hop, out_ch).transpose(0, 1).reshape(-1, out_ch)[:out_len]
