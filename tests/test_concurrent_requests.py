"""Concurrent requests: engine workers side by side, and the GPTs of their requests batched on one
ContinuousBatcher (the tiny fixture models on the CPU, where the batcher runs "bucketed") while
each worker vocodes its own request's chunks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeVoice

from conftest import load_npz
from server_client import ha_synthesize, send_and_collect
from serving import serving, started_runtime
from voice_data import make_tiny_data_dir, make_voice, tiny_voice_config
from wyoming_gsv.gsv.checkpoints import load_gpt_checkpoint
from wyoming_gsv.gsv.streaming import StreamDecoder
from wyoming_gsv.gsv.t2s import MIN_TOKENS_BEFORE_EOS, GenerationCancelled, SamplingParams, Text2Semantic
from wyoming_gsv.gsv.t2s_batch import ContinuousBatcher, DecodeRequest
from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.synthesis.engine import Engine, EngineJob
from wyoming_gsv.synthesis.gsv_backend import BackendSettings, GsvBackend
from wyoming_gsv.synthesis.pipeline import decode_in_batch
from wyoming_gsv.synthesis.runtime import Runtime
from wyoming_gsv.synthesis.speech import EngineBusy, Speech
from wyoming_gsv.voices import BundleCache, ModelPaths

WAIT = 30.0  # seconds a test waits for something before it fails (never for a timing check)

# --------------------------------------------------------------------------------------- engine


class RecordingSpeaker:
    """Records (speaker, sentence, thread) as each sentence starts; `gate(text)` may block it
    (returning False fails the sentence: a test fails instead of hanging)."""

    def __init__(self, name: str, log: list[tuple[str, str, str]], gate: Callable[[str], bool] = lambda _text: True) -> None:
        self.name, self.log, self.gate = name, log, gate

    def prepare(self) -> None:
        pass

    def speak(self, text: str, should_stop, emit) -> None:
        self.log.append((self.name, text, threading.current_thread().name))
        if not self.gate(text):
            raise TimeoutError(f"{self.name}: gave up waiting at {text!r}")
        emit(Speech(rate=16000, samples=np.zeros(4, dtype=np.int16)))


class JobResults:
    """What a job reported, and an event once `sentences` sentences have ended."""

    def __init__(self, sentences: int) -> None:
        self.sentences = sentences
        self.calls: list[tuple[int, bool, BaseException | None]] = []
        self.done = threading.Event()

    def __call__(self, index: int, speech: Speech | None, error: BaseException | None, last: bool) -> None:
        self.calls.append((index, last, error))
        if sum(last for _index, last, _error in self.calls) == self.sentences:
            self.done.set()

    def in_order(self) -> bool:
        """Each sentence's audio, then its end, sentence after sentence, without errors."""
        expected = [(index, last, None) for index in range(self.sentences) for last in (False, True)]
        return self.calls == expected


def _submit(engine: Engine, job: EngineJob, sentences: list[str]) -> None:
    for index, sentence in enumerate(sentences):
        engine.submit(job, index, sentence)


def test_two_workers_speak_two_jobs_at_once_each_in_order() -> None:
    """Every sentence waits (on a barrier) for a sentence of the other job: with one job at a time
    the barrier times out and the sentence fails."""
    started_on: list[str] = []
    engine = Engine(workers=2, name="test-engine", on_start=lambda: started_on.append(threading.current_thread().name))
    meeting = threading.Barrier(2, timeout=WAIT)

    def meet(_text: str) -> bool:
        try:
            meeting.wait()
        except threading.BrokenBarrierError:
            return False
        return True

    log: list[tuple[str, str, str]] = []
    sentences = ["One.", "Two.", "Three."]
    results = {name: JobResults(len(sentences)) for name in ("a", "b")}
    engine.start()
    try:
        for name, result in results.items():
            _submit(engine, EngineJob(RecordingSpeaker(name, log, meet), result), sentences)
        assert all(result.done.wait(WAIT) for result in results.values())
    finally:
        assert engine.close()
    assert sorted(started_on) == ["test-engine-0", "test-engine-1"]  # on_start ran on every worker
    assert all(result.in_order() for result in results.values()), {n: r.calls for n, r in results.items()}
    for name in results:
        assert [text for speaker, text, _thread in log if speaker == name] == sentences


def test_a_job_runs_on_one_worker_at_a_time() -> None:
    """While a job's first sentence holds one worker, its later sentences wait for it: the idle
    worker serves another job meanwhile instead of running them out of order."""
    release = threading.Event()
    log: list[tuple[str, str, str]] = []
    engine = Engine(workers=2)
    engine.start()
    try:
        held = JobResults(3)
        held_job = EngineJob(RecordingSpeaker("held", log, lambda text: text != "First." or release.wait(WAIT)), held)
        engine.submit(held_job, 0, "First.")
        _until(lambda: len(log) == 1)
        engine.submit(held_job, 1, "Second.")
        engine.submit(held_job, 2, "Third.")
        other = JobResults(1)
        engine.submit(EngineJob(RecordingSpeaker("other", log, lambda _text: True), other), 0, "Other.")
        assert other.done.wait(WAIT)
        assert [text for speaker, text, _thread in log if speaker == "held"] == ["First."]
        release.set()
        assert held.done.wait(WAIT)
    finally:
        release.set()
        assert engine.close()
    assert held.in_order()
    assert [text for speaker, text, _thread in log if speaker == "held"] == ["First.", "Second.", "Third."]


def test_queue_bound_counts_waiting_requests_with_two_workers() -> None:
    release = threading.Event()
    log: list[tuple[str, str, str]] = []
    engine = Engine(max_queue=1, workers=2)
    engine.start()
    results = [JobResults(1) for _ in range(3)]
    try:
        for number, result in enumerate(results[:2]):  # one at a time: the bound is one waiting request
            engine.submit(EngineJob(RecordingSpeaker(f"busy{number}", log, lambda _text: release.wait(WAIT)), result), 0, "Hold.")
            _until(lambda: len(log) == number + 1)
        # Both workers busy, the queue empty again: one request may wait, the next is refused.
        engine.submit(EngineJob(RecordingSpeaker("waiting", log), results[2]), 0, "Wait.")
        with pytest.raises(EngineBusy, match="limit 1"):
            engine.submit(EngineJob(RecordingSpeaker("refused", log), JobResults(1)), 0, "No room.")
        release.set()
        assert all(result.done.wait(WAIT) for result in results)
    finally:
        release.set()
        assert engine.close()
    assert all(result.in_order() for result in results)
    assert "refused" not in {speaker for speaker, _text, _thread in log}


def test_engine_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Engine(workers=0)


def _until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


# ------------------------------------------------------------------------- decode_in_batch


@pytest.fixture(scope="module")
def golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "t2s_golden.npz")


@pytest.fixture(scope="module")
def model(v2_tiny: Path, one_torch_thread) -> Text2Semantic:
    return Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"))


SMALL = SamplingParams(top_k=1, max_tokens=100)  # fits the 512 KV positions of the test batchers


def _request(golden, cut: int = 0, params: SamplingParams = SMALL) -> DecodeRequest:
    phones = torch.from_numpy(golden["all_phones"])
    bert = torch.from_numpy(golden["all_bert"])
    n = len(phones) - cut
    return DecodeRequest(phones[:n], bert[:, :n], torch.from_numpy(golden["prompt_semantic"]), params)


def _alone(model: Text2Semantic, request: DecodeRequest) -> list[int]:
    return model.generate(request.phone_ids, request.bert, request.prompt, request.params).tolist()


@pytest.fixture
def batcher(model: Text2Semantic):
    batcher = ContinuousBatcher(model, max_rows=2, max_len=512)
    batcher.start()
    yield batcher
    batcher.close()


def test_tokens_reach_the_calling_thread_while_the_batcher_decodes(model, batcher, golden) -> None:
    request = _request(golden)
    expected = _alone(model, request)
    seen: list[tuple[int, str]] = []
    codes = decode_in_batch(batcher, request, lambda token: seen.append((token, threading.current_thread().name)),
                            torch.device("cpu"))
    assert codes.tolist() == expected
    assert {thread for _token, thread in seen} == {threading.current_thread().name}
    assert [token for token, _thread in seen][: len(expected)] == expected


def test_a_bad_request_fails_alone_and_the_other_finishes(model, batcher, golden) -> None:
    good = _request(golden)
    too_long = _request(golden, cut=4, params=SamplingParams(top_k=1, max_tokens=1000))  # more than 512 KV positions
    expected = _alone(model, good)
    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(decode_in_batch, batcher, good, None, torch.device("cpu"))
        with pytest.raises(ValueError, match="KV positions"):
            pool.submit(decode_in_batch, batcher, too_long, None, torch.device("cpu")).result(WAIT)
        assert other.result(WAIT).tolist() == expected


def test_a_failing_step_fails_the_waiting_request(model, batcher, golden, monkeypatch) -> None:
    def broken_step(*_args, **_kwargs):
        raise RuntimeError("the decode step broke")

    monkeypatch.setattr(model, "decode_step", broken_step)  # every static step (fused or not) runs it
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(decode_in_batch, batcher, _request(golden), lambda _token: None, torch.device("cpu"))
        with pytest.raises(RuntimeError, match="the decode step broke"):
            waiting.result(WAIT)


def test_a_failing_chunk_takes_its_row_out_of_the_batch(batcher, golden, monkeypatch) -> None:
    left: list[type | None] = []
    leave = ContinuousBatcher._leave

    def spied_leave(self, indices, cache, error):
        left.extend([error] * len(indices))
        return leave(self, indices, cache, error)

    monkeypatch.setattr(ContinuousBatcher, "_leave", spied_leave)

    def failing_vocoder(_token: int) -> None:
        raise OSError("the vocoder broke")

    with pytest.raises(OSError, match="the vocoder broke"):
        decode_in_batch(batcher, _request(golden), failing_vocoder, torch.device("cpu"))
    _until(batcher.idle)
    assert left == [GenerationCancelled]  # it left at a step, as a cancelled request does


def test_closing_the_batcher_ends_the_wait(model, golden) -> None:
    batcher = ContinuousBatcher(model, max_rows=1, max_len=512)  # not started: the request just waits

    def close_once_queued() -> None:
        _until(lambda: not batcher.idle())
        batcher.close()

    closer = threading.Thread(target=close_once_queued)
    closer.start()
    with pytest.raises(GenerationCancelled):
        decode_in_batch(batcher, _request(golden), lambda _token: None, torch.device("cpu"))
    closer.join(WAIT)


# ------------------------------------------------------------------------- backend: batchers


@pytest.fixture(scope="module")
def data_dir(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny data dir plus two voices on the same models that sample (with their own settings
    and seeds), add noise in SoVITS and stream small chunks."""
    root = make_tiny_data_dir(tmp_path_factory.mktemp("concurrent-data"), unpacked_v2)
    for voice_id, settings in VOICES.items():
        make_voice(root, voice_id, reference=unpacked_v2["ref_wav"], config=tiny_voice_config(**settings))
    return root


VOICES = {
    "a": {"top_k": 15, "temperature": 1.0, "noise_scale": 0.5, "seed": 11, "min_chunk_tokens": 4},
    "b": {"top_k": 5, "temperature": 0.8, "noise_scale": 0.6, "seed": 22, "min_chunk_tokens": 4},
}
TEXT_A = "Hello there, this is the first voice. It speaks two sentences."
TEXT_B = "And this one is the other request. It also has two."


def _top_k(voice_id: str) -> int:
    return VOICES[voice_id]["top_k"]


def test_batchers_close_with_their_model_pair(data_dir: Path, tmp_path: Path) -> None:
    """An unloaded pair's batcher closes once its last sentence is done; the backend's close()
    closes the rest."""
    models = ModelPaths.resolve(data_dir)
    other_gpt = tmp_path / "other-gpt.ckpt"
    other_gpt.symlink_to(models.gpt)  # another path: another pair, of the same tiny model
    backend = GsvBackend(models, BundleCache(tmp_path / "cache"), BackendSettings(max_model_pairs=1, concurrent_requests=2))
    first = backend.model_pair(models.gpt, models.sovits)
    with backend.batcher(first) as in_use:
        assert in_use.idle()
        second = backend.model_pair(other_gpt, models.sovits)  # unloads the first pair
        assert first.evicted and _batcher_running(in_use)  # still in use: kept
    assert not _batcher_running(in_use)
    with backend.batcher(second) as last:
        pass
    assert _batcher_running(last)
    backend.close()
    assert not _batcher_running(last)


def _batcher_running(batcher: ContinuousBatcher) -> bool:
    return batcher._thread is not None and batcher._thread.is_alive()


# ------------------------------------------------------------------------- over TCP


class BatcherSpy:
    """Watches every ContinuousBatcher through class-level patches (undone by monkeypatch): the
    rows after each step, the requests submitted and those that left cancelled (by top_k, which
    tells the test voices apart), and the threads steps ran on. `hold(condition, until)`: while
    `condition(batcher)` holds, a step waits until `until(batcher)` is true (or WAIT passes)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows_after_step: list[int] = []
        self.step_threads: set[str] = set()
        self.submitted: list[int] = []
        self.cancelled: list[int] = []
        self.held = threading.Event()
        self._holds: list[tuple[Callable[[ContinuousBatcher], bool], Callable[[ContinuousBatcher], bool]]] = []
        self._submit_counts: list[tuple[int, threading.Event]] = []  # set once that many were submitted
        step, leave, submit = ContinuousBatcher.step, ContinuousBatcher._leave, ContinuousBatcher.submit

        def spied_step(batcher: ContinuousBatcher) -> None:
            for condition, until in self._holds:
                if condition(batcher) and not until(batcher):
                    self.held.set()
                    deadline = time.monotonic() + WAIT
                    while not until(batcher) and time.monotonic() < deadline:
                        time.sleep(0.005)
            step(batcher)
            self.rows_after_step.append(batcher.rows)
            self.step_threads.add(threading.current_thread().name)

        def spied_leave(batcher: ContinuousBatcher, indices, cache, error) -> None:
            if error is GenerationCancelled:
                self.cancelled += [batcher._rows[index].request.params.top_k for index in indices]
            leave(batcher, indices, cache, error)

        def spied_submit(batcher: ContinuousBatcher, request: DecodeRequest):
            future = submit(batcher, request)
            self.submitted.append(request.params.top_k)
            for count, reached in self._submit_counts:
                if len(self.submitted) >= count:
                    reached.set()
            return future

        monkeypatch.setattr(ContinuousBatcher, "step", spied_step)
        monkeypatch.setattr(ContinuousBatcher, "_leave", spied_leave)
        monkeypatch.setattr(ContinuousBatcher, "submit", spied_submit)

    def hold(self, condition: Callable[[ContinuousBatcher], bool], until: Callable[[ContinuousBatcher], bool]) -> None:
        self._holds.append((condition, until))

    def hold_until_submitted(self, count: int) -> None:
        """No step until `count` requests were submitted: they all join the batch at once."""
        reached = threading.Event()
        self._submit_counts.append((count, reached))
        self.hold(lambda _batcher: True, lambda _batcher: reached.is_set())


def _rows_of(batcher: ContinuousBatcher, voice_id: str) -> list:
    return [row for row in batcher._rows if row.request.params.top_k == _top_k(voice_id)]


def _row_past(voice_id: str, samples: int) -> Callable[[ContinuousBatcher], bool]:
    """Whether the batcher holds a row of the voice that has drawn `samples` samples."""
    return lambda batcher: any(row.samples >= samples for row in _rows_of(batcher, voice_id))


def _row_told_to_stop(voice_id: str) -> Callable[[ContinuousBatcher], bool]:
    """Whether the voice's row would leave at the next step (its request's should_stop is true)."""
    return lambda batcher: any(row.request.should_stop() for row in _rows_of(batcher, voice_id))


# EOS cannot come before this many samples: a row held there is surely still running.
STILL_RUNNING = MIN_TOKENS_BEFORE_EOS - 1


@pytest.fixture(scope="module")
def runtime(data_dir: Path):
    with started_runtime(data_dir, max_chars=1000, concurrent_requests=2) as runtime:
        yield runtime


@pytest.fixture
async def port(runtime: Runtime):
    async with serving(runtime, HandlerSettings(samples_per_chunk=1024)) as port:
        yield port


def test_warm_up_batches_two_sentences(data_dir: Path, monkeypatch) -> None:
    """With concurrent requests the warm-up speaks twice at once, so the GPT's batched steps
    (several rows: on CUDA their own compiled program and graphs) exist before the first
    requests come."""
    spy = BatcherSpy(monkeypatch)
    spy.hold_until_submitted(2)
    with started_runtime(data_dir, concurrent_requests=2):
        assert len(spy.submitted) == 2 and max(spy.rows_after_step) == 2
    monkeypatch.undo()
    spy_alone = BatcherSpy(monkeypatch)
    with started_runtime(data_dir, concurrent_requests=1):
        assert spy_alone.submitted == []  # one request at a time: no batcher


def test_the_runtime_serves_two_requests_at_once(runtime: Runtime) -> None:
    assert runtime.engine.workers == 2
    assert runtime.backend.batches and runtime.backend.audio_worker() is None


async def test_requests_together_sound_as_they_do_alone(port: int, runtime: Runtime, monkeypatch) -> None:
    alone = [await ha_synthesize(port, TEXT_A, voice="a"), await ha_synthesize(port, TEXT_B, voice="b")]
    assert all(result.error is None and result.audio for result in alone)
    assert alone[0].audio != alone[1].audio
    spy = BatcherSpy(monkeypatch)
    spy.hold_until_submitted(2)
    chunk_threads: set[str] = set()
    piece = StreamDecoder.piece

    def spied_piece(decoder, *args, **kwargs):
        chunk_threads.add(threading.current_thread().name)
        return piece(decoder, *args, **kwargs)

    monkeypatch.setattr(StreamDecoder, "piece", spied_piece)
    together = await asyncio.gather(ha_synthesize(port, TEXT_A, voice="a"), ha_synthesize(port, TEXT_B, voice="b"))
    assert [result.error for result in together] == [None, None]
    assert together[0].audio == alone[0].audio
    assert together[1].audio == alone[1].audio
    assert max(spy.rows_after_step) == 2  # the batcher really held both requests at once
    assert sorted(spy.submitted) == sorted([_top_k("a"), _top_k("b")] * 2)  # two sentences each
    # The GPT ran on the batcher's thread; every chunk was vocoded on its request's worker.
    assert spy.step_threads == {"t2s-batcher"}
    assert chunk_threads == {f"gsv-engine-{runtime.settings.device}-{number}" for number in range(2)}


async def test_a_disconnected_request_leaves_the_batch_while_the_other_finishes(
    port: int, runtime: Runtime, monkeypatch
) -> None:
    alone = await ha_synthesize(port, TEXT_B, voice="b")
    spy = BatcherSpy(monkeypatch)
    spy.hold_until_submitted(2)
    # Request a stays in the batch, mid-sentence, until the server has cancelled it.
    spy.hold(_row_past("a", STILL_RUNNING), _row_told_to_stop("a"))
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Synthesize(text=" ".join([TEXT_A] * 3), voice=SynthesizeVoice(name="a")).event())
    other = asyncio.create_task(ha_synthesize(port, TEXT_B, voice="b"))
    while True:  # a's first streamed chunk: it is speaking
        event = await asyncio.wait_for(client.read_event(), WAIT)
        assert event is not None and event.type != "error"
        if event.type == "audio-chunk":
            break
    await client.disconnect()
    result = await asyncio.wait_for(other, WAIT * 2)
    assert result.error is None and result.audio == alone.audio
    assert spy.cancelled == [_top_k("a")]  # a's row left at a step, cancelled
    assert spy.submitted.count(_top_k("a")) == 1  # and none of its later sentences reached the GPT
    assert 2 in spy.rows_after_step and spy.rows_after_step[-1] == 0


async def test_a_bad_request_gets_its_error_while_a_batched_one_finishes(port: int, monkeypatch) -> None:
    alone = await ha_synthesize(port, TEXT_B, voice="b")
    answered = threading.Event()
    spy = BatcherSpy(monkeypatch)
    spy.hold(_row_past("b", STILL_RUNNING), lambda _batcher: answered.is_set())  # b stays mid-sentence until the error is out
    other = asyncio.create_task(ha_synthesize(port, TEXT_B, voice="b"))
    assert await asyncio.get_running_loop().run_in_executor(None, spy.held.wait, WAIT)
    received = await send_and_collect(port, [Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event()])
    answered.set()
    assert [event.type for event in received] == ["error"]
    assert Error.from_event(received[0]).code == "unknown-voice"
    result = await asyncio.wait_for(other, WAIT * 2)
    assert result.error is None and result.audio == alone.audio
