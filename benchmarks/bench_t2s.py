"""t2s (GPT) timings on the REAL v2 architecture with seeded random weights (no files needed).

Measured per thread count: prefill at ~100 and ~300 positions; decode ms/token through
`Text2Semantic.generate` (model step + sampler + bookkeeping) and the bare model step; and the
"GEMV floor" of one step: only its weight matmuls (24 x in_proj, out_proj, linear1, linear2, plus
the predict layer) on a [1, 512] vector, timed in the same run, with torch's F.linear (MKL) and
with the model's own `GemvLinear` (numpy's OpenBLAS, one thread); and `generate` with the model's
linears run by F.linear, as before GemvLinear (the baseline of "ratio" there). Also the opt-in int8-weight
mode (`Text2Semantic.quantize_int8`, not bit-exact) against the same fp32 floor, and at 2+
threads both with their decode steps on one thread (`--decode-threads 1`). Random weights
cost exactly what real weights cost. `value` is the median wall time, `cpu` the median process
CPU time; `ratio` and `cpu r.` compare them with the baseline measured in interleaved rounds. On
a busy shared machine the CPU ratio at 1 thread is the steadier figure.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from timing import medians_ms, now, timed  # noqa: E402
from wyoming_gsv.gsv.t2s import (  # noqa: E402
    EncoderLayer,
    GemvLinear,
    KVCache,
    SamplingParams,
    T2SConfig,
    Text2Semantic,
)

V2_CONFIG = T2SConfig(embedding_dim=512, num_heads=16, num_layers=24, phoneme_vocab_size=732,
                      vocab_size=1025, eos=1024, early_stop_num=50 * 54)
PREFILL_SHAPES = ((60, 40), (150, 150))  # (text phones, prompt tokens): ~100 and ~300 positions
DECODE_STEPS = 50


@dataclass
class Row:
    """One line of the benchmark table; ratios are value / baseline (wall and CPU)."""

    part: str
    measure: str
    threads: int
    value: float  # median wall time (or the part's own unit)
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    cpu: float | None = None  # median process CPU time, same unit: robust to a busy machine
    baseline_cpu: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.baseline is None else self.value / self.baseline

    @property
    def cpu_ratio(self) -> float | None:
        if self.cpu is None or self.baseline_cpu is None:
            return None
        return self.cpu / self.baseline_cpu


def build_v2_model(seed: int = 0) -> Text2Semantic:
    torch.manual_seed(seed)
    return Text2Semantic(V2_CONFIG).eval().requires_grad_(False)


def random_inputs(text_len: int, prompt_len: int, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    phones = torch.randint(0, V2_CONFIG.phoneme_vocab_size, (text_len,), generator=gen)
    bert = torch.randn(1024, text_len, generator=gen)
    prompt = torch.randint(0, V2_CONFIG.eos, (prompt_len,), generator=gen)
    return phones, bert, prompt


def prefill_ms(model: Text2Semantic, text_len: int, prompt_len: int,
               repeats: int) -> tuple[float, float]:
    phones, bert, prompt = random_inputs(text_len, prompt_len)
    prefix = text_len + prompt_len
    mask = torch.ones(prefix, prefix, dtype=torch.bool)
    mask[:text_len, text_len:] = False
    mask[text_len:, text_len:] = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
    cache = KVCache.allocate(V2_CONFIG, 1, prefix + 1, torch.device("cpu"), torch.float32)

    @torch.inference_mode()
    def run() -> None:
        x = torch.cat([model.embed_text(phones, bert), model.embed_audio(prompt)])[None]
        model.forward_cached(x, cache, 0, mask[None, None])

    run()  # warm-up
    return medians_ms([timed(run) for _ in range(repeats)])


def _generate_gaps(model: Text2Semantic, text_len: int, prompt_len: int, tokens: int,
                   seed: int, decode_threads: int | None = None) -> list[tuple[float, float]]:
    """(wall, CPU) seconds between consecutive tokens of a real `generate` call, its decode steps
    on `decode_threads` threads (None: all of this thread's)."""
    phones, bert, prompt = random_inputs(text_len, prompt_len)
    stamps: list[tuple[float, float]] = []
    params = SamplingParams(max_tokens=tokens + 1, early_stop=10_000)
    saved, model.decode_threads = model.decode_threads, decode_threads
    try:
        model.generate(phones, bert, prompt, params, generator=torch.Generator().manual_seed(seed),
                       on_token=lambda _token: stamps.append(now()))
    finally:
        model.decode_threads = saved
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(stamps, stamps[1:])]


def _model_step(model: Text2Semantic, kv_len: int) -> Callable[[], None]:
    """The bare model step (embedding + all layers + logits) at a KV length of `kv_len`."""
    cache = KVCache.allocate(V2_CONFIG, 1, kv_len + 1, torch.device("cpu"), torch.float32)
    cache.k.normal_()
    cache.v.normal_()
    token = torch.tensor([7])
    pe = model.ar_audio_position.table(kv_len + 1, torch.device("cpu"), torch.float32)

    def step() -> None:
        x = model.ar_audio_embedding(token)[:, None] + pe[kv_len]
        model.forward_cached(x, cache, kv_len, None)

    return step


def _gemv_floor(model: Text2Semantic, own_linears: bool = False) -> Callable[[], None]:
    """Only the weight matmuls of one decode step, on a [1, 512] vector: by torch's F.linear, or
    (`own_linears`) by the model's linear modules themselves (GemvLinear: numpy's BLAS)."""
    head = model.ar_predict_layer
    x = torch.randn(1, V2_CONFIG.embedding_dim, dtype=head.weight.dtype)
    hidden = torch.randn(1, 4 * V2_CONFIG.embedding_dim, dtype=head.weight.dtype)
    products = [(x, head)]
    for layer in model.h.layers:
        attn = layer.self_attn
        products += [(x, attn.in_proj), (x, attn.out_proj), (x, layer.linear1), (hidden, layer.linear2)]

    def matmuls() -> None:
        for rows, linear in products:
            if own_linears:
                linear(rows)
            else:
                F.linear(rows, linear.weight, linear.bias)

    return matmuls


def with_torch_linears(model: Text2Semantic) -> Text2Semantic:
    """The model with its decode-step matmuls run by F.linear (torch's BLAS), as before
    GemvLinear: the same module objects, their class changed back to nn.Linear."""
    for module in model.modules():
        if type(module) is GemvLinear:
            module.__class__ = torch.nn.Linear
    for layer in model.h.layers:
        assert isinstance(layer, EncoderLayer)
        layer.forget_derived()
    return model


def _timed_in(fn: Callable[[], None], context: Callable[[], object]) -> tuple[float, float]:
    with context():
        return timed(fn)


def bench_t2s(threads: int, model: Text2Semantic | None = None,
              int8_model: Text2Semantic | None = None, rounds: int = 5) -> list[Row]:
    """Prefill rows, then decode rows measured in interleaved rounds (generate, model step,
    model step under no_grad, GEMV floor, and the opt-in int8 mode) so that all of them see
    the same machine load."""
    torch.set_num_threads(threads)
    model = model or build_v2_model()
    int8_model = int8_model or build_v2_model().quantize_int8()
    torch_model = with_torch_linears(build_v2_model())
    rows = []
    for text_len, prompt_len in PREFILL_SHAPES:
        wall, cpu = prefill_ms(model, text_len, prompt_len, repeats=3)
        rows.append(Row("t2s", f"prefill {text_len + prompt_len} positions", threads, wall, "ms",
                        cpu=cpu))
    text_len, prompt_len = PREFILL_SHAPES[-1]
    kv_len = text_len + prompt_len
    wall, cpu = prefill_ms(int8_model, text_len, prompt_len, repeats=3)
    rows.append(Row("t2s", f"prefill {kv_len} positions, int8 weights", threads, wall, "ms",
                    "fp32 prefill", rows[-1].value, cpu, rows[-1].cpu))

    # The torch floor on the torch-linears model: its weights keep nn.Linear's [out, in] layout.
    step, floor = _model_step(model, kv_len), _gemv_floor(torch_model)
    own_floor = _gemv_floor(model, own_linears=True)
    int8_step = _model_step(int8_model, kv_len)
    per_round = DECODE_STEPS // rounds
    samples: dict[str, list[tuple[float, float]]] = {
        name: [] for name in ("generate", "torch generate", "step", "no_grad", "floor", "own floor",
                              "int8", "int8 generate", "generate 1", "int8 generate 1")}
    for _ in range(2):  # warm-up
        for fn in (step, floor, own_floor, int8_step):
            _timed_in(fn, torch.inference_mode)
    for round_index in range(rounds):
        samples["generate"] += _generate_gaps(model, text_len, prompt_len, per_round, round_index)
        samples["torch generate"] += _generate_gaps(torch_model, text_len, prompt_len, per_round,
                                                    round_index)
        samples["int8 generate"] += _generate_gaps(int8_model, text_len, prompt_len, per_round,
                                                   round_index)
        if threads > 1:  # decode steps on one thread, prefill on all (what --decode-threads 1 does)
            samples["generate 1"] += _generate_gaps(model, text_len, prompt_len, per_round,
                                                    round_index, decode_threads=1)
            samples["int8 generate 1"] += _generate_gaps(int8_model, text_len, prompt_len,
                                                         per_round, round_index, decode_threads=1)
        for _ in range(per_round):
            samples["step"].append(_timed_in(step, torch.inference_mode))
            samples["no_grad"].append(_timed_in(step, torch.no_grad))
            samples["floor"].append(_timed_in(floor, torch.inference_mode))
            samples["own floor"].append(_timed_in(own_floor, torch.inference_mode))
            samples["int8"].append(_timed_in(int8_step, torch.inference_mode))
    ms = {name: medians_ms(values) for name, values in samples.items() if values}

    def decode_row(measure: str, name: str, baseline: str) -> Row:
        label = {"floor": "GEMV floor (torch)", "own floor": "GEMV floor (GemvLinear)",
                 "step": "inference_mode step", "torch generate": "generate, torch linears"}[baseline]
        return Row("t2s", measure, threads, ms[name][0], "ms/token", label, ms[baseline][0],
                   ms[name][1], ms[baseline][1])

    rows += [
        Row("t2s", "GEMV floor of one step (fp32, torch F.linear)", threads, ms["floor"][0], "ms",
            cpu=ms["floor"][1]),
        decode_row("GEMV floor of one step (fp32, GemvLinear)", "own floor", "floor"),
        decode_row(f"model step, KV {kv_len}", "step", "own floor"),
        decode_row(f"model step, KV {kv_len}, no_grad", "no_grad", "step"),
        decode_row(f"decode via generate, KV {kv_len}+", "generate", "own floor"),
        decode_row(f"decode via generate, KV {kv_len}+, torch linears", "torch generate", "floor"),
        decode_row(f"decode via generate, KV {kv_len}+ (vs torch linears)", "generate", "torch generate"),
        decode_row(f"model step, KV {kv_len}, int8 weights", "int8", "floor"),
        decode_row("decode via generate, int8 weights", "int8 generate", "floor"),
    ]
    if threads > 1:
        rows += [
            decode_row("decode via generate, steps on 1 thread", "generate 1", "own floor"),
            decode_row("decode via generate, int8, steps on 1 thread", "int8 generate 1", "floor"),
        ]
    return rows


def print_table(rows: list[Row]) -> None:
    header = (f"{'part':<8} {'measure':<50} {'thr':>3} {'value':>10} {'cpu':>10} {'unit':<9} "
              f"{'ratio':>6} {'cpu r.':>6}  baseline")
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:6.2f}"
        cpu_ratio = "" if row.cpu_ratio is None else f"{row.cpu_ratio:6.2f}"
        cpu = "" if row.cpu is None else f"{row.cpu:10.2f}"
        print(f"{row.part:<8} {row.measure:<50} {row.threads:>3} {row.value:>10.2f} {cpu:>10} "
              f"{row.unit:<9} {ratio:>6} {cpu_ratio:>6}  {row.baseline_name}")


if __name__ == "__main__":
    print(f"torch {torch.__version__}")
    fp32, int8 = build_v2_model(), build_v2_model().quantize_int8()
    print_table([row for threads in (1, 2) for row in bench_t2s(threads, fp32, int8)])
