"""Model-layer benchmark: one command, one table.

    .venv/bin/python benchmarks/bench_model.py [--threads 1 2]

Real v2 shapes with seeded random weights built in memory (no model files needed). Each part
lives in its own module exposing `bench_<part>(threads: int) -> list[Row]`:
* `bench_t2s.py`    GPT prefill, decode ms/token, GEMV floor and ratios (engineer A);
* `bench_sovits.py` SoVITS seconds per second of audio (engineer B) — picked up when present.
Baselines are measured in the same run; ratios are value / baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets OMP_WAIT_POLICY=PASSIVE before torch loads)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_t2s import Row, bench_t2s, build_v2_model, print_table  # noqa: E402


def sovits_rows(threads: int) -> list[Row]:
    """SoVITS rows (engineer B's `benchmarks/bench_sovits.py`): its `bench_sovits(threads)`
    returning our `Row`s if it defines one, else its `measure_sovits` rows converted here
    (the first variant is its upstream-style baseline). Nothing while the file is absent."""
    if importlib.util.find_spec("bench_sovits") is None:
        return []
    import bench_sovits

    if hasattr(bench_sovits, "bench_sovits"):
        return bench_sovits.bench_sovits(threads)
    measured = bench_sovits.measure_sovits(threads=(threads,))
    baseline = measured[0]
    return [Row("sovits", row.variant, threads, row.seconds_per_second, "s/s audio",
                "upstream-style" if row is not baseline else "",
                baseline.seconds_per_second if row is not baseline else None)
            for row in measured]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="intra-op thread counts to measure (default: 1 2)")
    args = parser.parse_args()

    model, int8_model = build_v2_model(), build_v2_model().quantize_int8()
    rows: list[Row] = []
    for threads in args.threads:
        rows += bench_t2s(threads, model, int8_model)
        rows += sovits_rows(threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # OpenMP's default busy-waiting makes 2 threads 5-10x slower on a busy 2-core machine;
    # OMP_WAIT_POLICY=PASSIVE (set before starting Python) avoids that.
    wait_policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={wait_policy}, "
          f"load average {load:.2f} at the end")
    print_table(rows)


if __name__ == "__main__":
    main()
