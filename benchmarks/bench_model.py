"""Model-layer benchmark: one command, one table.

    .venv/bin/python benchmarks/bench_model.py [--threads 1 2]

Real v2 shapes with seeded random weights built in memory (no model files needed):
* `bench_t2s.py`    GPT prefill, decode ms/token, GEMV floor and ratios;
* `bench_sovits.py` SoVITS seconds per second of audio against the upstream-style decode.
Baselines are measured in the same run; ratios are value / baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sovits import measure_sovits  # noqa: E402
from bench_t2s import Row, bench_t2s, build_v2_model, print_table  # noqa: E402


def sovits_rows(threads: int) -> list[Row]:
    """bench_sovits's rows as this table's; its first variant is the upstream-style baseline."""
    measured = measure_sovits(threads=(threads,))
    baseline = measured[0]
    return [
        Row(
            "sovits",
            row.variant,
            threads,
            row.seconds_per_second,
            "s/s audio",
            "upstream-style" if row is not baseline else "",
            baseline.seconds_per_second if row is not baseline else None,
        )
        for row in measured
    ]


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
