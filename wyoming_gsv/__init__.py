"""Wyoming text-to-speech server running GPT-SoVITS voice cloning in-process."""

import os

# Every entry point (server, CLI commands, benchmarks, tests) imports this package before torch
# and numpy: torch's OpenMP reads this once, when it loads. Idle OpenMP threads then sleep instead of
# spinning; on a busy 2-core machine spinning threads made decoding 5-17x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's OpenBLAS (read when numpy loads) runs the GPT's decode-step matmuls (gsv/t2s.py
# GemvLinear). One thread: with more, its threads spin between calls and a step took twice the
# CPU time for a quarter less wall time.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
