"""Engine worker, sessions (ordering, streaming, cancellation, errors) and request text checks."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from wyoming_gsv.synthesis.engine import Engine, EngineJob
from wyoming_gsv.synthesis.session import SpeechSession
from wyoming_gsv.synthesis.speech import BadRequest, EngineBusy, Speech, SynthesisError, float_to_int16
from wyoming_gsv.synthesis.text_checks import has_speakable
from wyoming_gsv.text.scripts import ModeSpan, SpeakableText, drop_unspeakable, spans_by_script
from wyoming_gsv.text.sentences import SentenceSplitter


class FakeSpeaker:
    """Speaks each sentence as `len(text)` samples equal to its index, in `steps` decode steps."""

    def __init__(self, steps: int = 1, step_seconds: float = 0.0, fail_on: str | None = None) -> None:
        self.steps = steps
        self.step_seconds = step_seconds
        self.fail_on = fail_on
        self.spoken: list[str] = []
        self.steps_after_stop = 0
        self.prepared = 0
        self.started = threading.Event()

    def prepare(self) -> None:
        self.prepared += 1

    def speak(self, text: str, should_stop, emit) -> None:
        self.started.set()
        if self.fail_on and self.fail_on in text:
            raise RuntimeError("model exploded")
        for _ in range(self.steps):
            if should_stop():
                return
            time.sleep(self.step_seconds)
        self.spoken.append(text)
        # Two pieces per sentence, as a chunked vocoder makes them.
        half = len(text) // 2
        emit(Speech(rate=16000, samples=np.full(half, len(self.spoken), dtype=np.int16)))
        emit(Speech(rate=16000, samples=np.full(len(text) - half, len(self.spoken), dtype=np.int16)))


@pytest.fixture
def engine():
    engine = Engine(max_queue=2)
    engine.start()
    yield engine
    engine.close()


def _session(engine: Engine, speaker: FakeSpeaker, language: str = "en", max_chars: int = 500) -> SpeechSession:
    return SpeechSession(engine, speaker, SentenceSplitter(), language=language, max_chars=max_chars)


async def _collect(session: SpeechSession) -> list[Speech]:
    """One Speech per sentence (its pieces joined), checking the piece flags on the way."""
    sentences: list[Speech] = []
    current: list[Speech] = []
    async for piece in session.pieces():
        assert piece.first == (not current)
        if piece.speech is not None:
            current.append(piece.speech)
        if piece.last:
            sentences.append(Speech(current[0].rate, np.concatenate([s.samples for s in current])))
            current = []
    assert not current
    return sentences


async def test_session_speaks_sentences_in_order(engine: Engine) -> None:
    speaker = FakeSpeaker()
    session = _session(engine, speaker)
    session.feed("First one. Second one! Third")
    session.finish()
    speeches = await _collect(session)
    assert speaker.spoken == ["First one.", "Second one!", "Third"]
    assert [int(s.samples[0]) for s in speeches] == [1, 2, 3]


async def test_streamed_fragments_start_before_the_end(engine: Engine) -> None:
    speaker = FakeSpeaker()
    session = _session(engine, speaker)
    iterator = session.speeches().__aiter__()  # pieces: two per sentence
    for fragment in ("Hello the", "re. How a", "re you"):
        session.feed(fragment)
    first = await asyncio.wait_for(iterator.__anext__(), 5)  # before finish(): the first sentence is out
    assert speaker.spoken[0] == "Hello there."
    assert first.samples.shape[0] == len("Hello there.") // 2
    session.feed("?")
    session.finish()
    rest = [s async for s in iterator]
    assert len(rest) == 3 and speaker.spoken[1] == "How are you?"


async def test_cancel_stops_within_one_step(engine: Engine) -> None:
    speaker = FakeSpeaker(steps=1000, step_seconds=0.005)
    session = _session(engine, speaker)
    session.feed("A long sentence. Another one. And more.")
    session.finish()
    await asyncio.get_running_loop().run_in_executor(None, speaker.started.wait, 5)
    started = time.monotonic()
    session.cancel()
    assert await asyncio.wait_for(_collect(session), 5) == []
    # Uncancelled, the sentence takes 1000 steps x 5 ms = 5 s; cancelled it ends within a step
    # (the margin is for a loaded 2-core CI machine).
    assert time.monotonic() - started < 2.5
    assert speaker.spoken == []


async def test_failed_sentence_raises_and_worker_survives(engine: Engine) -> None:
    broken = _session(engine, FakeSpeaker(fail_on="boom"))
    broken.feed("Fine. Then boom. Never.")
    broken.finish()
    with pytest.raises(SynthesisError, match="model exploded"):
        await _collect(broken)
    healthy = FakeSpeaker()
    session = _session(engine, healthy)
    session.feed("Still alive.")
    session.finish()
    assert len(await _collect(session)) == 1


async def test_queue_bound_counts_requests_not_sentences() -> None:
    engine = Engine(max_queue=1)  # not started: nothing drains the queue
    first = _session(engine, FakeSpeaker())
    first.feed("One. Two. Three. Four.")  # many sentences, one queued job
    with pytest.raises(EngineBusy):
        second = _session(engine, FakeSpeaker())
        second.feed("Other request.")
        second.finish()


class BlockingSpeaker(FakeSpeaker):
    """Holds the worker until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def speak(self, text: str, should_stop, emit) -> None:
        self.started.set()
        self.release.wait(10)
        super().speak(text, should_stop, emit)


async def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_admitted_stream_is_never_busy_for_its_later_sentences() -> None:
    """A stream's next sentence, arriving after its worker turn ended, used to need a free queue
    slot: with the queue full of other requests, an answer half spoken got a "busy" error."""
    engine = Engine(max_queue=1)
    engine.start()
    blocker = BlockingSpeaker()
    try:
        stream_speaker = FakeSpeaker()
        stream = _session(engine, stream_speaker)
        stream.feed("One. ")
        await _until(lambda: stream_speaker.spoken == ["One."] and not stream._job._scheduled)
        busy_worker = _session(engine, blocker)
        busy_worker.feed("Block. ")
        await asyncio.get_running_loop().run_in_executor(None, blocker.started.wait, 10)
        waiting = _session(engine, FakeSpeaker())
        waiting.feed("Wait. ")  # the queue is full now
        with pytest.raises(EngineBusy):
            _session(engine, FakeSpeaker()).feed("A new request. ")
        stream.feed("Two. ")  # already admitted: queued, not refused
        stream.finish()
        blocker.release.set()
        assert len(await _collect(stream)) == 2 and stream_speaker.spoken == ["One.", "Two."]
    finally:
        blocker.release.set()
        engine.close()


async def test_session_limits_and_language(engine: Engine) -> None:
    session = _session(engine, FakeSpeaker(), max_chars=20)
    session.feed("short. ")
    with pytest.raises(BadRequest) as info:
        session.feed("this fragment pushes it over the limit")
    assert info.value.code == "text-too-long"
    # Nothing speakable is left once the Cyrillic words and the emoji are dropped.
    russian = _session(engine, FakeSpeaker())
    russian.feed("Привет, мир! 😀")
    with pytest.raises(BadRequest) as info:
        russian.finish()
    assert info.value.code == "unsupported-language"
    empty = _session(engine, FakeSpeaker())
    empty.feed("   ")
    with pytest.raises(BadRequest) as info:
        empty.finish()
    assert info.value.code == "empty-text"


async def test_session_drops_unspeakable_and_speaks_the_rest(engine: Engine, caplog) -> None:
    speaker = FakeSpeaker()
    session = _session(engine, speaker)
    with caplog.at_level("DEBUG", logger="wyoming_gsv.synthesis.session"):
        session.feed("Hello Привет 👋🏽 there. ")
        session.feed("Playing 周杰伦 now.")
        session.finish()
        await _collect(session)
    assert speaker.spoken == ["Hello there.", "Playing 周杰伦 now."]
    dropped_lines = [r for r in caplog.records if "Dropped" in r.getMessage()]
    assert len(dropped_lines) == 1 and "Привет" in dropped_lines[0].getMessage()


async def test_stream_of_any_length_is_spoken_with_bounded_waiting_text(engine: Engine) -> None:
    """A stream longer than max_chars is spoken; its reader is held back (wait_for_room) so no
    more than max_chars characters ever wait to be spoken."""
    speaker = FakeSpeaker(step_seconds=0.001)
    session = _session(engine, speaker, max_chars=120)
    sentence = "This sentence is spoken. "
    collected = asyncio.ensure_future(_collect(session))
    most_waiting = 0
    for _ in range(40):  # 1000 characters through a 120-character window
        session.feed(sentence)
        most_waiting = max(most_waiting, session._waiting_chars)
        await asyncio.wait_for(session.wait_for_room(), timeout=30)
    session.finish()
    spoken = await asyncio.wait_for(collected, timeout=60)
    assert len(spoken) == 40 and len(speaker.spoken) == 40
    assert most_waiting <= 120


def test_drop_unspeakable_keeps_symbols_and_lone_letters() -> None:
    # Lone letters are symbols: HA's unit for dust is "μg/m³" (Greek mu); µ is the micro sign.
    for text in ("PM2.5 is 12 μg/m³.", "5 µs, 2π, 10 Ω, 1º, 21 °C, 5 ℃", "空气 12 μg/m³。", "Café ™"):
        assert drop_unspeakable(text).text == text
    assert drop_unspeakable("Say مرحبا now 🎉!") == SpeakableText("Say  now!", "مرحبا🎉")
    assert drop_unspeakable("Playing in the living room 🎶.").text == "Playing in the living room."


@pytest.mark.parametrize(
    ("text", "mode", "spans"),
    [
        ("Playing 周杰伦 in the living room", "en",
         [("en", "Playing "), ("auto", "周杰伦"), ("en", " in the living room")]),
        ("播放ヨルシカ的歌", "zh", [("zh", "播放"), ("auto", "ヨルシカ"), ("zh", "的歌")]),
        ("这首歌叫아이유。", "zh", [("zh", "这首歌叫"), ("auto", "아이유"), ("zh", "。")]),
        ("日本語です and English", "ja", [("ja", "日本語です and English")]),
        ("안녕 你 hello", "auto", [("auto", "안녕 你 hello")]),
        ("周杰伦 的 歌 now", "en", [("auto", "周杰伦 的 歌"), ("en", " now")]),
    ],
)  # fmt: skip
def test_spans_by_script(text: str, mode: str, spans: list[tuple[str, str]]) -> None:
    assert spans_by_script(text, mode) == [ModeSpan(m, t) for m, t in spans]


def test_has_speakable() -> None:
    assert not has_speakable(" ?! \n") and has_speakable("…3")


def test_float_to_int16_scales_only_when_clipping() -> None:
    assert float_to_int16(np.array([0.5, -0.5]))[0] == round(0.5 * 32767)
    loud = float_to_int16(np.array([2.0, -1.0]))
    assert loud[0] == 32767 and loud[1] == round(-0.5 * 32767)


def test_engine_job_cancel_skips_queued_sentences() -> None:
    results: list[tuple[int, object]] = []
    speaker = FakeSpeaker()
    engine = Engine(max_queue=1)
    job = EngineJob(speaker=speaker, on_result=lambda i, s, e, last: results.append((i, s)))
    engine.submit(job, 0, "a")
    engine.submit(job, 1, "b")
    job.cancel()
    engine.start()
    engine.close()
    assert results == [(0, None), (1, None)] and speaker.spoken == []
