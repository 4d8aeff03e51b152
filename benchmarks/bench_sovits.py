"""SoVITS v2 decode speed: seconds of compute per second of audio, real v2 size, random weights.

    .venv/bin/python benchmarks/bench_sovits.py [--seconds 5] [--reps 3] [--threads 1 2]

Builds the real v2 `SynthesizerTrn` shapes (hps of configs/s2.json, ~40.8 M parameters) with
seeded random weights in memory, then times `decode` (codes + phones + ge -> 32 kHz audio)
for an utterance of `--seconds` seconds. The baseline, timed in the same run, is the same
model run the way upstream runs it: weight norm recomputed from g and v on every call and
autograd bookkeeping off with `no_grad` (not `inference_mode`). Medians over `--reps` runs,
the variants interleaved so that load from other processes hits them alike. "first s" is the
time until the first samples exist.
`measure_sovits()` returns the rows for other benchmark scripts.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch

from wyoming_gsv.gsv.sovits import SovitsConfig, SovitsModel, reference_spectrogram

CODES_PER_SECOND = 25
PHONES_PER_SECOND = 12  # roughly what Chinese/English text gives per second of speech


@dataclass
class Row:
    variant: str
    threads: int
    median_s: float
    first_audio_s: float  # until the first samples are ready (= median_s unless chunked)
    cpu_s: float  # median process CPU time: less sensitive to other processes on a busy machine
    audio_s: float
    max_abs_diff: float  # against "ours fp32" at the same thread count

    @property
    def seconds_per_second(self) -> float:
        return self.median_s / self.audio_s


def build_real_v2(seed: int = 0) -> SovitsModel:
    torch.manual_seed(seed)
    model = SovitsModel(SovitsConfig())  # defaults are the real v2 hps
    model.quantizer.embed.normal_()
    return model


def upstream_style(model: SovitsModel) -> SovitsModel:
    """A copy run as upstream runs it: weight-normed convs recompute W = g * v / ||v|| on each
    call, and the generator's activations stay [B, C, T] (no channels-last)."""
    baseline = copy.deepcopy(model)
    baseline.dec.channels_last_on_cpu = False
    convs = list(baseline.dec.ups)
    for block in baseline.dec.resblocks:
        convs += list(block.convs1) + list(block.convs2)
    for flow in baseline.flow.flows[::2]:
        convs += list(flow.enc.in_layers) + list(flow.enc.res_skip_layers) + [flow.enc.cond_layer]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        for conv in convs:
            torch.nn.utils.weight_norm(conv)
    return baseline


Variant = Callable[[], Iterator[torch.Tensor]]


def _whole(fn: Callable[[], torch.Tensor]) -> Variant:
    return lambda: iter([fn()])


def _timed_round_robin(variants: list[Variant], reps: int) -> list[tuple[float, float, float, torch.Tensor]]:
    """Median wall, first-piece and CPU times of each variant, interleaved so load from others hits all alike."""
    outputs = [torch.cat(list(fn())) for fn in variants]  # warm-up (oneDNN primitive creation)
    totals: list[list[float]] = [[] for _ in variants]
    firsts: list[list[float]] = [[] for _ in variants]
    cpus: list[list[float]] = [[] for _ in variants]
    for _ in range(reps):
        for i, fn in enumerate(variants):
            cpu_start = time.process_time()
            start = time.perf_counter()
            pieces = []
            for piece in fn():
                if not pieces:
                    firsts[i].append(time.perf_counter() - start)
                pieces.append(piece)
            totals[i].append(time.perf_counter() - start)
            cpus[i].append(time.process_time() - cpu_start)
            outputs[i] = torch.cat(pieces)
    return [
        (statistics.median(total), statistics.median(first), statistics.median(cpu), out)
        for total, first, cpu, out in zip(totals, firsts, cpus, outputs)
    ]


def measure_sovits(seconds: float = 5.0, reps: int = 3, threads: tuple[int, ...] = (1, 2)) -> list[Row]:
    model = build_real_v2()
    baseline = upstream_style(model)
    mixed = copy.deepcopy(model)
    mixed.set_generator_dtype(torch.bfloat16)

    gen = torch.Generator().manual_seed(1)
    n_codes = int(seconds * CODES_PER_SECOND)
    codes = torch.randint(0, 1024, (n_codes,), generator=gen)
    phones = torch.randint(0, model.config.n_symbols, (int(seconds * PHONES_PER_SECOND),), generator=gen)
    ge = model.global_embedding([reference_spectrogram(0.1 * torch.randn(4 * model.sampling_rate, generator=gen))])
    noise = torch.randn(1, model.config.inter_channels, 2 * n_codes, generator=gen)
    audio_s = n_codes * model.samples_per_code / model.sampling_rate

    def run_baseline() -> torch.Tensor:
        with torch.no_grad():  # upstream decode is @torch.no_grad
            content = baseline.quantizer.decode(codes[None]).repeat_interleave(2, dim=-1)
            _, m_p, logs_p = baseline.enc_p(content, phones[None], ge)
            z = baseline.flow.reverse(m_p + noise * torch.exp(logs_p) * 0.5, ge)
            return baseline.dec(z, ge).reshape(-1)

    plain = copy.deepcopy(model)
    plain.dec.channels_last_on_cpu = False

    variants: list[tuple[str, Variant]] = [
        ("upstream-style (weight norm per call, no_grad)", _whole(run_baseline)),
        ("ours fp32 (folded weight norm, channels-last)", _whole(lambda: model.decode(codes, phones, ge, noise=noise))),
        ("ours fp32, generator in [B, C, T] layout", _whole(lambda: plain.decode(codes, phones, ge, noise=noise))),
        ("ours, bf16 generator (channels-last)", _whole(lambda: mixed.decode(codes, phones, ge, noise=noise))),
    ]
    rows: list[Row] = []
    saved_threads = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            results = _timed_round_robin([fn for _, fn in variants], reps)
            reference = results[1][3]
            for (name, _), (median, first, cpu, out) in zip(variants, results):
                diff = (out.float() - reference).abs().max().item()
                rows.append(Row(name, n, median, first, cpu, audio_s, diff))
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"torch {torch.__version__}, real v2 SoVITS (random weights), {rows[0].audio_s:.2f} s utterance")
    header = (
        f"{'variant':48s} {'thr':>3s} {'median s':>9s} {'first s':>8s} {'cpu s':>7s} {'s/s audio':>9s} "
        f"{'vs base':>8s} {'max|diff|':>10s}"
    )
    print(header)
    print("-" * len(header))
    base: dict[int, float] = {}
    for row in rows:
        base.setdefault(row.threads, row.median_s)
        ratio = row.median_s / base[row.threads]
        print(
            f"{row.variant:48s} {row.threads:3d} {row.median_s:9.3f} {row.first_audio_s:8.3f} {row.cpu_s:7.3f} "
            f"{row.seconds_per_second:9.3f} "
            f"{ratio:7.2f}x {row.max_abs_diff:10.2e}"
        )
    load = os.getloadavg()[0]
    print(f"s/s audio = median wall s / audio s; target <= 0.70 (performance.md). Load average now {load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    print_table(measure_sovits(args.seconds, args.reps, tuple(args.threads)))


if __name__ == "__main__":
    main()
