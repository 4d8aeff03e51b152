"""Voice studio page, end to end over HTTP: time from "save" to "ready" for a new voice, at the REAL v2 size.

    .venv/bin/python benchmarks/bench_studio_web.py [--threads 2] [--reps 3] [--tokens 60]

Writes real-size v2 model files with seeded random weights (as bench_server.py does: GPT 24 x 512,
SoVITS v2, HuBERT-base; official formats), starts `python -m wyoming_gsv --web` as a subprocess and
uses the page's HTTP API as the browser does: POST the clip + transcript (multipart), then poll the
voices list every 0.1 s until the voice is "ready" (its bundle built in the background through the
engine queue). Two cases:
* cold: the server was started with --no-warm-up and no voice, so the first save also loads the
  GPT, SoVITS and HuBERT models;
* warm: the models are loaded (a voice exists), so a save costs the bundle: HuBERT features of the
  clip, prompt codes, reference spectrogram/embedding and the transcript's phones.
Also: the page's streamed preview, time to its first audio byte. Baseline, measured in the same
run on the same server: one Home Assistant announcement (Wyoming `synthesize`, one sentence, read to
`audio-stop`), so "save to ready" reads as "so many announcements".
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import aiohttp
import numpy as np
import soundfile
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_server import _timed_request, build_data_dir, free_port, wait_ready  # noqa: E402

TRANSCRIPT = "This is the reference voice for the benchmark."
ANNOUNCEMENT = "The front door is open."
POLL_SECONDS = 0.1


def clip_bytes(seed: int) -> bytes:
    """A 4 s speech-like harmonic clip (different per voice, so no bundle is shared)."""
    t = np.arange(int(4.0 * 32000)) / 32000
    wave = sum(np.sin(2 * np.pi * (130 + seed) * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * wave / np.max(np.abs(wave)) * envelope).astype(np.float32), 32000, format="WAV")
    return buffer.getvalue()


async def save_to_ready(session: aiohttp.ClientSession, base: str, voice_id: str, seed: int) -> float:
    form = aiohttp.FormData()
    for name, value in {"id": voice_id, "transcript": TRANSCRIPT, "language": "en", "consent": "1"}.items():
        form.add_field(name, value)
    form.add_field("clip", clip_bytes(seed), filename="clip.wav")
    start = time.perf_counter()
    async with session.post(base + "api/voices", data=form) as response:
        assert response.status == 201, await response.text()
    while True:
        async with session.get(base + "api/voices") as response:
            voices = {v["id"]: v for v in (await response.json())["voices"]}
        status = voices[voice_id]["status"]
        if status == "ready":
            return time.perf_counter() - start
        assert status == "building", voices[voice_id]
        await asyncio.sleep(POLL_SECONDS)


async def preview_first_audio(session: aiohttp.ClientSession, base: str, voice_id: str) -> float:
    start = time.perf_counter()
    async with session.get(base + f"api/voices/{voice_id}/preview", params={"text": ANNOUNCEMENT}) as response:
        assert response.status == 200, await response.text()
        received = 0
        async for piece in response.content.iter_any():
            received += len(piece)
            if received > 44:  # past the WAV header: audio
                first = time.perf_counter() - start
                break
        else:
            raise AssertionError("the preview held no audio")
    return first


def start_server(data_dir: Path, args: argparse.Namespace, flags: list[str]) -> tuple[subprocess.Popen, int, str]:
    port, web_port = free_port(), free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "wyoming_gsv", "--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir),
               "--web", f"127.0.0.1:{web_port}", "--threads", str(args.threads), "--no-fallback", *flags]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    asyncio.run(wait_ready(port, process))
    return process, port, f"http://127.0.0.1:{web_port}/"


async def run_case(base: str, port: int, reps: int, cold: bool) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {"save_to_ready": [], "preview_first_audio": [], "announcement": []}
    async with aiohttp.ClientSession(headers={"X-Studio-Page": "1"}) as session:
        for rep in range(1 if cold else reps):
            voice_id = f"{'cold' if cold else 'warm'}{rep}"
            results["save_to_ready"].append(await save_to_ready(session, base, voice_id, seed=rep + (50 if cold else 0)))
            results["preview_first_audio"].append(await preview_first_audio(session, base, voice_id))
            results["announcement"].append((await non_streaming_voice(port, voice_id)))
    return results


async def non_streaming_voice(port: int, voice_id: str) -> float:
    from wyoming.audio import AudioStop
    from wyoming.tts import Synthesize, SynthesizeVoice

    run = await _timed_request(port, [Synthesize(text=ANNOUNCEMENT, voice=SynthesizeVoice(name=voice_id)).event()],
                               AudioStop.is_type)
    return run.total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=60, help="semantic tokens per sentence (25 Hz)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="gsv-bench-studio-") as tmp:
        t0 = time.perf_counter()
        data_dir = build_data_dir(Path(tmp), args.tokens)
        print(f"model files written in {time.perf_counter() - t0:.1f} s")
        bench_voice = data_dir / "voices" / "bench"
        parked = data_dir / "parked-bench"
        bench_voice.rename(parked)  # cold: no voice, nothing loaded
        for case, flags in (("cold (models load on save)", ["--no-warm-up"]), ("warm (models loaded)", [])):
            if case.startswith("warm"):
                parked.rename(bench_voice)
            process, port, base = start_server(data_dir, args, flags)
            try:
                rows.append((case, asyncio.run(run_case(base, port, args.reps, cold=case.startswith("cold")))))
            finally:
                process.terminate()
                process.wait(30)
            for folder in (data_dir / "voices").iterdir():
                if folder.name != "bench":
                    subprocess.run(["rm", "-rf", str(folder)], check=True)

    print(f"torch {torch.__version__}, cpu, {args.threads} threads, {os.cpu_count()} CPUs, {args.tokens} tokens/sentence, "
          f"median of {args.reps} (cold: 1), load average {os.getloadavg()[0]:.2f}")
    header = f"{'case':<28} {'save->ready s':>14} {'preview 1st audio s':>20} {'announcement s':>15} {'ready/announcement':>19}"
    print(header)
    print("-" * len(header))
    for case, results in rows:
        ready, first, baseline = (statistics.median(results[k]) for k in ("save_to_ready", "preview_first_audio", "announcement"))
        print(f"{case:<28} {ready:14.2f} {first:20.2f} {baseline:15.2f} {ready / baseline:19.2f}")
    print("baseline = one Wyoming `synthesize` of a one-sentence announcement with the new voice, read to audio-stop")


if __name__ == "__main__":
    main()
