"""First run: time from an empty data dir to the first cloned words, the models fetched by the
server itself (`--fetch-models v2`) from a fake hub on 127.0.0.1 serving the tiny fixture models
under the official file names (tests/fake_hub.py).

    .venv/bin/python benchmarks/bench_first_run.py [--reps 2] [--threads 1]

Each run starts `python -m wyoming_gsv` on a data dir holding only a voice folder (as added in the
panel) and measures, from the process start: `listening` (the server answers; the piper fallback
voice speaks), `voice listed` (the files downloaded, verified and picked up: describe lists the
voice), `first words` (first audio of the cloned voice's answer to a plain `synthesize`).
Baseline, measured in the same run: the same with the models already installed (no download).
The tiny models make the download itself short (about 40 MB over loopback): what is measured is
the server's own path (start, background fetch, pick-up, first load), not a network.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import wyoming_gsv  # noqa: E402,F401  (first: the package sets its thread settings before numpy and torch load)

from conftest import FIXTURES, unpack_xz  # noqa: E402
from fake_hub import serve_hub  # noqa: E402
from server_client import describe, ha_synthesize  # noqa: E402
from server_process import launch, server_env, free_port  # noqa: E402
from voice_data import make_voice, tiny_voice_config  # noqa: E402
from wyoming_gsv.download import PRETRAINED  # noqa: E402

V2 = PRETRAINED["v2"]


def tiny_files(work: Path) -> dict[str, bytes]:
    """The official v2 names with the tiny fixture models' bytes."""
    tiny = FIXTURES / "gsv-v2-tiny"
    hubert = unpack_xz(tiny / "hubert_tiny" / "pytorch_model.bin.xz", work / "hubert.bin")
    sovits = unpack_xz(tiny / "s2_tiny_v2.pth.xz", work / "s2.pth")
    sources = {
        f"{V2.hubert_dir}/config.json": tiny / "hubert_tiny" / "config.json",
        f"{V2.hubert_dir}/preprocessor_config.json": tiny / "hubert_tiny" / "preprocessor_config.json",
        f"{V2.hubert_dir}/pytorch_model.bin": hubert,
        f"{V2.bert_dir}/config.json": tiny / "bert_tiny" / "config.json",
        f"{V2.bert_dir}/tokenizer.json": tiny / "bert_tiny" / "tokenizer.json",
        f"{V2.bert_dir}/pytorch_model.bin": tiny / "bert_tiny" / "pytorch_model.bin",
        V2.gpt: tiny / "s1_tiny_v2.ckpt",
        V2.sovits: sovits,
    }
    return {name: path.read_bytes() for name, path in sources.items()}


async def _listed(port: int, name: str) -> bool:
    try:
        info = await describe(port)
    except OSError:
        return False
    return name in [voice.name for program in info.tts for voice in program.voices]


def one_run(data_dir: Path, hub_url: str | None, threads: int, log: Path) -> dict[str, float]:
    port = free_port()
    argv = ["--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir), "--threads", str(threads)]
    env = server_env(HF_HUB_OFFLINE="1")
    if hub_url is not None:
        argv += ["--fetch-models", "v2"]
        env = server_env(HF_ENDPOINT=hub_url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
    started = time.monotonic()
    process = launch(argv, log, env)
    try:
        times: dict[str, float] = {}
        while "Ready: listening" not in log.read_text():
            if process.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()}")
            time.sleep(0.02)
        times["listening"] = time.monotonic() - started
        while not asyncio.run(_listed(port, "tiny")):
            if time.monotonic() - started > 300:
                raise RuntimeError(f"voice never listed:\n{log.read_text()}")
            time.sleep(0.1)
        times["voice listed"] = time.monotonic() - started
        asked = time.monotonic()
        result = asyncio.run(ha_synthesize(port, "Hello there, this is my voice.", voice="tiny"))
        if result.error is not None or result.first_audio_at is None:
            raise RuntimeError(f"no audio: {result.error}\n{log.read_text()}")
        times["first words"] = asked - started + result.first_audio_at
        return times
    finally:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("NLTK_DATA", str(FIXTURES.parent / "nltk_data"))
    with tempfile.TemporaryDirectory(prefix="bench-first-run-") as tmp:
        work = Path(tmp)
        files = tiny_files(work)
        results: dict[str, list[dict[str, float]]] = {"models installed (baseline)": [], "empty data dir + fetch": []}
        hub_iter = serve_hub(files)
        hub = next(hub_iter)
        try:
            for rep in range(args.reps):
                for label in results:
                    data_dir = work / f"data-{rep}-{len(results[label])}-{label[:5]}"
                    make_voice(data_dir, "tiny", reference=FIXTURES / "gsv-v2-tiny" / "ref_32k.wav", config=tiny_voice_config())
                    fetch = label.startswith("empty")
                    if not fetch:
                        for rel, data in files.items():
                            (data_dir / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
                            (data_dir / "models" / rel).write_bytes(data)
                            os.utime(data_dir / "models" / rel, (time.time() - 60,) * 2)
                    results[label].append(one_run(data_dir, hub.url if fetch else None, args.threads, work / f"{data_dir.name}.log"))
                    shutil.rmtree(data_dir)
        finally:
            hub_iter.close()
    columns = ("listening", "voice listed", "first words")
    baseline = statistics.median(r["first words"] for r in results["models installed (baseline)"])
    print(f"\nfirst run, tiny v2 models, {args.threads} thread(s), median of {args.reps} (seconds from process start)")
    print(f"{'case':<30}" + "".join(f"{c:>15}" for c in columns) + f"{'words / baseline':>18}")
    for label, runs in results.items():
        medians = [statistics.median(r[c] for r in runs) for c in columns]
        print(f"{label:<30}" + "".join(f"{m:>15.2f}" for m in medians) + f"{medians[-1] / baseline:>18.2f}")
    print(f"load average: {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
