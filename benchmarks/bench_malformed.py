"""Server memory and log under a flood of malformed frames, against the same number of good ones.

    .venv/bin/python benchmarks/bench_malformed.py [--frames 10000] [--concurrency 50] [--seed 12]

Starts `python -m wyoming_gsv` as a subprocess on an empty data dir (no models are needed to read
frames), then sends, one connection per frame:
1. baseline: `--frames` well-formed `ping` frames;
2. `--frames` frames from the seeded malformed-frame grammar of the fuzz test
   (tests/malformed_frames.py: wrong lengths, 2**40-byte announcements, lists for objects, lone
   surrogates, 5,000 nested brackets, input ending inside a frame...).
Reported per phase: the server's RSS (VmRSS) and peak RSS (VmHWM) after it, wall time, how many
connections got an `error` event, and what the server logged (bytes, tracebacks, "Task exception
was never retrieved").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from malformed_frames import fuzzed_frame  # noqa: E402
from server_process import free_port  # noqa: E402


def memory_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


async def send_one(port: int, raw: bytes) -> bool:
    """Send one frame, read until the server closes; True if it answered with an error event."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(raw)
        writer.write_eof()
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return b'"type": "error"' in received


async def flood(port: int, frames: list[bytes], concurrency: int) -> tuple[float, int]:
    started = time.perf_counter()
    errors = 0
    for start in range(0, len(frames), concurrency):
        results = await asyncio.gather(*(send_one(port, raw) for raw in frames[start : start + concurrency]))
        errors += sum(results)
    return time.perf_counter() - started, errors


def log_facts(log: Path, since: int) -> tuple[int, int, int]:
    text = log.read_bytes()[since:].decode(errors="replace")
    return len(text.encode()), text.count("Traceback"), text.count("never retrieved")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    malformed = [fuzzed_frame(rng) for _ in range(args.frames)]
    pings = [json.dumps({"type": "ping", "data": {"text": f"hello {i}"}}).encode() + b"\n" for i in range(args.frames)]

    with tempfile.TemporaryDirectory(prefix="bench-malformed-") as tmp:
        data_dir = Path(tmp) / "data"
        (data_dir / "voices").mkdir(parents=True)
        log = Path(tmp) / "server.log"
        port = free_port()
        argv = [sys.executable, "-m", "wyoming_gsv", "--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir),
                "--no-warm-up", "--no-fallback", "--threads", "1", "--max-connections", str(max(64, args.concurrency * 2))]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(log, "wb") as log_file:
            server = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"server did not start:\n{log.read_text()[-3000:]}")
                    time.sleep(0.2)
            rows = [("started", memory_kib(server.pid), 0.0, 0, log_facts(log, 0))]
            for name, frames in (("after good pings", pings), ("after malformed", malformed)):
                offset = log.stat().st_size
                seconds, errors = asyncio.run(flood(port, frames, args.concurrency))
                time.sleep(0.5)  # the last handlers finish
                rows.append((name, memory_kib(server.pid), seconds, errors, log_facts(log, offset)))
        finally:
            server.terminate()
            server.wait(30)

    print(f"{args.frames} frames per phase, one connection each, {args.concurrency} at a time (seed {args.seed})")
    print(f"{'phase':<20} {'RSS MiB':>8} {'peak MiB':>9} {'wall s':>7} {'errors':>7} {'log KiB':>8} {'tracebacks':>10} {'unretrieved':>11}")
    for name, mem, seconds, errors, (log_bytes, tracebacks, unretrieved) in rows:
        print(f"{name:<20} {mem['VmRSS'] / 1024:>8.1f} {mem['VmHWM'] / 1024:>9.1f} {seconds:>7.1f} {errors:>7} "
              f"{log_bytes / 1024:>8.1f} {tracebacks:>10} {unretrieved:>11}")
    good, bad = rows[1][1]["VmRSS"], rows[2][1]["VmRSS"]
    print(f"RSS after malformed / after good pings: {bad / good:.3f}")


if __name__ == "__main__":
    main()
