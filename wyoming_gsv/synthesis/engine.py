"""One engine per device: worker threads run sentences of every session, in order, off the event loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .speech import EngineBusy, Speaker, Speech

_LOGGER = logging.getLogger(__name__)

# Requests spoken at once (workers) on a CUDA device unless set: their GPTs share each decode
# step (a step for several rows costs about what one row's does) and their vocoding overlaps on
# the GPU. On the CPU one request already keeps the cores busy: one worker there.
CUDA_CONCURRENT_REQUESTS = 4

# Called on the worker thread: (sentence index, audio piece or None, error or None, last). Each
# sentence gets zero or more pieces, then exactly one call with last=True (and no audio).
ResultCallback = Callable[[int, "Speech | None", "BaseException | None", bool], None]


@dataclass(eq=False)
class EngineJob:
    """The sentences of one session. At most one entry per job sits in the engine's queue, so the
    bound counts waiting requests, not sentences; a running job hands the worker back whenever
    its sentences run out (a stream waiting for more text never blocks others)."""

    speaker: Speaker
    on_result: ResultCallback
    cancelled: threading.Event = field(default_factory=threading.Event)
    _sentences: deque[tuple[int, str]] = field(default_factory=deque)
    _scheduled: bool = False
    _admitted: bool = False  # counted against the queue bound once, at its first sentence
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def cancel(self) -> None:
        self.cancelled.set()


class Engine:
    """Owns the worker threads; jobs queue with a bound and run one sentence at a time. With
    several workers, several jobs run at once (each on one worker at a time, so a job's
    sentences stay in order)."""

    def __init__(
        self,
        max_queue: int = 8,
        name: str = "gsv-engine",
        on_start: Callable[[], None] | None = None,
        workers: int = 1,
    ) -> None:
        if workers < 1:
            raise ValueError(f"an engine needs at least one worker, got {workers}")
        self.max_queue = max_queue
        self._on_start = on_start  # runs first on every worker thread (e.g. its torch thread count)
        # Unbounded: submit() bounds new requests only, so a stream already being answered is
        # never told "busy" when its next sentence arrives after its worker turn ended.
        self._queue: queue.Queue[EngineJob | None] = queue.Queue()
        names = [name] if workers == 1 else [f"{name}-{number}" for number in range(workers)]
        self._threads = [threading.Thread(target=self._run, name=thread_name, daemon=True) for thread_name in names]
        self._started = False
        self._closed = False
        self._jobs: "weakref.WeakSet[EngineJob]" = weakref.WeakSet()  # to cancel at close
        self._jobs_lock = threading.Lock()

    @property
    def workers(self) -> int:
        return len(self._threads)

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def close(self, timeout: float | None = 10.0) -> bool:
        """Stop the workers: running sentences stop at their next check (a generated token) and
        every waiting job is cancelled. False if a worker is still busy after `timeout`."""
        if self._started and not self._closed:
            self._closed = True
            with self._jobs_lock:
                jobs = list(self._jobs)
            for job in jobs:
                job.cancel()
            for _thread in self._threads:
                self._queue.put(None)  # one stop mark per worker
            deadline = None if timeout is None else time.monotonic() + timeout
            for thread in self._threads:
                thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def submit(self, job: EngineJob, index: int, sentence: str) -> None:
        """Queue one sentence of a job; raises EngineBusy when too many requests are waiting."""
        if self._closed:
            raise EngineBusy("the engine is shutting down")
        with job._lock:
            job._sentences.append((index, sentence))
            if job._scheduled:
                return
            if not job._admitted and self._queue.qsize() >= self.max_queue:
                job._sentences.pop()
                raise EngineBusy(f"too many requests waiting (limit {self.max_queue})")
            job._admitted = job._scheduled = True
            with self._jobs_lock:
                self._jobs.add(job)
            self._queue.put_nowait(job)

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._run_job(job)

    def _run_job(self, job: EngineJob) -> None:
        while True:
            with job._lock:
                if not job._sentences:
                    job._scheduled = False
                    return
                index, sentence = job._sentences.popleft()
            if job.cancelled.is_set():
                job.on_result(index, None, None, True)
                continue

            def emit(speech: Speech, index: int = index) -> None:
                if not job.cancelled.is_set():
                    job.on_result(index, speech, None, False)

            error = None
            try:
                job.speaker.prepare()
                pending = job.speaker.speak(sentence, job.cancelled.is_set, emit)
            except Exception as err:  # reported to the session, the worker keeps serving others
                _LOGGER.exception("Synthesis failed for sentence %d", index)
                error, pending = err, None
            if pending is not None:
                # The vocoder worker finishes this sentence (in order) while the GPT goes on.
                pending.when_done(lambda late_error, index=index: self._finished(job, index, late_error))
                continue
            job.on_result(index, None, error, True)

    @staticmethod
    def _finished(job: EngineJob, index: int, error: BaseException | None) -> None:
        if error is not None:
            _LOGGER.error("Synthesis failed for sentence %d", index, exc_info=error)
        job.on_result(index, None, error, True)
