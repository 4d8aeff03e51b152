"""GPT and SoVITS on two threads: while the vocoder turns chunk n into audio, the GPT makes n+1.

On the CPU with one request at a time, the engine's thread runs the GPT; an `AudioWorker` thread
runs every SoVITS call, in the order they were handed over, each thread with its own torch
intra-op threads. A sentence's audio is tracked by a `PendingAudio`: the engine reports the
sentence finished from the worker, after its last piece, so pieces and sentence ends reach the
session in order while the GPT goes on with the next sentence.

With concurrent requests, the GPT runs on a `ContinuousBatcher`'s thread and each request's own
engine worker vocodes its chunks (`decode_in_batch`); on CUDA each of those threads has its own
stream (`use_own_cuda_stream`).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Callable

import torch

from ..gsv.t2s_batch import ContinuousBatcher, DecodeRequest

_LOGGER = logging.getLogger(__name__)

Done = Callable[["BaseException | None"], None]


class PendingAudio:
    """The audio of one sentence still being made on the worker. Tasks of a sentence that failed
    or was cancelled are skipped; `when_done` runs (on the worker) after the last of them."""

    def __init__(self, worker: AudioWorker, should_stop: Callable[[], bool]) -> None:
        self.worker = worker
        self.should_stop = should_stop
        self.error: BaseException | None = None
        self._finished = threading.Event()

    def submit(self, task: Callable[[], None]) -> None:
        self.worker.put(lambda: self._run(task))

    def run_here_if_idle(self, task: Callable[[], None]) -> None:
        """Run `task` on the calling thread if the worker has nothing left to do (so the order
        is kept), else hand it over."""
        if self.worker.idle:
            self._run(task)
        else:
            self.submit(task)

    def _run(self, task: Callable[[], None]) -> None:
        if self.error is not None or self.should_stop():
            return
        try:
            task()
        except Exception as err:  # reported (and logged) with the sentence, like an error of the GPT
            self.error = err

    def when_done(self, callback: Done) -> None:
        """Run `callback(error)` once every task submitted so far has run."""

        def finish() -> None:
            self._finished.set()
            callback(self.error)

        self.worker.put(finish)

    def wait(self) -> None:
        """Block until the sentence's audio is out (raises its error): the serial behaviour."""
        self.when_done(lambda _error: None)
        self._finished.wait()
        if self.error is not None:
            raise self.error


class AudioWorker:
    """One thread running vocoder tasks in order, with its own number of torch threads."""

    def __init__(self, threads: int, name: str = "gsv-vocoder") -> None:
        self.threads = threads
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, task: Callable[[], None]) -> None:
        self._queue.put(task)

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing running."""
        return self._queue.unfinished_tasks == 0

    def close(self, timeout: float | None = 10.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        torch.set_num_threads(self.threads)  # this thread's OpenMP team only
        with torch.inference_mode():  # thread-local: the tasks handle the GPT thread's inference tensors
            self._serve()

    def _serve(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            try:
                task()
            except Exception:  # a callback failing must not stop the worker
                _LOGGER.exception("Audio worker task failed")
            finally:
                self._queue.task_done()


def use_own_cuda_stream(device: torch.device) -> None:
    """Give the calling thread a CUDA stream of its own. PyTorch's current stream is per thread
    and starts as the device's default stream, on which the work of every thread would queue;
    on streams of their own, one request's SoVITS overlaps another's and the batcher's GPT."""
    torch.cuda.set_stream(torch.cuda.Stream(device))


def settle_cuda_work(device: torch.device) -> None:
    """Wait for the calling thread's queued GPU work, so another thread, on its own stream, can
    read what it made (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def decode_in_batch(
    batcher: ContinuousBatcher, request: DecodeRequest, on_token: Callable[[int], None] | None, device: torch.device
) -> torch.Tensor:
    """The sentence's GPT tokens (as `generate` returns them) from the shared batcher. Its thread
    only queues each token; the calling thread hands them to `on_token` (the streamed SoVITS
    chunks), so a chunk is vocoded here while the batcher already computes the next steps.
    Raises what the batcher raises (GenerationCancelled, a bad request's ValueError, a failed
    step's error); a failing `on_token` takes the request out of the batch at its next step."""
    tokens: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    abandoned = threading.Event()
    should_stop = request.should_stop
    request.should_stop = lambda: abandoned.is_set() or (should_stop is not None and should_stop())
    request.on_token = tokens.put if on_token is not None else None
    settle_cuda_work(device)  # the batcher reads the inputs on its own stream
    future = batcher.submit(request)
    # Runs once the request has left the batch, however it left (after its last token): the
    # wait below always ends.
    future.add_done_callback(lambda _done: tokens.put(None))
    try:
        # In inference mode as within `generate`: the chunks join SoVITS's outputs in place.
        with torch.inference_mode():
            while (token := tokens.get()) is not None:
                if on_token is not None:
                    on_token(token)
    except BaseException:
        abandoned.set()
        raise
    return future.result()
