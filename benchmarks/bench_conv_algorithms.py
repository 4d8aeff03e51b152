"""Fewer-FLOP convolutions for the HiFi-GAN's resblock convs, against the direct conv, on the v2
generator's shapes: why the generator runs its wide 7- and 11-tap convs as block DFTs in GEMMs
(`gsv/overlap_save.py`, `vits_modules.LongConv1d`) and keeps the direct conv for the rest. The direct
fp32 conv (oneDNN) already runs near the core's FMA peak, so only fewer multiplies help, and only
where they are not lost again to moving data.

    .venv/bin/python benchmarks/bench_conv_algorithms.py [--threads 1] [--frames 40] [--reps 5]

Per shape (channels C at length T = frames x upsampling so far; kernel k, dilation d) it prints CPU
ms of one conv: direct (`F.conv2d` on [1, C, 1, T] channels-last, as `vits_modules.Conv1d`), the
product's block DFT (`overlap_save_conv`, blocks of `LongConv1d.block`; `*` where `LongConv1d` takes
it at this length; `work`: its multiply-adds over the direct conv's, `block_work_ratio`, which
`LongConv1d.max_work_ratio` bounds; `x`: its measured time over the direct conv's), FFT
overlap-save with torch.fft (best block size; the complex product as three real batched matmuls)
and Winograd F(3,3) over 3-tap pieces of the kernel (dilation by polyphase split), each with its
error against the direct conv (max |diff| / max |y|), and the sums over all shapes: the resblocks
of one generator call weighted by how often each shape occurs (per resblock: (k, 1) four times,
(k, 3) and (k, 5) once), for the direct conv alone, for the product's choice, and for the fastest
algorithm per shape (the most a per-layer choice could gain).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch
import torch.nn.functional as F
from timing import medians_ms, timed
from torch import Tensor

from wyoming_gsv.gsv.overlap_save import block_work_ratio, overlap_save_conv, spectral_weights
from wyoming_gsv.gsv.vits_modules import LongConv1d

# The v2 generator: channels and upsampling after each stage; resblock kernels and dilations.
STAGES = ((256, 10), (128, 80), (64, 160), (32, 320), (16, 640))
KERNELS = (3, 7, 11)
DILATIONS = (1, 3, 5)
FFT_SIZES = (32, 64, 128)


def cpu_ms(fn: Callable[[], object], reps: int) -> float:
    """Median CPU milliseconds of `reps` calls after one unmeasured call."""
    fn()
    return medians_ms([timed(fn) for _ in range(reps)])[1]


def relative_error(actual: Tensor, expected: Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


# ----------------------------------------------------------------------------- FFT overlap-save
def fft_weights(weight: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor]:
    """(Wr, Wr + Wi, Wi - Wr) per frequency bin [bins, Co, Ci]: a complex matmul as three real ones."""
    spectrum = torch.fft.rfft(weight.flip(-1), n=size).permute(2, 0, 1)
    real, imag = spectrum.real.contiguous(), spectrum.imag.contiguous()
    return real, (real + imag).contiguous(), (imag - real).contiguous()


def fft_conv(x: Tensor, weights: tuple[Tensor, Tensor, Tensor], kernel: int, dilation: int, size: int) -> Tensor:
    """Same-padded dilated conv of x [C, T] by overlap-save blocks of `size` per polyphase branch."""
    real, total, diff = weights
    channels, length = x.shape
    hop = size - kernel + 1
    span = dilation * (kernel - 1)
    per_phase = -(-length // dilation)
    blocks = -(-per_phase // hop)
    padded_len = dilation * (blocks * hop + kernel - 1)
    padded = x.new_zeros(channels, padded_len)
    padded[:, span // 2 : span // 2 + length] = x
    windows = padded.view(channels, -1, dilation).unfold(1, size, hop)  # [C, blocks, d, size]
    spectrum = torch.fft.rfft(windows, dim=-1)
    bins = spectrum.shape[-1]
    spectrum = spectrum.permute(3, 0, 1, 2).reshape(bins, channels, blocks * dilation)
    xr, xi = spectrum.real, spectrum.imag
    p = torch.bmm(real, xr + xi)
    out = torch.complex(p - torch.bmm(total, xi), p + torch.bmm(diff, xr))
    out = out.view(bins, -1, blocks, dilation).permute(1, 2, 3, 0)
    y = torch.fft.irfft(out, n=size, dim=-1)[..., kernel - 1 :]  # [Co, blocks, d, hop]
    return y.permute(0, 1, 3, 2).reshape(y.shape[0], -1)[:, :length]


# ----------------------------------------------------------------------------- Winograd F(3, 3)
def toom_cook(outputs: int, taps: int, points: tuple[float, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """(A^T [m, a], G [a, r], B^T [a, a]) with y = A^T [(G g) * (B^T x)] for correlation, from the
    evaluation points (plus infinity); B^T solved from the bilinear identity."""
    size = outputs + taps - 1
    a = torch.zeros(size, outputs, dtype=torch.float64)
    g = torch.zeros(size, taps, dtype=torch.float64)
    for row, point in enumerate(points):
        a[row] = torch.tensor([point**o for o in range(outputs)])
        g[row] = torch.tensor([point**j for j in range(taps)])
    a[-1, -1] = g[-1, -1] = 1
    system = torch.einsum("xo,xj->ojx", a, g).reshape(outputs * taps, size)
    bt = torch.zeros(size, size, dtype=torch.float64)
    for i in range(size):
        target = torch.tensor([float(i == o + j) for o in range(outputs) for j in range(taps)], dtype=torch.float64)
        bt[:, i] = torch.linalg.lstsq(system, target[:, None]).solution[:, 0]
    return a.T.contiguous(), g, bt


TILE, TAPS = 3, 3
AT, G, BT = toom_cook(TILE, TAPS, (0.0, 1.0, -1.0, 2.0))
ALPHA = TILE + TAPS - 1


def winograd_weights(weight: Tensor) -> Tensor:
    """[pieces, alpha, Ci, Co]: the kernel cut into 3-tap pieces, each transformed by G."""
    out_ch, in_ch, kernel = weight.shape
    pieces = -(-kernel // TAPS)
    padded = F.pad(weight, (0, pieces * TAPS - kernel)).double().view(out_ch, in_ch, pieces, TAPS)
    return torch.einsum("xj,ocnj->nxco", G, padded).float().contiguous()


def winograd_conv(x: Tensor, weights: Tensor, kernel: int, dilation: int) -> Tensor:
    """Same-padded dilated conv of time-major x [T, C] -> [T, Co]; piece j of the kernel is
    tile offset j of the same transformed input (no copy per piece)."""
    length, channels = x.shape
    pieces, _, _, out_ch = weights.shape
    span = dilation * (kernel - 1)
    tiles = -(-(-(-length // dilation)) // TILE)
    per_phase = (tiles + pieces - 1) * TILE + ALPHA - TILE
    padded = x.new_zeros(dilation * per_phase, channels)
    padded[span // 2 : span // 2 + length] = x
    phases = padded.view(per_phase, dilation, channels).transpose(0, 1)
    transformed = torch.matmul(phases.unfold(1, ALPHA, TILE), BT.float().T)  # [d, tiles', C, alpha]
    transformed = transformed.permute(0, 3, 1, 2).reshape(dilation * ALPHA, -1, channels)
    product = None
    for piece in range(pieces):
        w = weights[piece].repeat(dilation, 1, 1)
        view = transformed[:, piece : piece + tiles]
        product = torch.bmm(view, w) if product is None else product.baddbmm_(view, w)
    y = torch.matmul(AT.float(), product.view(dilation, ALPHA, tiles * out_ch))
    return y.view(dilation, TILE, tiles, out_ch).permute(2, 1, 0, 3).reshape(-1, out_ch)[:length]


# ----------------------------------------------------------------------------- table
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=40, help="latent frames (50 per second of audio)")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.frames} frames; CPU ms per conv (error)")
    print(f"{'C':>4} {'T':>6} {'k':>3} {'d':>2} {'direct':>8} {'blocks':>16} {'work':>5} {'x':>5} "
          f"{'fft (N)':>18} {'winograd':>18}")
    totals = {"direct": 0.0, "product": 0.0, "fft": 0.0, "winograd": 0.0, "best": 0.0}
    for channels, upsampling in STAGES:
        length = upsampling * args.frames
        x = torch.randn(1, channels, length)
        x_cl = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
        x_tm = x[0].T.contiguous()
        for kernel in KERNELS:
            for dilation in DILATIONS:
                w = torch.randn(channels, channels, kernel) / math.sqrt(channels * kernel)
                pad = dilation * (kernel - 1) // 2
                expected = F.conv1d(x, w, None, 1, pad, dilation)[0]
                w4 = w.unsqueeze(2)
                direct = cpu_ms(lambda: F.conv2d(x_cl, w4, None, 1, (0, pad), (1, dilation)), args.reps)
                sw = spectral_weights(w, None, LongConv1d.block)
                blocks = cpu_ms(lambda: overlap_save_conv(x_tm, sw, kernel, dilation, pad), args.reps)
                blocks_error = relative_error(overlap_save_conv(x_tm, sw, kernel, dilation, pad).T, expected)
                conv = LongConv1d(channels, channels, kernel, dilation=dilation, padding=pad)
                with torch.inference_mode():
                    chosen = conv.uses_blocks(x_cl)
                fft = min((
                    (cpu_ms(lambda: fft_conv(x[0], fw, kernel, dilation, size), args.reps), size, fw)
                    for size in FFT_SIZES
                    if size >= 2 * kernel
                    for fw in [fft_weights(w, size)]
                ), key=lambda result: result[0])
                fft_error = relative_error(fft_conv(x[0], fft[2], kernel, dilation, fft[1]), expected)
                ww = winograd_weights(w)
                wino = cpu_ms(lambda: winograd_conv(x_tm, ww, kernel, dilation), args.reps)
                wino_error = relative_error(winograd_conv(x_tm, ww, kernel, dilation).T, expected)
                uses = 4 if dilation == 1 else 1  # a resblock: convs (k, 1), (k, 3), (k, 5), then three (k, 1)
                totals["direct"] += uses * direct
                totals["product"] += uses * (blocks if chosen else direct)
                totals["fft"] += uses * fft[0]
                totals["winograd"] += uses * wino
                totals["best"] += uses * min(direct, blocks, fft[0], wino)
                print(f"{channels:>4} {length:>6} {kernel:>3} {dilation:>2} {direct:8.2f} "
                      f"{blocks:8.2f}{'*' if chosen else ' '} {blocks_error:.0e} "
                      f"{block_work_ratio(channels, channels, kernel, LongConv1d.block):5.2f} {blocks / direct:5.2f} "
                      f"{fft[0]:8.2f} ({fft[1]:>3}) {fft_error:.0e} {wino:8.2f} {wino_error:.0e}")
    base = totals["direct"]
    print(f"resblock convs of one call: direct {base:.1f} ms, the product's choice {totals['product']:.1f} ms "
          f"({totals['product'] / base:.2f}x), FFT {totals['fft']:.1f} ms "
          f"({totals['fft'] / base:.2f}x), Winograd {totals['winograd']:.1f} ms ({totals['winograd'] / base:.2f}x), "
          f"the fastest of the three per shape {totals['best']:.1f} ms ({totals['best'] / base:.2f}x)")


if __name__ == "__main__":
    main()
