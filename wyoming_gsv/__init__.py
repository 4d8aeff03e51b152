"""Wyoming text-to-speech server running GPT-SoVITS voice cloning in-process."""

import os

# Every entry point (server, CLI commands, benchmarks, tests) imports this package before torch:
# torch's OpenMP reads this once, when it loads. Idle OpenMP threads then sleep instead of
# spinning; on a busy 2-core machine spinning threads made decoding 5-17x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
