"""Continuous batching of the t2s GPT: concurrent requests share each decode step.

Every request becomes one row of a static KV cache. Rows join and leave between steps: a new
request is prefilled into the next free row and takes its first sample from that prefill; rows
already running advance by one `Text2Semantic.decode_step` together (per-row cache columns,
audio positions and valid-column masks, so rows of different lengths share it; on CUDA a graph
per (row count, KV bucket)). Each row keeps its own sampling settings and generator and is
sampled exactly as `Text2Semantic.generate` samples a single sentence, so with deterministic
settings a request's tokens do not depend on the other rows. Rows that share their settings
(the usual case: one voice) are sampled inside the step (`Text2Semantic.sample_static`, on CUDA
one graph per row count, bucket and settings), each from its own generator. A row that ends
(EOS, early stop, its token cap) or whose `should_stop()` turns True leaves before the next
step; the last row moves into its place, keeping the running rows contiguous.

`step()` runs one round on the caller's thread (tests drive it directly); `start()` runs rounds
on a worker thread until `close()`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .t2s import (
    HARD_CAP_TOKENS,
    MIN_TOKENS_BEFORE_EOS,
    DecodeMode,
    DecodePath,
    GenerationCancelled,
    KVCache,
    SamplerSpec,
    SamplingParams,
    Text2Semantic,
    kv_bucket,
    official_slice,
    sample_rows,
)

# Room for the longest request: the token cap after a prefix of up to ~500 positions.
DEFAULT_MAX_LEN = kv_bucket(HARD_CAP_TOKENS + 500)


@dataclass
class DecodeRequest:
    """One sentence, as `Text2Semantic.generate` takes it."""

    phone_ids: Tensor
    bert: Tensor
    prompt: Tensor | None
    params: SamplingParams = field(default_factory=SamplingParams)
    generator: torch.Generator | None = None
    should_stop: Callable[[], bool] | None = None
    on_token: Callable[[int], None] | None = None  # called on the thread running step()
    path: DecodePath = "batched"


@dataclass
class _Row:
    """A request holding a cache row: where its prefix ends and how far it has got."""

    request: DecodeRequest
    future: Future[Tensor]
    prefix_len: int
    prompt_len: int
    early_stop: int | None
    tokens: list[int] = field(default_factory=list)
    samples: int = 0  # samples drawn so far (the accepted tokens, plus a final EOS)
    finished_by_eos: bool = False

    @property
    def written(self) -> int:
        """Cache columns holding this row's keys/values (the prefix, then one per fed token)."""
        return self.prefix_len + max(self.samples - 1, 0)


class ContinuousBatcher:
    """Runs the GPT for several requests at once; `submit` returns a Future of the tokens that
    `generate` would return (or raises GenerationCancelled / ValueError through it)."""

    def __init__(self, model: Text2Semantic, max_rows: int = 8, max_len: int = DEFAULT_MAX_LEN,
                 mode: DecodeMode | None = None,
                 on_start: Callable[[], None] | None = None) -> None:
        mode = mode or ("graph" if model.device.type == "cuda" else "bucketed")
        if mode == "exact":
            raise ValueError("rows of different lengths need the static-shape step "
                             "('bucketed' or 'graph'), not 'exact'")
        if mode == "graph" and model.device.type != "cuda":
            raise ValueError("decode mode 'graph' (CUDA graphs) needs a model on a CUDA device")
        self.model, self.max_rows, self.max_len, self.mode = model, max_rows, max_len, mode
        self._cache: KVCache | None = None
        self._rows: list[_Row] = []  # row i of the cache, in order; touched by step() only
        self._next_tokens: Tensor | None = None  # each row's last sample, to feed next [rows]
        # A fused step's advanced (tokens, positions, audio_index), valid while the rows stay.
        self._fused_state: tuple[Tensor, ...] | None = None
        self._waiting: deque[tuple[DecodeRequest, Future[Tensor]]] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        # Runs first on the worker thread started by start() (e.g. to give it its own CUDA stream).
        self._on_start = on_start

    # ---------------------------------------------------------------------------- requests

    def submit(self, request: DecodeRequest) -> Future[Tensor]:
        future: Future[Tensor] = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._waiting.append((request, future))
            self._wake.notify()
        return future

    @property
    def rows(self) -> int:
        """Requests holding a row now."""
        return len(self._rows)

    def idle(self) -> bool:
        with self._wake:
            return not self._waiting and not self._rows

    def run_until_idle(self) -> None:
        while not self.idle():
            self.step()

    # ---------------------------------------------------------------------------- worker

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="t2s-batcher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the worker; requests not finished fail with GenerationCancelled."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join()
        self._fail_all(GenerationCancelled())
        if self._cache is not None:
            self.model.release_caches(self._cache)
            self._cache = None

    def _serve(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception as err:  # no worker: every request, now or later, fails instead of waiting
                with self._wake:
                    self._closed = True
                self._fail_all(err)
                return
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._rows:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                self.step()
            except Exception as err:  # a failing step fails its requests, not the worker
                self._fail_all(err)

    def _fail_all(self, error: BaseException) -> None:
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        for _request, future in waiting:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)
        for row in self._rows:
            row.future.set_exception(error)
        self._rows, self._next_tokens, self._fused_state = [], None, None

    # ---------------------------------------------------------------------------- one round

    @torch.inference_mode()
    def step(self) -> None:
        """Cancelled rows leave; the running rows advance one decode step; waiting requests
        join (prefill) while rows are free; every row then draws its next sample. Running rows
        that share their sampling settings take the fused step (sampler inside the CUDA
        graph); otherwise, and for the rows that just joined, the sampler runs row by row."""
        cache = self._buffers()
        self._leave([index for index, row in enumerate(self._rows)
                     if row.request.should_stop is not None and row.request.should_stop()],
                    cache, GenerationCancelled)
        drawn: list[tuple[Tensor, list[int], list[int]]] = []  # (samples, tokens, ended) in row order
        logits: list[Tensor] = []
        if self._rows:
            sampler = self._shared_sampler()
            if sampler is not None:
                drawn.append(self._sample_fused(cache, sampler))
            else:
                self._fused_state = None  # the graph's own inputs fall behind: fed afresh
                logits.append(self._decode_running(cache))
        sampled_rows = len(drawn[0][1]) if drawn else 0
        logits += self._admit(cache)
        if logits:
            drawn.append(self._sample(cache, sampled_rows,
                                      torch.cat(logits) if len(logits) > 1 else logits[0]))
        if drawn:
            self._record(drawn, cache)

    def _shared_sampler(self) -> SamplerSpec | None:
        """The settings every running row samples with this step, if they are the same."""
        specs = {SamplerSpec.of(row.request.params, row.samples) for row in self._rows}
        return specs.pop() if len(specs) == 1 else None

    def _sample_fused(self, cache: KVCache,
                      sampler: SamplerSpec) -> tuple[Tensor, list[int], list[int]]:
        """One fused step for the running rows: fed from the graph's own advanced inputs while
        the rows stay the same, else from the rows' book-keeping."""
        rows = self._rows
        state = self._fused_state
        if state is None:
            assert self._next_tokens is not None
            device = cache.k.device
            state = (self._next_tokens,
                     torch.tensor([row.prefix_len + row.samples - 1 for row in rows], device=device),
                     torch.tensor([row.prompt_len + row.samples - 1 for row in rows], device=device))

        def draw_noise(noise: Tensor) -> None:  # each row from its own generator, in row order
            for index, row in enumerate(rows):
                noise[index : index + 1].exponential_(1.0, generator=row.request.generator)

        length = max(row.prefix_len + row.samples for row in rows)
        *state, out = self.model.sample_static(*state, cache.rows(len(rows)), length, sampler,
                                               draw_noise, graphed=self.mode == "graph")
        self._fused_state = tuple(state)
        tokens, ended = out.tolist()
        return state[0], tokens, ended

    def _buffers(self) -> KVCache:
        if self._cache is None:
            self._cache = self.model.setup_caches(self.max_rows, self.max_len)
            self._cache.make_finite()
        return self._cache

    def _decode_running(self, cache: KVCache) -> Tensor:
        assert self._next_tokens is not None
        device = cache.k.device
        columns = [row.prefix_len + row.samples - 1 for row in self._rows]
        positions = torch.tensor(columns, device=device)
        audio_index = torch.tensor([row.prompt_len + row.samples - 1 for row in self._rows],
                                   device=device)
        return self.model.static_step(self._next_tokens, positions, audio_index,
                                      cache.rows(len(self._rows)), max(columns) + 1,
                                      graphed=self.mode == "graph")

    def _admit(self, cache: KVCache) -> list[Tensor]:
        """Prefill waiting requests into the free rows after the running ones; their logits."""
        model, cfg, joined = self.model, self.model.config, []
        while len(self._rows) < self.max_rows:
            with self._wake:
                if not self._waiting:
                    break
                request, future = self._waiting.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # Future.cancel() while it waited
            if request.should_stop is not None and request.should_stop():
                future.set_exception(GenerationCancelled())
                continue
            prompt_len = 0 if request.prompt is None else request.prompt.numel()
            prefix_len = request.phone_ids.numel() + prompt_len
            try:
                model.check_inputs([request.phone_ids], [request.bert], request.prompt)
                if prefix_len + request.params.max_tokens > cache.capacity:
                    raise ValueError(f"the request needs {prefix_len + request.params.max_tokens}"
                                     f" KV positions; the batcher holds {cache.capacity}")
            except ValueError as err:
                future.set_exception(err)
                continue
            early_stop = request.params.early_stop
            row = _Row(request, future, prefix_len, prompt_len,
                       cfg.early_stop_num if early_stop is None else early_stop)
            joined.append(model.prefill([request.phone_ids], [request.bert], request.prompt,
                                        cache.rows(1, start=len(self._rows))))
            self._rows.append(row)
            self._fused_state = None
        return joined

    def _sample(self, cache: KVCache, first: int,
                logits: Tensor) -> tuple[Tensor, list[int], list[int]]:
        """Rows `first`.. sampled one by one as `generate` samples one sentence (their logits
        in order); one host sync for all of them. Their samples go to the history."""
        eos, history = self.model.config.eos, cache.full.history
        rows = self._rows[first:]
        logits = logits.float()
        samples, ends = [], []
        for index, row in enumerate(rows):
            sample, end = sample_rows(logits[index : index + 1],
                                      history[first + index : first + index + 1,
                                              : row.prompt_len + row.samples],
                                      row.request.params, eos=eos,
                                      eos_allowed=row.samples >= MIN_TOKENS_BEFORE_EOS,
                                      generator=row.request.generator)
            samples.append(sample)
            ends.append(end)
        sampled = torch.cat(samples)
        tokens, ended = torch.stack((sampled, torch.cat(ends).long())).tolist()
        device = sampled.device
        history[torch.arange(first, first + len(rows), device=device),
                torch.tensor([row.prompt_len + row.samples for row in rows],
                             device=device)] = sampled
        return sampled, tokens, ended

    def _record(self, drawn: list[tuple[Tensor, list[int], list[int]]], cache: KVCache) -> None:
        """Every row's new sample: its tokens and callbacks, the rows that end, the next feed."""
        tokens = [token for _samples, row_tokens, _ended in drawn for token in row_tokens]
        ended = [end for _samples, _tokens, row_ended in drawn for end in row_ended]
        finished, failed = [], []
        for index, row in enumerate(self._rows):
            step = row.samples
            row.samples += 1
            if ended[index]:
                row.finished_by_eos = True
            else:
                row.tokens.append(tokens[index])
                if row.request.on_token is not None:
                    try:
                        row.request.on_token(tokens[index])
                    except Exception as err:  # the caller's callback fails its own request
                        failed.append((index, err))
                        continue
            cap = step == row.request.params.max_tokens - 1
            if ended[index] or cap or (row.early_stop is not None and step + 1 > row.early_stop):
                finished.append(index)
        for index in finished:
            row = self._rows[index]
            row.future.set_result(official_slice(row.tokens, row.finished_by_eos,
                                                 row.request.prompt is not None,
                                                 row.request.path))
        for index, err in failed:
            self._rows[index].future.set_exception(err)
        self._next_tokens = (drawn[0][0] if len(drawn) == 1
                             else torch.cat([samples for samples, _tokens, _ended in drawn]))
        self._leave(sorted(finished + [index for index, _err in failed]), cache, None)

    def _leave(self, indices: list[int], cache: KVCache,
               error: type[BaseException] | None) -> None:
        """Rows `indices` leave (failing with `error` if given); the last row fills each hole."""
        order = list(range(len(self._rows)))
        if indices:
            self._fused_state = None
        for hole in sorted(indices, reverse=True):
            if error is not None:
                self._rows[hole].future.set_exception(error())
            last = len(self._rows) - 1
            if hole != last:
                cache.move_row(last, hole, self._rows[last].written + 1)
                self._rows[hole], order[hole] = self._rows[last], order[last]
            self._rows.pop()
            order.pop()
        if indices and self._next_tokens is not None:
            self._next_tokens = (self._next_tokens.index_select(
                0, torch.tensor(order, device=self._next_tokens.device)) if order else None)
