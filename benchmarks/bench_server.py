"""End-to-end server benchmark over real TCP: time to first audio (TTFA) and real-time factor (RTF).

    .venv/bin/python benchmarks/bench_server.py [--threads 2] [--reps 3] [--device cpu] [--configs ...]

Builds the REAL-SIZE v2 architecture with seeded random weights as model files in a temp data
dir (GPT 24 layers x 512, SoVITS v2 hps, HuBERT-base; official file formats), adds one English
voice, starts `python -m wyoming_gsv` as a subprocess and drives it like Home Assistant does:
* non-streaming: `synthesize`, audio read up to the first `audio-stop`;
* streaming: `synthesize-start`, the text as one chunk, the compatibility `synthesize`,
  `synthesize-stop`, audio read up to `synthesize-stopped`.
Random weights cost exactly what real ones cost, but almost never pick EOS: each sentence runs to the
GPT's early stop, set here to `--tokens` semantic tokens (25 Hz), so every sentence yields the
same amount of audio. English text only: the Chinese BERT is never loaded (zh segments only).
Each server flag set in `--configs` (default: streaming as configured, whole sentences, plus `--gpt-int8`) gets
its own server process on the same files. Baseline, measured in the same run: the non-streaming
total time of the same text with the first flag set (what a client waits for without streaming).
Reported: TTFA, total, audio seconds, RTF = total / audio, and TTFA / baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "nltk_data"))  # English frontend data

from wyoming.audio import AudioChunk, AudioStop  # noqa: E402
from wyoming.client import AsyncTcpClient  # noqa: E402
from wyoming.event import Event  # noqa: E402
from wyoming.info import Describe  # noqa: E402
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice  # noqa: E402

from wyoming_gsv.gsv.sovits import CODEBOOK_PREFIX, SovitsConfig  # noqa: E402

TEXTS = {
    "announcement (1 sentence)": "The front door is open.",
    "answer (4 sentences)": (
        "The weather today is mild and sunny. Expect a high of twenty degrees in the afternoon. "
        "Rain is likely after nine in the evening. Take an umbrella if you go out tonight."
    ),
}


# ----------------------------------------------------------------------------- model files
def write_gpt(path: Path, tokens: int) -> None:
    from bench_t2s import V2_CONFIG, build_v2_model

    model = build_v2_model()
    # The official s1 names (the fused projection as nn.MultiheadAttention stores it).
    weights = {f"model.{k.replace('.in_proj.', '.in_proj_')}": v.half() for k, v in model.state_dict().items()}
    config = {
        "model": {
            "embedding_dim": V2_CONFIG.embedding_dim, "hidden_dim": V2_CONFIG.embedding_dim,
            "head": V2_CONFIG.num_heads, "n_layer": V2_CONFIG.num_layers, "linear_units": 2048,
            "phoneme_vocab_size": V2_CONFIG.phoneme_vocab_size, "vocab_size": V2_CONFIG.vocab_size,
            "EOS": V2_CONFIG.eos, "dropout": 0, "random_bert": 0,
        },
        "data": {"max_sec": tokens / 50},  # early stop = 50 * max_sec tokens
    }
    torch.save({"weight": weights, "config": config, "info": "bench-random"}, path)


def write_sovits(path: Path) -> None:
    from bench_sovits import build_real_v2, upstream_style

    # As the official files store them: weight-normed convs as weight_g / weight_v, and the
    # codebook with its training buffers (`inited` set, or upstream's loader would re-run k-means).
    model = upstream_style(build_real_v2())
    weights = {}
    for key, value in model.state_dict().items():
        if key.startswith("quantizer."):
            key = CODEBOOK_PREFIX + key[len("quantizer."):]
        weights[key] = value.half()
    embed = weights[CODEBOOK_PREFIX + "embed"]
    weights[CODEBOOK_PREFIX + "inited"] = torch.ones(1)
    weights[CODEBOOK_PREFIX + "cluster_size"] = torch.ones(embed.shape[0])
    weights[CODEBOOK_PREFIX + "embed_avg"] = embed.clone()
    c = SovitsConfig()
    data = {name: getattr(c, name) for name in ("sampling_rate", "filter_length", "hop_length", "win_length")}
    model_hps = {
        name: getattr(c, name)
        for name in c.__dataclass_fields__
        if name not in {"version", "n_symbols", "conv_post_bias", *data}
    }
    # The official s2 hps also carry these (upstream's TTS.init_vits_weights reads them).
    data["n_speakers"] = 300
    model_hps.update(p_dropout=0.1, n_layers_q=3, use_spectral_norm=False, freeze_quantizer=True)
    train = {"segment_size": 20480}
    torch.save({"weight": weights, "config": {"train": train, "data": data, "model": model_hps}, "info": "bench-random"},
               path)


def write_hubert(folder: Path) -> None:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(0)
    HubertModel(HubertConfig()).half().save_pretrained(str(folder))
    Wav2Vec2FeatureExtractor().save_pretrained(str(folder))  # the hub folder's preprocessor_config.json


def write_bert(folder: Path) -> None:
    """A one-layer BERT with the real feature width: English text never runs BERT, but every
    voice needs the folder in place (the official download always brings it)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(vocab_size=512, hidden_size=1024, num_hidden_layers=1, num_attention_heads=16, intermediate_size=1024)
    BertForMaskedLM(config).save_pretrained(str(folder))


def build_data_dir(root: Path, tokens: int) -> Path:
    models = root / "models"
    write_bert(models / "chinese-roberta-wwm-ext-large")
    write_gpt(models / "gpt.ckpt", tokens)
    write_sovits(models / "sovits.pth")
    write_hubert(models / "chinese-hubert-base")
    voice = root / "voices" / "bench"
    voice.mkdir(parents=True)
    t = np.arange(int(4.0 * 32000)) / 32000
    wave = 0.3 * sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    soundfile.write(str(voice / "ref.wav"), wave.astype(np.float32), 32000, subtype="PCM_16")
    (voice / "ref.txt").write_text("This is the reference voice for the benchmark.")
    (voice / "voice.yaml").write_text("description: Benchmark\nlanguage: en\n")
    # Dated a minute back, as an installed data dir is: files changed in the last seconds count
    # as still being copied, and their voice would wait.
    past = time.time() - 60
    for path in root.rglob("*"):
        os.utime(path, (past, past))
    return root


# ----------------------------------------------------------------------------- clients
@dataclass
class Run:
    ttfa: float
    total: float
    audio_seconds: float


async def _timed_request(port: int, events: list[Event], is_last: Callable[[str], bool]) -> Run:
    """Send `events`, read audio up to the event whose type `is_last`; timed from the first write."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        start = time.perf_counter()
        for event in events:
            await client.write_event(event)
        first, samples, rate = None, 0, 1
        while True:
            event = await client.read_event()
            assert event is not None, "server closed the connection"
            assert event.type != "error", event.data
            if AudioChunk.is_type(event.type):
                chunk = AudioChunk.from_event(event)
                first = first or time.perf_counter() - start
                samples, rate = samples + chunk.samples, chunk.rate
            elif is_last(event.type):
                return Run(first or float("nan"), time.perf_counter() - start, samples / rate)


async def non_streaming(port: int, text: str) -> Run:
    request = Synthesize(text=text, voice=SynthesizeVoice(name="bench")).event()
    return await _timed_request(port, [request], AudioStop.is_type)


async def streaming(port: int, text: str) -> Run:
    voice = SynthesizeVoice(name="bench")
    events = [SynthesizeStart(voice=voice).event(), SynthesizeChunk(text=text).event(),
              Synthesize(text=text, voice=voice).event(), SynthesizeStop().event()]
    return await _timed_request(port, events, SynthesizeStopped.is_type)


async def wait_ready(port: int, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited during start-up")
        try:
            async with AsyncTcpClient("127.0.0.1", port) as client:
                await client.write_event(Describe().event())
                if await asyncio.wait_for(client.read_event(), 5):
                    return
        except OSError:
            await asyncio.sleep(0.5)
    raise TimeoutError("server did not answer describe")


async def measure(port: int, reps: int) -> list[tuple[str, str, Run]]:
    results = []
    for text_name, text in TEXTS.items():
        await non_streaming(port, text)  # warm-up for this length
        for mode, fn in (("non-streaming", non_streaming), ("streaming", streaming)):
            runs = [await fn(port, text) for _ in range(reps)]
            median = Run(*(statistics.median(getattr(r, f) for r in runs) for f in ("ttfa", "total", "audio_seconds")))
            results.append((text_name, mode, median))
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Measure = Callable[[int, int], Awaitable[list[tuple[str, str, Run]]]]


async def concurrently(port: int, text: str, clients: int) -> Run:
    """`clients` streamed requests of `text` at once: the last first audio, the wall time until
    every one is done, and the audio of all of them."""
    start = time.perf_counter()
    runs = await asyncio.gather(*(streaming(port, text) for _ in range(clients)))
    return Run(max(run.ttfa for run in runs), time.perf_counter() - start,
               sum(run.audio_seconds for run in runs))


def run_server(data_dir: Path, args: argparse.Namespace, flags: list[str],
               measure_runs: Measure = measure) -> list[tuple[str, str, Run]]:
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "wyoming_gsv", "--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir),
               "--threads", str(args.threads), "--device", args.device, "--no-fallback", *flags]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.perf_counter()
        asyncio.run(wait_ready(port, process))
        print(f"server ({' '.join(flags) or 'defaults'}) ready in {time.perf_counter() - t0:.1f} s")
        return asyncio.run(measure_runs(port, args.reps))
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=60, help="semantic tokens per sentence (25 Hz)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", nargs="+", default=["", "--chunking sentence", "--gpt-int8"],
                        help="server flag sets to compare; the first is the baseline (default: %(default)s)")
    args = parser.parse_args()

    rows: list[tuple[str, str, Run]] = []
    with tempfile.TemporaryDirectory(prefix="gsv-bench-") as tmp:
        t0 = time.perf_counter()
        data_dir = build_data_dir(Path(tmp), args.tokens)
        print(f"model files written in {time.perf_counter() - t0:.1f} s")
        for config in args.configs:
            label = config.replace("--chunking ", "").replace("--gpt-int8", "int8").strip()
            suffix = f", {label}" if label else ""
            rows += [(name, mode + suffix, run) for name, mode, run in run_server(data_dir, args, config.split())]

    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"{args.tokens} tokens/sentence, median of {args.reps}, load average {load:.2f}")
    header = f"{'text':<27} {'mode':<31} {'TTFA s':>7} {'total s':>8} {'audio s':>8} {'RTF':>6} {'TTFA/baseline':>14}"
    print(header)
    print("-" * len(header))
    baselines: dict[str, float] = {}
    for name, mode, run in rows:
        if mode.startswith("non-streaming"):
            baselines.setdefault(name, run.total)
    for name, mode, run in rows:
        ratio = run.ttfa / baselines[name] if name in baselines else float("nan")
        print(f"{name:<27} {mode:<31} {run.ttfa:7.2f} {run.total:8.2f} {run.audio_seconds:8.2f} "
              f"{run.total / run.audio_seconds:6.2f} {ratio:14.2f}")
    print("baseline = non-streaming total time of the same text with the first flag set "
          "(what a non-streaming client waits for)")


if __name__ == "__main__":
    main()
