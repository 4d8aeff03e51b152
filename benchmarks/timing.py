"""Timing helpers shared by the benchmark scripts (imported as `timing`: each script's folder is on
sys.path when it runs)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def now() -> tuple[float, float]:
    """(wall, process CPU) seconds."""
    return time.perf_counter(), time.process_time()


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = now()
    fn()
    wall_end, cpu_end = now()
    return wall_end - wall, cpu_end - cpu


def medians_ms(samples: list[tuple[float, float]]) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of `timed` samples."""
    return (1000 * statistics.median(s[0] for s in samples),
            1000 * statistics.median(s[1] for s in samples))


def median_wall_s(fn: Callable[[], object], reps: int, synchronize: Callable[[], object] | None = None) -> float:
    """Median wall seconds of `reps` calls. With `synchronize` (a GPU's), each call is timed from
    after the work queued before it to the end of the work it queued (kernels run asynchronously)."""

    def once() -> float:
        if synchronize is not None:
            synchronize()
        start = time.perf_counter()
        fn()
        if synchronize is not None:
            synchronize()
        return time.perf_counter() - start

    return statistics.median(once() for _ in range(reps))
