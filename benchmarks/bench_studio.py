"""Voice page, product side: time from "save" to "ready" for a new voice (and a new style).

    .venv/bin/python benchmarks/bench_studio.py [--threads 2] [--reps 3] [--sizes tiny real-v2]

For each model size, a data dir with the base models and one voice, a Runtime like the server's
(engine started), and the voice page's Studio on top. Then, per repetition, a new voice is saved
from a 6 s FLAC upload (store.create: decode, check, crop, write atomically) and its bundle
build is queued on the engine; "ready" is when Studio reports it. Also timed: adding a style,
and, as the baseline measured in the same run, the bare bundle build (backend.build_bundle on the
same clip, models already loaded, no store, no queue). The first voice also pays for loading
the models; it is reported on its own row.

Sizes: `tiny` = the fixture models (../shared/fixtures/gsv-v2-tiny); `real-v2` = the real-size v2
architecture with seeded random weights (see bench_server.py), English, so BERT is never loaded.
"""

from __future__ import annotations

import argparse
import io
import lzma
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "nltk_data"))  # English frontend data

from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings  # noqa: E402
from wyoming_gsv.synthesis.studio import READY, Studio  # noqa: E402
from wyoming_gsv.voices.store import VoiceDraft  # noqa: E402

TINY = ROOT.parent / "shared" / "fixtures" / "gsv-v2-tiny"
TRANSCRIPT = "This is the voice of the benchmark, saved from the page."


def speech_clip(seconds: float, seed: int) -> bytes:
    """A 32 kHz FLAC of harmonic syllables (4 per second) over a faint noise floor."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 32000)) / 32000
    voice = sum(np.sin(2 * np.pi * (120 + 10 * seed) * k * t) / k for k in range(1, 6))
    envelope = np.where((t * 4) % 1 < 0.6, np.sin(np.pi * np.clip(((t * 4) % 1) / 0.6, 0, 1)), 0)
    audio = 0.3 * voice / np.max(np.abs(voice)) * envelope + rng.normal(0, 3e-4, t.shape)
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.astype(np.float32), 32000, format="FLAC")
    return buffer.getvalue()


def tiny_data_dir(root: Path) -> Path:
    models = root / "models"
    models.mkdir(parents=True)
    hubert = models / "chinese-hubert-base"
    hubert.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(TINY / "hubert_tiny" / name, hubert / name)
    with lzma.open(TINY / "hubert_tiny" / "pytorch_model.bin.xz") as src, open(hubert / "pytorch_model.bin", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with lzma.open(TINY / "s2_tiny_v2.pth.xz") as src, open(models / "sovits.pth", "wb") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(TINY / "s1_tiny_v2.ckpt", models / "gpt.ckpt")
    shutil.copytree(TINY / "bert_tiny", models / "chinese-roberta-wwm-ext-large")
    return root


def real_v2_data_dir(root: Path) -> Path:
    from bench_server import write_gpt, write_hubert, write_sovits

    models = root / "models"
    (models / "chinese-roberta-wwm-ext-large").mkdir(parents=True)  # never loaded for English
    write_gpt(models / "gpt.ckpt", tokens=50)
    write_sovits(models / "sovits.pth")
    write_hubert(models / "chinese-hubert-base")
    return root


def wait_ready(studio: Studio, voice_id: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = studio.voice(voice_id)
        if status is not None and status.status == READY and all(s.status == READY for s in status.styles):
            return
        if status is not None and status.status == "unusable":
            raise RuntimeError(f"{voice_id}: {status.problem}")
        time.sleep(0.01)
    raise TimeoutError(voice_id)


def measure(size: str, data_dir: Path, threads: int, reps: int) -> tuple[list[tuple[str, float]], float]:
    """(rows of what and seconds, the baseline's seconds)."""
    runtime = Runtime(RuntimeSettings(data_dir=data_dir, threads=threads, use_fallback=False))
    runtime.start()
    studio = Studio.for_runtime(runtime)
    rows: list[tuple[str, float]] = []
    try:
        def save_to_ready(voice_id: str, seed: int) -> tuple[float, float]:
            draft = VoiceDraft(voice_id, speech_clip(6.0, seed), TRANSCRIPT, language="en")
            start = time.perf_counter()
            studio.store.create(draft)
            saved = time.perf_counter()
            studio.request_build(voice_id)
            wait_ready(studio, voice_id)
            return saved - start, time.perf_counter() - start

        save, ready = save_to_ready("first", 0)
        rows.append(("first voice: save (store.create)", save))
        rows.append(("first voice: save -> ready (loads the models)", ready))
        saves, readies, styles, bare = [], [], [], []
        for rep in range(reps):
            save, ready = save_to_ready(f"voice{rep}", rep + 1)
            saves.append(save)
            readies.append(ready)
            start = time.perf_counter()
            studio.store.add_style(f"voice{rep}", "style", speech_clip(5.0, rep + 10), TRANSCRIPT)
            studio.request_build(f"voice{rep}")
            wait_ready(studio, f"voice{rep}")
            styles.append(time.perf_counter() - start)
            voice = runtime.registry.get(f"voice{rep}")
            start = time.perf_counter()
            runtime.backend.build_bundle(voice)
            bare.append(time.perf_counter() - start)
        baseline = statistics.median(bare)
        rows.append(("baseline: bare bundle build (same clip, models loaded)", baseline))
        rows.append(("voice: save (store.create)", statistics.median(saves)))
        rows.append(("voice: save -> ready", statistics.median(readies)))
        rows.append(("style: save -> ready", statistics.median(styles)))
    finally:
        runtime.close()
    return rows, baseline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "real-v2"], choices=["tiny", "real-v2"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} reps={args.reps} (medians)")
    print(f"{'size':8} {'what':56} {'seconds':>8} {'x baseline':>10}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            data_dir = tiny_data_dir(root) if size == "tiny" else real_v2_data_dir(root)
            rows, baseline = measure(size, data_dir, args.threads, args.reps)
            for what, value in rows:
                print(f"{size:8} {what:56} {value:8.3f} {value / baseline:10.2f}")


if __name__ == "__main__":
    main()
