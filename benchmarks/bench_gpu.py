"""GPU benchmark, one command on a CUDA machine: eager against captured (CUDA graphs) in one run.

    .venv/bin/python benchmarks/bench_gpu.py [--device cuda:0] [--precision fp16|bf16|fp32]
                                             [--tokens 300] [--reps 5] [--no-server]

Real v2 shapes with seeded random weights (GPT 24 x 512, SoVITS v2, HuBERT-base; nothing to
download). Three tables:
1. GPT decode: tokens/s at batch 1 and 4, ms per step, prefill ms, VRAM peak and the first
   run's seconds (captures, compilation), for the eager steps ("exact": attention over exactly
   the valid KV; "bucketed": the static-shape step run eagerly) and the captured ones ("graph":
   that step and the sampler replayed as one CUDA graph per KV bucket, its layers uncompiled;
   "graph+compile": the same with the layers through torch.compile, the default).
   The EOS row of the random GPT is zeroed so that every row runs the full `--tokens`. Last
   row: 4 separate requests through the continuous batcher (wall time includes their prefills;
   "ms/step" is then the total over the tokens of one row). Then one line: the prefill at
   lengths not run before against the same lengths again (a cost paid per new shape).
2. In process, the backend as the server builds it (default settings, so streaming as the
   server streams): time to first audio for a short and a two-sentence announcement, total
   time, audio seconds, RTF = total / audio, VRAM peak; eager ("exact") against captured, one
   request at a time, then (CUDA) the default: the GPT on the concurrent requests' batcher.
3. Unless `--no-server`: the same through the real server over TCP (`bench_server.py`'s client,
   `--device` as given, default settings: captured steps), then 4 streamed answers sent at
   once (concurrent requests share the GPT's steps).
Each sentence runs to the GPT's early stop (`--sentence-tokens`, 25 per second of audio), as in
bench_server.py. Targets (issue 13): >= 1000 tokens/s at batch 1 and first audio <= 80 ms for
the short announcement. Without a CUDA device it refuses with one line (exit status 2);
`--device cpu` runs the eager rows only, to check the script itself.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_t2s import V2_CONFIG, build_v2_model, random_inputs  # noqa: E402
from timing import median_wall_s  # noqa: E402
from wyoming_gsv.gsv.t2s import DecodeMode, SamplingParams, Text2Semantic  # noqa: E402
from wyoming_gsv.gsv.t2s_batch import ContinuousBatcher, DecodeRequest  # noqa: E402

CONCURRENT_CLIENTS = 4  # table 3: streamed answers sent at the same time
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TEXT_PHONES, PROMPT_TOKENS = 70, 100  # reference + target phones, a 4 s reference's tokens
ANNOUNCEMENTS = {
    "short (1 sentence)": ["The front door is open."],
    "two sentences": ["The front door is open.", "The garage door is closing now."],
}


def cuda_problem(device: str) -> str | None:
    """Why this machine cannot run the benchmark on `device`, or None."""
    if torch.device(device).type != "cuda":
        return None
    if not torch.cuda.is_available():
        return (f"no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda}, "
                f"torch.cuda.is_available() is False): run it on a machine with an NVIDIA GPU")
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return f"no CUDA device {device}: {torch.cuda.device_count()} visible"
    return None


# Row label -> (decode mode, layers through torch.compile).
STEP_VARIANTS: dict[str, tuple[DecodeMode, bool]] = {
    "exact": ("exact", False),
    "bucketed": ("bucketed", False),
    "graph": ("graph", False),
    "graph+compile": ("graph", True),
}


def variants_for(device: torch.device) -> list[str]:
    return list(STEP_VARIANTS) if device.type == "cuda" else ["exact", "bucketed"]


def use_variant(model: Text2Semantic, variant: str) -> None:
    model.decode_mode, model.compile_steps = STEP_VARIANTS[variant]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type != "cuda":
        return float("nan")
    return torch.cuda.max_memory_allocated(device) / 2**20


# ----------------------------------------------------------------------------- 1. GPT decode


@dataclass
class DecodeRow:
    batch: int
    mode: str
    tokens_per_s: float
    step_ms: float
    prefill_ms: float
    vram_mib: float
    first_run_s: float


def gpt_model(device: torch.device, dtype: torch.dtype) -> Text2Semantic:
    model = build_v2_model()
    model.ar_predict_layer.weight[V2_CONFIG.eos] = 0  # EOS never in the top-k: full-length rows
    return model.to(device=device, dtype=dtype)


def measure_decode(model: Text2Semantic, batch: int, variant: str, tokens: int,
                   reps: int) -> DecodeRow:
    """Median wall time of `generate_batch` for `tokens` tokens per row, minus the median time of
    the same call stopped after its first token (prefill + one sample)."""
    device = model.device
    phones, bert, prompt = random_inputs(TEXT_PHONES, PROMPT_TOKENS)
    cuts = [TEXT_PHONES - 3 * row for row in range(batch)]  # different lengths: left padding
    rows_phones, rows_bert = [phones[:n] for n in cuts], [bert[:, :n] for n in cuts]

    def run(max_tokens: int) -> Callable[[], object]:
        params = SamplingParams(top_k=15, max_tokens=max_tokens, early_stop=10_000)
        return lambda: model.generate_batch(
            rows_phones, rows_bert, prompt, params,
            generator=torch.Generator(device).manual_seed(0))

    use_variant(model, variant)
    reset_peak(device)
    started = time.perf_counter()
    run(tokens)()  # warm-up: allocates the buffers, captures (and compiles) every bucket's step
    synchronize(device)
    first_run = time.perf_counter() - started
    first = median_wall_s(run(1), reps, lambda: synchronize(device))
    full = median_wall_s(run(tokens), reps, lambda: synchronize(device))
    step = (full - first) / (tokens - 1)
    return DecodeRow(batch, variant, batch / step, 1000 * step, 1000 * first, peak_mib(device),
                     first_run)


def measure_batcher(model: Text2Semantic, requests: int, tokens: int, reps: int) -> DecodeRow:
    """`requests` sentences submitted at once to the continuous batcher (each its own request,
    seed and prefill), timed until the last one is done; tokens/s counts every row's tokens."""
    device = model.device
    phones, bert, prompt = random_inputs(TEXT_PHONES, PROMPT_TOKENS)
    params = SamplingParams(top_k=15, max_tokens=tokens, early_stop=10_000)
    batcher = ContinuousBatcher(model, max_rows=requests)

    def run() -> None:
        futures = [batcher.submit(DecodeRequest(
            phones[: TEXT_PHONES - 3 * row], bert[:, : TEXT_PHONES - 3 * row], prompt, params,
            generator=torch.Generator(device).manual_seed(row))) for row in range(requests)]
        batcher.run_until_idle()
        assert all(len(future.result()) == tokens - 1 for future in futures)

    reset_peak(device)
    started = time.perf_counter()
    run()  # warm-up: buffers and graphs
    first_run = time.perf_counter() - started
    total = median_wall_s(run, reps, lambda: synchronize(device))
    batcher.close()
    return DecodeRow(requests, f"{batcher.mode}, batcher", requests * tokens / total,
                     1000 * total / tokens, float("nan"), peak_mib(device), first_run)


def decode_table(device: torch.device, dtype: torch.dtype, tokens: int,
                 reps: int) -> list[DecodeRow]:
    model = gpt_model(device, dtype)
    rows = []
    for batch in (1, 4):
        for variant in variants_for(device):
            rows.append(measure_decode(model, batch, variant, tokens, reps))
    use_variant(model, variants_for(device)[-1])
    model.decode_mode = None  # the batcher: its own default (graph on CUDA), compiled layers
    rows.append(measure_batcher(model, 4, tokens, reps))
    if model._compile_failure:
        print(f"torch.compile failed, the compiled rows ran uncompiled: {model._compile_failure}")
    return rows


def prefill_new_lengths(device: torch.device, dtype: torch.dtype, lengths: int = 5) -> str:
    """The prefill at lengths not run before, first call against the same length again: what
    a sentence of a new length pays once (e.g. attention plans built per shape)."""
    model = gpt_model(device, dtype)
    first, again = [], []
    for extra in range(lengths):
        phones, bert, prompt = random_inputs(TEXT_PHONES + 7 * extra + 1, PROMPT_TOKENS)
        cache = model.setup_caches(1, TEXT_PHONES + 7 * extra + 1 + PROMPT_TOKENS + 1)
        for times in (first, again):
            synchronize(device)
            started = time.perf_counter()
            with torch.inference_mode():
                model.prefill([phones], [bert], prompt, cache)
            synchronize(device)
            times.append(1000 * (time.perf_counter() - started))
        model.release_caches(cache)
    return (f"prefill at {lengths} new lengths: first call {statistics.median(first):.1f} ms, "
            f"the same length again {statistics.median(again):.1f} ms (medians)")


def print_decode(rows: list[DecodeRow]) -> None:
    header = (f"{'batch':>5} {'mode':<18} {'tokens/s':>9} {'ms/step':>8} {'prefill ms':>10} "
              f"{'VRAM MiB':>9} {'first run s':>11} {'vs exact':>8}")
    print(header)
    print("-" * len(header))
    exact = {row.batch: row.tokens_per_s for row in rows if row.mode == "exact"}
    for row in rows:
        ratio = row.tokens_per_s / exact.get(row.batch, float("nan"))
        print(f"{row.batch:>5} {row.mode:<18} {row.tokens_per_s:9.1f} {row.step_ms:8.3f} "
              f"{row.prefill_ms:10.2f} {row.vram_mib:9.1f} {row.first_run_s:11.2f} {ratio:8.2f}")


# ----------------------------------------------------------------------------- 2. end to end


@dataclass
class SpeechRow:
    text: str
    mode: str
    ttfa_ms: float
    total_s: float
    audio_s: float
    vram_mib: float

    @property
    def rtf(self) -> float:
        return self.total_s / self.audio_s


def speak_once(speaker, sentences: list[str]) -> tuple[float, float, float]:
    """(first audio s, total s, audio s) of the sentences spoken one after another, as the
    server's engine does; every piece leaves the backend as host int16 samples."""
    pieces: list[tuple[float, int, int]] = []
    start = time.perf_counter()
    for sentence in sentences:
        pending = speaker.speak(sentence, lambda: False,
                                lambda speech: pieces.append((time.perf_counter(),
                                                              speech.samples.size, speech.rate)))
        if pending is not None:  # the CPU's vocoder worker still finishing the sentence
            pending.wait()
    total = time.perf_counter() - start
    first = next(stamp for stamp, size, _rate in pieces if size) - start
    return first, total, sum(size / rate for _stamp, size, rate in pieces)


def speech_table(data_dir: Path, device: str, precision: str, reps: int) -> list[SpeechRow]:
    """Every step variant with one request at a time (concurrent_requests=1: the GPT runs in
    the engine's thread, one sentence after another), then on CUDA the server's default
    (concurrent requests: the GPT steps on the batcher's thread)."""
    target = torch.device(device)
    rows = []
    runtime, pair, speaker = backend_speaker(data_dir, device, precision, concurrent_requests=1)
    for variant in variants_for(target):
        use_variant(pair.t2s, variant)
        rows += speech_rows(speaker, variant, reps, target)
    runtime.close()
    if target.type == "cuda":
        runtime, pair, speaker = backend_speaker(data_dir, device, precision)
        rows += speech_rows(speaker, "batcher", reps, target)
        runtime.close()
    return rows


def backend_speaker(data_dir: Path, device: str, precision: str, **settings):
    """A runtime as the server builds it, its benchmark voice's models and a speaker."""
    from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings

    runtime = Runtime(RuntimeSettings(data_dir=data_dir, device=device, precision=precision,
                                      use_fallback=False, **settings))
    voice = runtime.registry.get("bench")
    assert voice is not None, "the benchmark voice did not load"
    pair, _bundle = runtime.backend.prepare(voice)
    return runtime, pair, runtime.backend.speaker(voice, voice.params, voice.language)


def speech_rows(speaker, label: str, reps: int, device: torch.device) -> list[SpeechRow]:
    rows = []
    for name, sentences in ANNOUNCEMENTS.items():
        speak_once(speaker, sentences)  # warm-up (graph capture, compilation, cuDNN choices)
        reset_peak(device)
        runs = [speak_once(speaker, sentences) for _ in range(reps)]
        first, total, audio = (statistics.median(run[i] for run in runs) for i in range(3))
        rows.append(SpeechRow(name, label, 1000 * first, total, audio, peak_mib(device)))
    return rows


def print_speech(rows: list[SpeechRow]) -> None:
    header = (f"{'text':<20} {'GPT steps':<13} {'first audio ms':>14} {'total s':>8} "
              f"{'audio s':>8} {'RTF':>6} {'VRAM MiB':>9} {'TTFA vs exact':>13}")
    print(header)
    print("-" * len(header))
    exact = {row.text: row.ttfa_ms for row in rows if row.mode == "exact"}
    for row in rows:
        print(f"{row.text:<20} {row.mode:<13} {row.ttfa_ms:14.1f} {row.total_s:8.3f} "
              f"{row.audio_s:8.2f} {row.rtf:6.3f} {row.vram_mib:9.1f} "
              f"{row.ttfa_ms / exact.get(row.text, float('nan')):13.2f}")


async def measure_with_concurrency(port: int, reps: int) -> list:
    """bench_server's sequential requests, then CONCURRENT_CLIENTS streamed answers at once
    (first audio: the last client's; RTF: wall time over all their audio), median of `reps`."""
    from bench_server import TEXTS, Run, concurrently, measure

    rows = await measure(port, reps)
    name, text = list(TEXTS.items())[-1]
    await concurrently(port, text, CONCURRENT_CLIENTS)  # warm-up: the batched steps' graphs
    runs = [await concurrently(port, text, CONCURRENT_CLIENTS) for _ in range(reps)]
    median = Run(*(statistics.median(getattr(run, field) for run in runs)
                   for field in ("ttfa", "total", "audio_seconds")))
    return rows + [(f"{CONCURRENT_CLIENTS} x {name}", "streaming, at once", median)]


# ----------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu to check the script")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default=None,
                        help="default: fp16 on CUDA (the server's default), fp32 on the CPU")
    parser.add_argument("--tokens", type=int, default=300, help="GPT tokens per row in table 1")
    parser.add_argument("--sentence-tokens", type=int, default=60,
                        help="semantic tokens per sentence in tables 2 and 3 (25 Hz)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--no-server", action="store_true", help="skip table 3 (TCP server)")
    args = parser.parse_args()
    problem = cuda_problem(args.device)
    if problem:
        print(f"bench_gpu: {problem}", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    precision = args.precision or ("fp16" if device.type == "cuda" else "fp32")
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}, {precision}, {args.threads} CPU threads, "
          f"median of {args.reps}")

    print(f"\n1. GPT decode, {args.tokens} tokens per row, prefix {TEXT_PHONES} phones + "
          f"{PROMPT_TOKENS} prompt tokens")
    print_decode(decode_table(device, PRECISIONS[precision], args.tokens, args.reps))
    print(prefill_new_lengths(device, PRECISIONS[precision]))

    from bench_server import build_data_dir, run_server

    with tempfile.TemporaryDirectory(prefix="gsv-bench-gpu-") as tmp:
        data_dir = build_data_dir(Path(tmp), args.sentence_tokens)
        print(f"\n2. Backend in process, {args.sentence_tokens} tokens per sentence, default "
              "settings")
        print_speech(speech_table(data_dir, args.device, precision, args.reps))
        if not args.no_server:
            print("\n3. Real server over TCP (default settings)")
            server_args = argparse.Namespace(threads=args.threads, device=args.device,
                                             reps=args.reps)
            for text, mode, run in run_server(data_dir, server_args, ["--precision", precision],
                                              measure_with_concurrency):
                print(f"{text:<27} {mode:<22} first audio {1000 * run.ttfa:8.1f} ms  total "
                      f"{run.total:6.3f} s  audio {run.audio_seconds:5.2f} s  RTF "
                      f"{run.total / run.audio_seconds:6.3f}")
    print(f"\nload average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
