"""benchmarks/bench_gpu.py is for CUDA machines: elsewhere it refuses in one line, up front."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
@pytest.mark.parametrize("device", [[], ["--device", "cuda:1"]])
def test_refuses_without_cuda(device: list[str]) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), *device],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bench_gpu: no CUDA device"), result.stderr
