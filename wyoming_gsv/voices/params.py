"""Sampling and decoding settings: voice defaults, overridable per request or on the command line."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class VoiceParams:
    """How a voice is sampled (t2s) and decoded (SoVITS). Defaults follow the official api_v2."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    speed: float = 1.0
    noise_scale: float = 0.5
    seed: int | None = None
    # Audio streaming within a sentence (upstream api_v2 streaming_mode): "fixed" = mode 3 (a
    # chunk every min_chunk_tokens tokens; the earliest first audio), "split" = mode 2 (chunks end
    # near a pause), "sentence" = whole sentences (no sub-sentence streaming).
    chunking: str = "fixed"
    # Semantic tokens per chunk at least (25 tokens = 1 s of audio). Upstream's default is 16; in
    # benchmarks/bench_upstream.py's sweep 12 gave the earliest first audio on 2 threads (0.65-0.67x
    # upstream's mode 3 on 1 and 2 threads, against 0.78-0.84x at 16) at about the same CPU time;
    # 10 was earlier only on 1 thread and cost the most CPU.
    min_chunk_tokens: int = 12
    sample_steps: int = 32  # SoVITS v3/v4: Euler steps of the mel sampler (fewer: faster, rougher)

    def __post_init__(self) -> None:
        # Types first: YAML and clients hand over strings, booleans or .nan, which would otherwise
        # fail deep in the model (or pass the range checks: True is an int, nan compares False).
        problems = [problem for name in _WHOLE + _REAL + _TEXT if (problem := self._type_problem(name)) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        problems = []
        if self.top_k < 1:
            problems.append("top_k must be >= 1")
        if not 0.0 < self.top_p <= 1.0:
            problems.append("top_p must be in (0, 1]")
        if self.temperature <= 0.0:
            problems.append("temperature must be > 0")
        if self.repetition_penalty <= 0.0:
            problems.append("repetition_penalty must be > 0")
        if not 0.25 <= self.speed <= 4.0:
            problems.append("speed must be in [0.25, 4]")
        if self.noise_scale < 0.0:
            problems.append("noise_scale must be >= 0")
        if self.chunking not in CHUNKING_MODES:
            problems.append(f"chunking must be one of {', '.join(CHUNKING_MODES)}, got {self.chunking!r}")
        if not 1 <= self.min_chunk_tokens <= 1500:
            problems.append("min_chunk_tokens must be in [1, 1500]")
        if not 1 <= self.sample_steps <= MAX_SAMPLE_STEPS:
            problems.append(f"sample_steps must be in [1, {MAX_SAMPLE_STEPS}]")
        if problems:
            raise ValueError("; ".join(problems))

    def _type_problem(self, name: str) -> str | None:
        value = getattr(self, name)
        if value is None and name == "seed":
            return None
        if name in _TEXT:
            return None if isinstance(value, str) else f"{name} must be a string, got {value!r}"
        if name in _WHOLE:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"{name} must be a whole number, got {value!r}"
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else f"{name} must be a number, got {value!r}"

    def with_overrides(self, **overrides: Any) -> "VoiceParams":
        """A copy with every override that is not None applied."""
        changes = {name: value for name, value in overrides.items() if value is not None}
        return replace(self, **changes) if changes else self


MAX_SAMPLE_STEPS = 128
_WHOLE = ("top_k", "seed", "min_chunk_tokens", "sample_steps")
_REAL = ("top_p", "temperature", "repetition_penalty", "speed", "noise_scale")
_TEXT = ("chunking",)
CHUNKING_MODES = ("fixed", "split", "sentence")
PARAM_NAMES: tuple[str, ...] = tuple(f.name for f in fields(VoiceParams))
