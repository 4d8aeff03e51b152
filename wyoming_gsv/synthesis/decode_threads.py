"""How many threads the GPT's decode steps get on the CPU, measured before a loaded model first speaks.

A decode step multiplies one row by every weight matrix, so it is bound by memory bandwidth, not
arithmetic. Where one core already draws all the bandwidth the machine gives it (small boxes,
virtual machines), a second thread adds CPU time and thread hand-offs but no speed; on a big
server it can still pay. Which one holds is a property of the machine and the model (int8
weights carry a quarter of the bytes), so it is timed: real steps of the loaded model, each thread
count in turn, interleaved, and the fewest threads within `TOLERANCE` of the fastest win (by
the median over all the steps timed at each count: single steps are noisy on a busy machine).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable

import torch

from ..gsv.t2s import BERT_DIM, SamplingParams, Text2Semantic, intra_op_threads

_LOGGER = logging.getLogger(__name__)

# More threads must make a step at least this much faster to be worth their CPU time.
TOLERANCE = 1.10
STEPS = 6  # decode steps timed per try (fewer than the 11 before EOS is allowed: none ends early)
ROUNDS = 3  # tries per thread count, interleaved
# A short prefix: its prefill is paid on every try, and the weights, not the KV length, set the
# cost of a step.
TEXT_PHONES = 16
PROMPT_CODES = 32

StepTimer = Callable[[int], list[float]]


def candidate_threads(most: int) -> list[int]:
    """1, 2, 4, ... below `most`, and `most` itself."""
    counts, count = [], 1
    while count < most:
        counts.append(count)
        count *= 2
    return counts + [most]


def pick_threads(seconds: dict[int, list[float]], tolerance: float = TOLERANCE) -> int:
    """The fewest threads whose median step time (seconds: every step timed at that count) is
    within `tolerance` of the fastest's."""
    medians = {threads: statistics.median(times) for threads, times in seconds.items()}
    fastest = min(medians.values())
    return min(threads for threads, median in medians.items() if median <= fastest * tolerance)


def step_timer(model: Text2Semantic) -> StepTimer:
    """A function timing `STEPS` real decode steps of `model` (through `generate`, sampler and
    all) at a given thread count: wall seconds of each step."""
    phones = torch.zeros(TEXT_PHONES, dtype=torch.long)
    bert = torch.zeros(BERT_DIM, TEXT_PHONES, dtype=model.dtype)
    prompt = torch.zeros(PROMPT_CODES, dtype=torch.long)
    params = SamplingParams(top_k=1, max_tokens=STEPS + 1, early_stop=STEPS + 1)

    def time_steps(threads: int) -> list[float]:
        stamps: list[float] = []
        saved = model.decode_threads
        model.decode_threads = threads
        try:
            model.generate(phones, bert, prompt, params, generator=torch.Generator(model.device).manual_seed(0),
                           on_token=lambda _token: stamps.append(time.perf_counter()))
        finally:
            model.decode_threads = saved
        return [b - a for a, b in zip(stamps, stamps[1:])]

    return time_steps


def choose_decode_threads(model: Text2Semantic, most: int, timer: StepTimer | None = None) -> int:
    """Times the model's decode steps at each candidate thread count up to `most` (this thread's
    count) and returns the one to use; logs what it measured."""
    if most <= 1 or model.device.type != "cpu":
        return most
    started = time.perf_counter()
    timer = timer or step_timer(model)
    counts = candidate_threads(most)
    seconds: dict[int, list[float]] = {count: [] for count in counts}
    with intra_op_threads(most):
        timer(most)  # warm-up: buffers, lazy initialisation
        for _ in range(ROUNDS):
            for count in counts:
                seconds[count] += timer(count)
    chosen = pick_threads(seconds)
    measured = ", ".join(f"{count}: {1000 * statistics.median(seconds[count]):.1f}" for count in counts)
    _LOGGER.info("GPT decode steps on %d of %d threads (ms per step by threads: %s; timed in %.1f s)",
                 chosen, most, measured, time.perf_counter() - started)
    return chosen
