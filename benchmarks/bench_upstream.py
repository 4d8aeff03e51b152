"""Side by side with the official GPT-SoVITS on the CPU: vocoder, GPT and end to end, same files.

    .venv/bin/python benchmarks/bench_upstream.py --upstream /work/upstream-gsv \\
        --upstream-deps /work/upstream-deps [--threads 2 1] [--reps 3] [--tokens 50]

The official code is read and run from a checkout outside this repository, never imported by the
product. Preparing it (the commit the e2e-stream-v2 fixtures were made with; two files of that
tree are absent from the public mirror here and are not needed for English):

    mkdir -p /work/upstream-gsv && cd /work/upstream-gsv
    G=/path/to/RVC-Boss+GPT-SoVITS/repo   # bare git dir of RVC-Boss/GPT-SoVITS
    git --git-dir=$G ls-tree -r 48b1a0169a28582a8984402f82cf438d3bfa6aca | while read m t sha p; do
      mkdir -p "$(dirname "$p")"; git --git-dir=$G cat-file blob $sha > "$p" || rm -f "$p"; done
    # what upstream imports and this venv lacks, in a folder of its own (this venv is never changed):
    .venv/bin/pip install --no-deps --target /work/upstream-deps x_transformers einops einx \\
        torchmetrics lightning-utilities pytorch-lightning librosa audioread lazy_loader scipy \\
        scikit-learn threadpoolctl numba llvmlite decorator pooch msgpack ffmpeg-python future peft \\
        accelerate torchaudio==2.9.1 cn2an proces jieba_fast opencc psutil matplotlib contourpy \\
        cycler fonttools kiwisolver pyparsing python-dateutil six pillow platformdirs loguru \\
        frozendict torch_einops_utils
    rm /work/upstream-deps/torchaudio/lib/_torchaudio.so   # built for another torch; pure-Python parts suffice

The deps folder goes at the END of sys.path (our venv's packages win) and the checkout at the
front, only with `--upstream`. English needs the nltk data (NLTK_DATA, e.g. /work/shared/nltk_data).

Files: the real v2 architecture with seeded random weights in the official formats
(bench_server.build_data_dir: GPT s1 ckpt, SoVITS s2 pth with weight_g/weight_v and the full hps,
HuBERT folder), the GPT's early stop at `--tokens`, so both implementations generate the same
number of tokens per sentence (random weights never pick EOS). Upstream loads them through
`TTS` (its own loaders, `custom` config); we load them through `Runtime`, as bench_cpu does.
Text: bench_cpu's two-sentence announcement; reference: the voice's ref.wav + ref.txt; sampling:
api_v2 defaults on both sides (top_k 15, top_p 1, temperature 1, repetition penalty 1.35, SoVITS
noise 0.5); the same torch thread count and OMP_WAIT_POLICY=PASSIVE (set by `import wyoming_gsv`
before torch loads; upstream runs in this process). Rows, each interleaved ours/upstream per round:
1. vocoder, CPU s per s of audio, the same codes/phones/reference spectrogram: upstream
   `SynthesizerTrn.decode` as TTS.run calls it (the ge from the reference spectrogram inside every
   call, weight norm recomputed, `no_grad`); ours doing the same work (ge from the same
   spectrogram + `decode`); ours as the product calls it (ge cached per voice); the HiFi-GAN
   `dec` alone on both sides (same latent), ours also with every conv direct (the baseline of the
   block-DFT convs, `vits_modules.LongConv1d`), and upstream's reference encoder alone. These calls
   are short, so they get their own round count (`--vocoder-reps`, default 3 x `--reps`): this VM's
   timings swing 10-20 % between rounds.
2. GPT on the first sentence's phones + the prompt codes (the same tensors for both): first token
   (from the call to the first token's sampling: embeddings, masks, prefill, sampling; upstream's
   first `decode_next_token` call marks it) and decode ms/token = (total - first) / (steps - 1);
   upstream `infer_panel_naive` (batch 1; TTS.run's path when parallel_infer is False, and in the
   streaming modes) and `infer_panel_batch_infer` (api_v2's default parallel_infer True) vs ours.
3. End to end (time to first audio = from calling run / opening the session to the first chunk with
   a non-zero sample, text front end included; total; process CPU): upstream `TTS.run` with the
   inputs api_v2's tts_handle builds for streaming_mode 0 (non-streaming, the default), 1 (=True:
   one chunk per sentence), 2 (split near the mute token) and 3 (fixed-length chunks), with the
   request defaults min_chunk_length 16 / overlap_length 2; ours default (`chunking fixed` = mode 3,
   every `min_chunk_tokens` of VoiceParams; at 2+ threads GPT and SoVITS overlap, our default) and whole sentences (`chunking
   sentence`, one step after the other on all threads); for information,
   ours at the other chunk lengths of `--chunk-sweep` (16 = upstream's default; each with its
   first audio and CPU against upstream, which is how the default chunk length was chosen).

What is not the same work (also printed): upstream recomputes the reference encoder (ge) in every
decode / decode_streaming call, we compute it once per voice (row 1 shows its cost); upstream
loads no BERT here (its TTS would load chinese-roberta at start; English never runs it: the load
is replaced by None); transformers >= 5 loads the fp16 HuBERT as fp16, so upstream's HuBERT is cast
to float32 as transformers 4 would load it (per voice, not timed); `torchaudio.load` (needs
torchcodec) is replaced by soundfile for the reference clip (per voice, not timed); upstream prints
progress (its own cost, output discarded); upstream's mode 2 may decode a few tokens twice.
Every TTS.run ends with `empty_cache()`, i.e. `gc.collect()` (about 0.5 s CPU here, counted in
its total and CPU; api_v2's non-streaming handler has sent the audio by then: its "first audio").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_cpu import TEXT, Request, request as our_request, spread  # noqa: E402
from bench_server import build_data_dir  # noqa: E402
from wyoming_gsv.gsv.t2s import SamplingParams  # noqa: E402
from wyoming_gsv.gsv.vits_modules import LongConv1d  # noqa: E402
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings  # noqa: E402
from wyoming_gsv.voices.params import VoiceParams  # noqa: E402

VOICE = "bench"
# api_v2's TTS_Request defaults; streaming_mode is mapped as tts_handle maps it.
API_V2_REQUEST = dict(
    text_lang="en", prompt_lang="en", top_k=15, top_p=1, temperature=1, text_split_method="cut5",
    batch_size=1, batch_threshold=0.75, split_bucket=True, speed_factor=1.0, fragment_interval=0.3,
    seed=-1, parallel_infer=True, repetition_penalty=1.35, sample_steps=32, super_sampling=False,
    overlap_length=2, min_chunk_length=16,
)
STREAMING_MODES = {  # api_v2 streaming_mode -> (streaming_mode, return_fragment, fixed_length_chunk)
    0: (False, False, False), 1: (False, True, False), 2: (True, False, False), 3: (True, False, True),
}
SAMPLING = SamplingParams(top_k=15, top_p=1.0, temperature=1.0, repetition_penalty=1.35)
DEFAULT_CHUNK = VoiceParams().min_chunk_tokens
DEFAULT_LABEL = f"ours default (fixed, {DEFAULT_CHUNK} tokens)"


def sweep_label(size: int) -> str:
    return f"ours fixed, {size}-token chunks"


@dataclass
class Sample:
    wall: float
    cpu: float


def timed(fn: Callable[[], object]) -> tuple[Sample, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Sample(time.perf_counter() - wall, time.process_time() - cpu), result


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Upstream prints every step (tqdm included); the output is discarded on both sides alike."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ----------------------------------------------------------------------------- upstream
def load_upstream(checkout: Path, deps: Path, data_dir: Path):
    """The official `TTS` on the benchmark files, through its own loaders."""
    sys.path[:0] = [str(checkout / "GPT_SoVITS"), str(checkout)]
    sys.path.append(str(deps))
    os.chdir(checkout)  # upstream reads and writes paths relative to its root (configs/, i18n)
    import torchaudio

    def load_with_soundfile(path: str) -> tuple[torch.Tensor, int]:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(data.T.copy()), rate

    torchaudio.load = load_with_soundfile  # torchaudio >= 2.9 wants torchcodec for this
    from TTS_infer_pack.TTS import TTS

    class EnglishTTS(TTS):
        def init_bert_weights(self, base_path: str) -> None:  # English never runs the Chinese BERT
            self.bert_model = self.bert_tokenizer = None

    models = data_dir / "models"
    config = {"custom": {
        "device": "cpu", "is_half": False, "version": "v2",
        "t2s_weights_path": str(models / "gpt.ckpt"), "vits_weights_path": str(models / "sovits.pth"),
        "cnhuhbert_base_path": str(models / "chinese-hubert-base"),
        "bert_base_path": str(models / "chinese-roberta-wwm-ext-large"),
    }}
    with quiet():
        tts = EnglishTTS(config)
    tts.cnhuhbert_model.float()  # transformers 4 (upstream's pin) loads it as float32
    return tts


def upstream_inputs(data_dir: Path, streaming_mode: int) -> dict:
    voice = data_dir / "voices" / VOICE
    streaming, fragment, fixed = STREAMING_MODES[streaming_mode]
    return dict(API_V2_REQUEST, text=TEXT, ref_audio_path=str(voice / "ref.wav"),
                prompt_text=(voice / "ref.txt").read_text(), streaming_mode=streaming,
                return_fragment=fragment, fixed_length_chunk=fixed)


def upstream_request(tts, inputs: dict) -> Request:
    wall, cpu = time.perf_counter(), time.process_time()
    first, samples, rate = None, 0, 1
    with quiet():
        for rate, chunk in tts.run(dict(inputs)):
            if first is None and chunk.any():
                first = time.perf_counter() - wall
            samples += chunk.size
    return Request(first or 0.0, time.perf_counter() - wall, time.process_time() - cpu, samples / rate)


@dataclass
class SharedInputs:
    """The first sentence as upstream's front end and to_batch give it, and the voice's reference."""

    batch: dict  # to_batch's item: all_phones, all_phones_len, all_bert_features, max_len, phones
    prompt: torch.Tensor  # prompt semantic codes [Tp]
    spec: torch.Tensor  # reference spectrogram [1, 1025, frames]


def shared_inputs(tts, data_dir: Path) -> SharedInputs:
    with quiet():
        upstream_request(tts, dict(upstream_inputs(data_dir, 0)))  # fills the prompt cache
        data = tts.text_preprocessor.preprocess(TEXT, "en", "cut5", tts.configs.version)
        batches, _ = tts.to_batch(data[:1], prompt_data=tts.prompt_cache, batch_size=1, threshold=0.75,
                                  split_bucket=False, device=tts.configs.device, precision=tts.precision)
    cache = tts.prompt_cache
    return SharedInputs(batches[0], cache["prompt_semantic"], cache["refer_spec"][0][0].float())


# ----------------------------------------------------------------------------- rows
@contextlib.contextmanager
def direct_convs(model: torch.nn.Module) -> Iterator[None]:
    """Within: every LongConv1d of `model` runs the direct conv (the block-DFT path's baseline)."""
    convs = [m for m in model.modules() if isinstance(m, LongConv1d)]
    for conv in convs:
        conv.max_work_ratio = 0.0
    try:
        yield
    finally:
        for conv in convs:
            del conv.max_work_ratio  # back to the class default


def vocoder_rows(
    tts, runtime: Runtime, inputs: SharedInputs, tokens: int, reps: int, bf16: Runtime | None = None
) -> dict[str, list[float]]:
    """CPU seconds per second of audio of each variant, interleaved."""
    pair, bundle = runtime.backend.prepare(runtime.registry.get(VOICE))
    ours, theirs = pair.sovits, tts.vits_model
    codes = torch.randint(0, 1024, (tokens,), generator=torch.Generator().manual_seed(1))
    phones = inputs.batch["phones"][0]
    spec = inputs.spec
    audio_s = tokens * ours.samples_per_code / ours.sampling_rate
    frames = 2 * tokens
    z = torch.randn(1, ours.config.inter_channels, frames, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ge = theirs.ref_enc(spec[:, :704], torch.ones(1, 1, spec.shape[-1]))

    def upstream_decode() -> None:
        with torch.no_grad():  # TTS.run: @torch.no_grad, decode(codes [1,1,T], phones [1,P], [spec])
            theirs.decode(codes[None, None], phones[None], [spec], speed=1.0, sv_emb=None)

    def upstream_ref_enc() -> None:
        with torch.no_grad():
            theirs.ref_enc(spec[:, :704], torch.ones(1, 1, spec.shape[-1]))

    def upstream_dec() -> None:
        with torch.no_grad():
            theirs.dec(z, g=ge)

    def ours_direct() -> None:
        with direct_convs(ours):
            ours.vocode(z, ge)

    variants: dict[str, Callable[[], object]] = {
        "upstream SynthesizerTrn.decode": upstream_decode,
        "ours: ge from the spectrogram + decode": lambda: ours.decode(codes, phones, ours.global_embedding([spec])),
        "ours: decode as the product calls it": lambda: ours.decode(codes, phones, bundle.ge, speed=1.0, noise_scale=0.5),
        "upstream dec (HiFi-GAN) alone": upstream_dec,
        "ours vocode (HiFi-GAN) alone": lambda: ours.vocode(z, ge),
        "ours vocode, every conv direct": ours_direct,
        "upstream ref_enc (ge) alone": upstream_ref_enc,
    }
    if bf16 is not None:  # not the default: --precision bf16 (not bit-exact with upstream)
        half, half_bundle = bf16.backend.prepare(bf16.registry.get(VOICE))
        variants["ours bf16: decode as the product calls it"] = lambda: half.sovits.decode(
            codes, phones, half_bundle.ge, speed=1.0, noise_scale=0.5
        )
    results: dict[str, list[float]] = {label: [] for label in variants}
    for fn in variants.values():
        fn()  # warm-up
    for _ in range(reps):
        for label, fn in variants.items():
            results[label].append(timed(fn)[0].cpu / audio_s)
    return results


@dataclass
class GptRun:
    first: Sample  # from the call to the first token's sampling (embeddings, masks, prefill, sample)
    total: Sample
    steps: int

    @property
    def decode_ms(self) -> float:  # CPU ms per token after the first
        return 1000 * (self.total.cpu - self.first.cpu) / max(1, self.steps - 1)


def gpt_run(run: Callable[[Callable[[], None]], int]) -> GptRun:
    """Times `run(mark)` (returns the steps taken), which calls `mark` once its first token is sampled."""
    wall, cpu = time.perf_counter(), time.process_time()
    first: list[Sample] = []

    def mark() -> None:
        if not first:
            first.append(Sample(time.perf_counter() - wall, time.process_time() - cpu))

    steps = run(mark)
    return GptRun(first[0], Sample(time.perf_counter() - wall, time.process_time() - cpu), steps)


def gpt_rows(tts, runtime: Runtime, inputs: SharedInputs, reps: int) -> dict[str, list[GptRun]]:
    pair, _ = runtime.backend.prepare(runtime.registry.get(VOICE))
    model = tts.t2s_model.model
    transformer = model.t2s_transformer
    item = inputs.batch
    phones, bert, lens = item["all_phones"], item["all_bert_features"], item["all_phones_len"]
    prompt = inputs.prompt[None]
    early_stop = tts.configs.hz * tts.configs.max_sec
    kwargs = dict(top_k=15, top_p=1, temperature=1, early_stop_num=early_stop, repetition_penalty=1.35)

    @contextlib.contextmanager
    def marking_first_step(mark: Callable[[], None]) -> Iterator[None]:
        """Upstream's first `decode_next_token` call comes right after its first token's sampling."""
        original = transformer.decode_next_token

        def step(*args, **kw):
            mark()
            return original(*args, **kw)

        transformer.decode_next_token = step
        try:
            with torch.no_grad(), quiet():  # TTS.run is @torch.no_grad
                yield
        finally:
            del transformer.decode_next_token

    def naive(mark: Callable[[], None]) -> int:
        with marking_first_step(mark):
            _, last_step = next(model.infer_panel_naive(phones[0][None], lens[0], prompt, bert[0][None], **kwargs))
        return last_step + 1

    def batch_infer(mark: Callable[[], None]) -> int:
        with marking_first_step(mark):
            _, last_steps = model.infer_panel_batch_infer(phones, lens, prompt, bert, max_len=item["max_len"], **kwargs)
        return last_steps[0] + 1

    def ours(mark: Callable[[], None]) -> int:
        steps = [0]

        def count(_: int) -> None:
            mark()
            steps[0] += 1

        pair.t2s.generate(phones[0], bert[0], inputs.prompt, SAMPLING, on_token=count)
        return steps[0]

    variants = {
        "upstream infer_panel_naive": naive,
        "upstream infer_panel_batch_infer": batch_infer,
        "ours generate": ours,
    }
    for fn in variants.values():
        gpt_run(fn)  # warm-up
    results: dict[str, list[GptRun]] = {label: [] for label in variants}
    for _ in range(reps):
        for label, fn in variants.items():
            results[label].append(gpt_run(fn))
    return results


def e2e_rows(tts, runtime: Runtime, data_dir: Path, reps: int, sweep: list[int],
             bf16: Runtime | None = None) -> dict[str, list[Request]]:
    variants: dict[str, Callable[[], Request]] = {
        DEFAULT_LABEL: lambda: our_request(runtime, "fixed"),
        "upstream mode 0 (non-streaming)": lambda: upstream_request(tts, upstream_inputs(data_dir, 0)),
        "ours whole sentences": lambda: our_request(runtime, "sentence"),
        "upstream mode 3 (fixed chunks)": lambda: upstream_request(tts, upstream_inputs(data_dir, 3)),
        "upstream mode 2 (split at mute)": lambda: upstream_request(tts, upstream_inputs(data_dir, 2)),
        "upstream mode 1 (= True, sentences)": lambda: upstream_request(tts, upstream_inputs(data_dir, 1)),
    }
    for size in sweep:  # other chunk lengths: what the default's choice trades (first audio vs CPU)
        if size != DEFAULT_CHUNK:
            variants[sweep_label(size)] = lambda size=size: our_request(runtime, "fixed", min_chunk_tokens=size)
    if bf16 is not None:  # not the default: --precision bf16 (not bit-exact with upstream)
        variants["ours default, bf16"] = lambda: our_request(bf16, "fixed")
        variants["ours whole sentences, bf16"] = lambda: our_request(bf16, "sentence")
    for fn in variants.values():
        fn()  # warm-up (first-call costs on both sides: g2p caches, oneDNN primitives)
    results: dict[str, list[Request]] = {label: [] for label in variants}
    for _ in range(reps):
        for label, fn in variants.items():
            results[label].append(fn())
    return results


# ----------------------------------------------------------------------------- report
def median(values: list[float]) -> float:
    return statistics.median(values)


def round_ratios(ours: list[float], theirs: list[float]) -> str:
    """The median and spread of ours / theirs within each round (the two ran back to back): steadier
    on a drifting machine than the ratio of the two medians, which is printed first."""
    ratios = [a / b for a, b in zip(ours, theirs)]
    return f"(rounds {median(ratios):.2f}: {min(ratios):.2f}-{max(ratios):.2f})"


def report(threads: int, reps: tuple[int, int], tokens: int, load: tuple[tuple[float, ...], tuple[float, ...]],
           vocoder: dict[str, list[float]], gpt: dict[str, list[GptRun]], e2e: dict[str, list[Request]]) -> None:
    """reps: (rounds of the GPT and end-to-end rows, rounds of the vocoder rows); empty gpt: the vocoder alone."""
    before, after = load
    print(f"\n== {threads} thread(s), {reps[0]} rounds ({reps[1]} of the vocoder), {tokens} tokens per sentence; load average "
          f"{before[0]:.2f} {before[1]:.2f} before, {after[0]:.2f} {after[1]:.2f} after")
    up_decode = median(vocoder["upstream SynthesizerTrn.decode"])
    print(f"1. vocoder ({tokens} codes = {tokens * 0.04:.2f} s of audio), CPU s per s of audio (min-max), ratio to upstream decode")
    for label, values in vocoder.items():
        print(f"   {label:42} {spread(values):>24} {median(values) / up_decode:7.2f}")
    up_dec = median(vocoder["upstream dec (HiFi-GAN) alone"])
    ours_dec, ours_direct = vocoder["ours vocode (HiFi-GAN) alone"], vocoder["ours vocode, every conv direct"]
    print(f"   HiFi-GAN alone ours/upstream: {median(ours_dec) / up_dec:.2f}; ours with block-DFT convs / every conv "
          f"direct: {median(ours_dec) / median(ours_direct):.2f} {round_ratios(ours_dec, ours_direct)}")
    if not gpt:
        return
    print("2. GPT, first sentence, CPU: first token ms (prefill), decode ms/token (min-max), wall decode ms/token, steps")
    base = gpt["upstream infer_panel_naive"]
    base_first = median([1000 * r.first.cpu for r in base])
    for label, runs in gpt.items():
        decode = [r.decode_ms for r in runs]
        wall = [1000 * (r.total.wall - r.first.wall) / max(1, r.steps - 1) for r in runs]
        first = [1000 * r.first.cpu for r in runs]
        print(f"   {label:34} first {spread(first):>26} ({median(first) / base_first:.2f} x naive)"
              f"  decode {spread(decode):>24} ({median(decode) / median([r.decode_ms for r in base]):.2f} x naive)"
              f"  wall {median(wall):6.1f}  steps {runs[0].steps}")
    print("3. end to end, two sentences: first audio s, total s, CPU s (median, min-max), audio s")
    for label, runs in e2e.items():
        print(f"   {label:36} first {spread([r.first_audio for r in runs]):>24}  total {spread([r.total for r in runs]):>24}"
              f"  CPU {spread([r.cpu for r in runs]):>24}  audio {median([r.audio for r in runs]):5.2f}")

    def m(label: str, field: str) -> float:
        return median([getattr(r, field) for r in e2e[label]])

    def rounds(label: str, other: str, field: str) -> str:
        return round_ratios([getattr(r, field) for r in e2e[label]], [getattr(r, field) for r in e2e[other]])

    ours_first = m(DEFAULT_LABEL, "first_audio")
    print("   targets (issue 14 point 5), ours / upstream:")
    for mode in ("upstream mode 3 (fixed chunks)", "upstream mode 2 (split at mute)", "upstream mode 1 (= True, sentences)"):
        print(f"   first audio, ours default / {mode:36} {ours_first / m(mode, 'first_audio'):5.2f}  (target <= 0.80) "
              f"{rounds(DEFAULT_LABEL, mode, 'first_audio')}")
    for label in (DEFAULT_LABEL, "ours whole sentences"):
        print(f"   CPU, {label:31} / upstream mode 0        {m(label, 'cpu') / m('upstream mode 0 (non-streaming)', 'cpu'):5.2f}"
              f"  (target <= 0.90) {rounds(label, 'upstream mode 0 (non-streaming)', 'cpu')}")
    for label in [label for label in e2e if label.startswith("ours fixed, ")]:
        print(f"   {label}: first audio / upstream mode 3 "
              f"{m(label, 'first_audio') / m('upstream mode 3 (fixed chunks)', 'first_audio'):5.2f} "
              f"{rounds(label, 'upstream mode 3 (fixed chunks)', 'first_audio')}, CPU / upstream mode 0 "
              f"{m(label, 'cpu') / m('upstream mode 0 (non-streaming)', 'cpu'):5.2f} "
              f"{rounds(label, 'upstream mode 0 (non-streaming)', 'cpu')}")
    print(f"   vocoder, ours as the product calls it / upstream decode  "
          f"{median(vocoder['ours: decode as the product calls it']) / up_decode:5.2f}  (target <= 0.80) "
          f"{round_ratios(vocoder['ours: decode as the product calls it'], vocoder['upstream SynthesizerTrn.decode'])}; "
          f"same work (ge inside): {median(vocoder['ours: ge from the spectrogram + decode']) / up_decode:.2f}")
    if "ours default, bf16" in e2e:
        print("   with --precision bf16 (opt-in), ours / upstream (fp32):")
        print(f"   first audio, ours default bf16 / upstream mode 3          "
              f"{m('ours default, bf16', 'first_audio') / m('upstream mode 3 (fixed chunks)', 'first_audio'):5.2f}")
        for label in ("ours default, bf16", "ours whole sentences, bf16"):
            print(f"   CPU, {label:31} / upstream mode 0        "
                  f"{m(label, 'cpu') / m('upstream mode 0 (non-streaming)', 'cpu'):5.2f}")
        print(f"   vocoder, ours bf16 / upstream decode                      "
              f"{median(vocoder['ours bf16: decode as the product calls it']) / up_decode:5.2f}")


def bench(tts, data_dir: Path, threads: int, reps: tuple[int, int], tokens: int, sweep: list[int], bf16: bool = False,
          vocoder_only: bool = False) -> None:
    """reps: (rounds of the GPT and end-to-end rows, rounds of the vocoder rows)."""
    load_before = os.getloadavg()
    torch.set_num_threads(threads)
    precisions = ("fp32", "bf16") if bf16 else ("fp32",)
    runtimes = {
        p: Runtime(RuntimeSettings(data_dir=data_dir, threads=threads, precision=p, use_fallback=False)) for p in precisions
    }
    for runtime in runtimes.values():
        runtime.warm_up()
        runtime.start()
    runtime, half = runtimes["fp32"], runtimes.get("bf16")
    try:
        inputs = shared_inputs(tts, data_dir)
        torch.set_num_threads(threads)
        vocoder = vocoder_rows(tts, runtime, inputs, tokens, reps[1], half)
        gpt = {} if vocoder_only else gpt_rows(tts, runtime, inputs, reps[0])
        e2e = {} if vocoder_only else e2e_rows(tts, runtime, data_dir, reps[0], sweep, half)
    finally:
        for each in runtimes.values():
            each.close()
    report(threads, reps, tokens, (load_before, os.getloadavg()), vocoder, gpt, e2e)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, help="checkout of the official GPT-SoVITS (see the module doc)")
    parser.add_argument("--upstream-deps", type=Path, help="folder with the packages upstream needs beyond ours")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--vocoder-reps", type=int, help="rounds of the vocoder rows (default: 3 x --reps)")
    parser.add_argument("--vocoder-only", action="store_true", help="only the vocoder rows (1.)")
    parser.add_argument("--tokens", type=int, default=50, help="semantic tokens per sentence (25 = 1 s)")
    parser.add_argument("--chunk-sweep", type=int, nargs="*", default=[16, 14, 10],
                        help="other chunk lengths to run ours at (16: upstream's default), next to our default")
    parser.add_argument("--bf16", action="store_true",
                        help="also ours with --precision bf16 (needs AVX512-BF16 or AMX; not bit-exact with upstream)")
    args = parser.parse_args()
    if args.upstream is None or not (args.upstream / "GPT_SoVITS" / "TTS_infer_pack").is_dir():
        print("bench_upstream.py needs --upstream DIR (a checkout of the official GPT-SoVITS; see its docstring)",
              file=sys.stderr)
        sys.exit(2)
    deps = args.upstream_deps or args.upstream / "deps"
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, NLTK_DATA={os.environ.get('NLTK_DATA')}")
    with tempfile.TemporaryDirectory(prefix="gsv-bench-upstream-") as tmp:
        data_dir = build_data_dir(Path(tmp), args.tokens)
        tts = load_upstream(args.upstream.resolve(), deps.resolve(), data_dir)
        for threads in args.threads:
            reps = (args.reps, args.vocoder_reps or 3 * args.reps)
            bench(tts, data_dir, threads, reps, args.tokens, args.chunk_sweep, args.bf16, args.vocoder_only)


if __name__ == "__main__":
    main()
