"""CPU speed at real v2 size, one table: GPT decode vs its GEMV floor, SoVITS cost per second of
audio, and time to first audio / total for streaming, whole-sentence and serial modes.

    .venv/bin/python benchmarks/bench_cpu.py [--threads 1 2] [--reps 3] [--tokens 60] [--precision fp32 bf16]

Model files: the real v2 architecture with seeded random weights in the official formats
(bench_server.build_data_dir), loaded through the product's own Runtime (no TCP). Random weights
never pick EOS, so every sentence runs to the early stop at `--tokens` tokens. The text is a
two-sentence announcement. Modes, run interleaved (one request of each per round):
* `fixed` / `split`: upstream streaming modes 3 / 2 (16-token chunks), GPT and SoVITS overlapping
  on two workers (the default at 2+ threads);
* `... serial`: the same, GPT and SoVITS one after the other (`--no-overlap`; at 1 thread);
* `sentence serial`: whole sentences (upstream's non-streaming output), which run one step after
  the other on all threads with or without the overlap;
* `... steps on all` (2+ threads): serial, the GPT's decode steps on every thread instead of the
  count timed before the model first spoke (`--decode-threads N` with N = --threads).
Baseline for the ratios, measured in the same rounds: whole sentences, serial. Figures are
medians with the spread (min-max) over the rounds; CPU = process CPU seconds; peak RSS is the
process's; the load average is read before and after each thread count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_server import build_data_dir  # noqa: E402
from bench_t2s import _gemv_floor  # noqa: E402
from timing import median_wall_s  # noqa: E402
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings  # noqa: E402

TEXT = "The washing machine in the basement has finished. Please take the laundry out soon."
MODES = {  # label: (chunking, overlap)
    "fixed": ("fixed", True),
    "split": ("split", True),
    "fixed serial": ("fixed", False),
    "split serial": ("split", False),
    "sentence serial": ("sentence", False),
}
BASELINE = "sentence serial"


@dataclass
class Request:
    first_audio: float  # seconds from the request to its first audio piece
    total: float  # seconds to the last piece
    cpu: float  # process CPU seconds over the request
    audio: float  # seconds of audio


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} ({min(values):.3f}-{max(values):.3f})"


def request(runtime: Runtime, chunking: str, **overrides: object) -> Request:
    """One request of TEXT with voice setting `chunking` (and any other voice setting overrides)."""
    runtime.service.settings = replace(runtime.service.settings, param_overrides={"chunking": chunking, **overrides})

    async def run() -> Request:
        wall, cpu = time.perf_counter(), time.process_time()
        session = runtime.service.open_session("bench")
        session.feed(TEXT)
        session.finish()
        first, samples, rate = None, 0, 1
        async for speech in session.speeches():
            if first is None and speech.samples.any():
                first = time.perf_counter() - wall
            samples, rate = samples + speech.samples.size, speech.rate
        return Request(first or 0.0, time.perf_counter() - wall, time.process_time() - cpu, samples / rate)

    return asyncio.run(run())


def gemv_floor_ms(model: torch.nn.Module, reps: int = 20) -> float:
    """One decode step's weight matmuls alone on one row, by the model's own linears
    (bench_t2s's GemvLinear floor), median ms."""
    with torch.inference_mode():
        return 1000 * median_wall_s(_gemv_floor(model, own_linears=True), reps)


def decode_ms_per_token(runtime: Runtime, reps: int) -> float:
    """Median gap between accepted tokens of a real request (prefill excluded)."""
    pair = runtime.backend.model_pair(*_voice_models(runtime))
    original = pair.t2s.generate
    gaps: list[float] = []

    def timing_generate(*args, **kwargs):
        stamps: list[float] = []
        on_token = kwargs.get("on_token")

        def stamp(token: int) -> None:
            stamps.append(time.perf_counter())
            if on_token is not None:
                on_token(token)

        kwargs["on_token"] = stamp
        try:
            return original(*args, **kwargs)
        finally:
            gaps.extend(b - a for a, b in zip(stamps, stamps[1:]))

    pair.t2s.generate = timing_generate
    try:
        for _ in range(reps):
            request(runtime, "sentence")
    finally:
        del pair.t2s.generate
    return 1000 * statistics.median(gaps)


def sovits_seconds_per_second(runtime: Runtime, tokens: int, reps: int) -> float:
    """Whole-sentence SoVITS decode (codes -> waveform) CPU seconds per second of audio."""
    voice = runtime.registry.get("bench")
    pair, bundle = runtime.backend.prepare(voice)
    codes = torch.randint(0, 1024, (tokens,))
    phones = bundle.prompt_phones[:40]
    values = []
    for _ in range(reps):
        cpu = time.process_time()
        audio = pair.sovits.decode(codes, phones, bundle.ge, noise_scale=0.5)
        values.append((time.process_time() - cpu) / (audio.numel() / pair.sovits.sampling_rate))
    return statistics.median(values)


def _voice_models(runtime: Runtime) -> tuple[Path, Path]:
    voice = runtime.registry.get("bench")
    return voice.gpt, voice.sovits


def bench(data_dir: Path, threads: int, reps: int, tokens: int, precision: str) -> None:
    load_before = os.getloadavg()
    settings = RuntimeSettings(data_dir=data_dir, threads=threads, precision=precision, overlap=False,
                               use_fallback=False)
    runtimes = {"serial": Runtime(settings)}
    if threads >= 2:  # the overlap needs two threads; so do steps on every thread (before their count was timed)
        runtimes["overlap"] = Runtime(replace(settings, overlap=True))
        runtimes["all-thread steps"] = Runtime(replace(settings, decode_threads=threads))
    for runtime in runtimes.values():
        runtime.warm_up()
        runtime.start()
    modes = {  # label: (runtime, chunking)
        label: ("overlap" if overlap else "serial", chunking)
        for label, (chunking, overlap) in MODES.items()
        if overlap is False or threads >= 2
    }
    if threads >= 2:
        for chunking in ("fixed", "sentence"):
            modes[f"{chunking}, steps on all"] = ("all-thread steps", chunking)
    try:
        results: dict[str, list[Request]] = {label: [] for label in modes}
        for _ in range(reps):
            for label, (runtime, chunking) in modes.items():
                results[label].append(request(runtimes[runtime], chunking))
        serial = runtimes["serial"]
        torch.set_num_threads(threads)
        t2s = serial.backend.model_pair(*_voice_models(serial)).t2s
        step_threads = t2s.decode_threads or threads
        floor = gemv_floor_ms(t2s)
        per_token = decode_ms_per_token(serial, 1)
        sovits = sovits_seconds_per_second(serial, tokens, reps)
    finally:
        for runtime in runtimes.values():
            runtime.close()
    load_after = os.getloadavg()
    base = results[BASELINE]
    base_first = statistics.median(r.first_audio for r in base)
    base_cpu = statistics.median(r.cpu for r in base)
    print(f"\n== {threads} thread(s), {precision}, {reps} rounds, {tokens} tokens per sentence; load average "
          f"{load_before[0]:.2f} {load_before[1]:.2f} before, {load_after[0]:.2f} {load_after[1]:.2f} after")
    print(f"GPT decode {per_token:.1f} ms/token (serial whole-sentence run, steps on {step_threads} thread(s) as "
          f"timed before its first speech), GEMV floor {floor:.1f} ms -> {per_token / floor:.2f} x floor")
    print(f"SoVITS whole-sentence decode: {sovits:.3f} CPU s per s of audio")
    print(f"{'mode':18} {'first audio s (min-max)':>26} {'total s (min-max)':>26} {'CPU s':>8} "
          f"{'audio s':>8} {'first/base':>10} {'CPU/base':>9}")
    for label, runs in results.items():
        first = [r.first_audio for r in runs]
        cpu = statistics.median(r.cpu for r in runs)
        print(f"{label:18} {spread(first):>26} {spread([r.total for r in runs]):>26} {cpu:8.2f} "
              f"{statistics.median(r.audio for r in runs):8.2f} {statistics.median(first) / base_first:10.2f} "
              f"{cpu / base_cpu:9.2f}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process so far: {peak_mb:.0f} MB ({len(runtimes)} runtimes loaded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=60, help="semantic tokens per sentence (25 = 1 s)")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=("fp32", "bf16"),
                        help="the server's --precision; bf16 needs AVX512-BF16 or AMX (else it runs fp32)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    with tempfile.TemporaryDirectory(prefix="gsv-bench-cpu-") as tmp:
        data_dir = build_data_dir(Path(tmp), args.tokens)
        for precision in args.precision:
            for threads in args.threads:
                bench(data_dir, threads, args.reps, args.tokens, precision)


if __name__ == "__main__":
    main()
