"""The Wyoming server over real TCP with the real engine on the tiny fixture models."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from server_client import describe, ha_stream, ha_synthesize, send_and_collect
from serving import serving, started_runtime
from spy import Spy
from voice_data import make_tiny_data_dir, make_voice, tiny_voice_config
from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.server.info import ProgramSettings
from wyoming_gsv.synthesis.engine import EngineJob
from wyoming_gsv.synthesis.gsv_backend import GsvBackend
from wyoming_gsv.synthesis.runtime import Runtime
from wyoming_gsv.text.segmentation import pre_seg_text, replace_consecutive_punctuation
from wyoming_gsv.voices import BundleCache

SENTENCES = ["Hello there.", "How are you today?", "This is the last one."]


@pytest.fixture(scope="module")
def runtime(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("server-data"), unpacked_v2)
    with started_runtime(data_dir, max_chars=1000) as runtime:
        yield runtime


@pytest.fixture
async def port(runtime: Runtime):
    async with serving(runtime, HandlerSettings(samples_per_chunk=1024)) as port:
        yield port


async def test_describe_lists_voices_in_both_language_forms(port: int) -> None:
    info = await describe(port)
    assert len(info.tts) == 1
    program = info.tts[0]
    assert program.installed and program.supports_synthesize_streaming
    assert "GPT-SoVITS" in program.attribution.name
    assert program.version
    voices = {voice.name: voice for voice in program.voices}
    assert set(voices) == {"tiny"}  # "broken" (no transcript) is left out
    assert voices["tiny"].description == "Tiny test voice"
    assert voices["tiny"].languages == ["en", "en_US"]
    assert voices["tiny"].installed


async def test_no_streaming_flag_still_accepts_stream_events(runtime: Runtime) -> None:
    settings = HandlerSettings(program=ProgramSettings(streaming=False), samples_per_chunk=1024)
    async with serving(runtime, settings) as port:
        assert not (await describe(port)).tts[0].supports_synthesize_streaming
        result = await ha_stream(port, ["Hello there."], voice="tiny")
        assert result.error is None and result.events[-1] == "synthesize-stopped" and result.audio


async def test_ha_non_streaming_reads_one_start_stop_cycle(port: int, runtime: Runtime, monkeypatch) -> None:
    spoken = Spy(monkeypatch, runtime.backend, "speak_features")
    result = await ha_synthesize(port, " ".join(SENTENCES), voice="tiny")
    assert result.error is None
    assert (result.rate, result.width, result.channels) == (_model_rate(runtime), 2, 1)
    assert result.events.count("audio-start") == 1 and result.events[0] == "audio-start"
    assert result.events[-1] == "audio-stop"
    assert spoken.calls == len(SENTENCES)
    assert result.seconds > 0.3 * len(SENTENCES)  # at least the gap after each sentence


def _model_rate(runtime: Runtime) -> int:
    """The tiny voice's SoVITS output rate, as its model file says."""
    return runtime.backend.output_rate(runtime.registry.get("tiny"))


async def test_other_scripts_are_spoken_in_their_language(port: int, runtime: Runtime, monkeypatch) -> None:
    """An English voice given kana and hangul speaks them (auto mode for those spans), drops the
    emoji, and refuses nothing. (No hanzi here: the tiny test BERT's 64-wide features do not fit
    the tiny GPT, which expects the real model's 1024.)"""
    features = Spy(monkeypatch, runtime.backend, "text_features")
    result = await ha_synthesize(port, "Playing ヨルシカ and 아이유 in the living room 🎶.", voice="tiny")
    assert result.error is None and result.audio
    assert features.calls == 1


async def test_stream_longer_than_max_chars_is_spoken(port: int, runtime: Runtime) -> None:
    """--max-chars bounds the text waiting to be spoken, not a stream's length."""
    limit = runtime.settings.max_chars
    sentence = "This is one sentence of a long answer, written long so that few sentences are needed " * 2 + ". "
    fragments = [sentence] * (limit // len(sentence) + 2)
    assert sum(map(len, fragments)) > limit
    result = await ha_stream(port, fragments, voice="tiny")
    assert result.error is None and result.events[-1] == "synthesize-stopped"
    assert result.events.count("audio-start") == len(fragments)


async def test_voice_none_uses_default_voice(port: int) -> None:
    result = await ha_synthesize(port, "Hello there.")
    assert result.error is None and result.audio


async def test_ha_stream_in_fragments_without_duplicates(port: int, runtime: Runtime, monkeypatch) -> None:
    spoken = Spy(monkeypatch, runtime.backend, "speak_features")
    text = " ".join(SENTENCES)
    fragments = [text[i : i + 7] for i in range(0, len(text), 7)]  # not on word boundaries, like HA's LLM deltas
    result = await ha_stream(port, fragments, voice="tiny")
    assert result.error is None
    assert (result.rate, result.width, result.channels) == (_model_rate(runtime), 2, 1)
    assert result.events[-1] == "synthesize-stopped"
    assert result.events.count("audio-start") == result.events.count("audio-stop") == len(SENTENCES)
    assert spoken.calls == len(SENTENCES)  # the compatibility synthesize was ignored


async def test_same_audio_streaming_and_not(port: int) -> None:
    plain = await ha_synthesize(port, " ".join(SENTENCES), voice="tiny")
    streamed = await ha_stream(port, [" ".join(SENTENCES)], voice="tiny")
    assert plain.audio == streamed.audio  # top_k=1, noise_scale=0: deterministic


async def test_first_sentence_audio_before_stream_ends(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="tiny")).event())
        await client.write_event(SynthesizeChunk(text="Hello there. How are").event())
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None and event.type == "audio-start"  # stream still open
        await client.write_event(SynthesizeChunk(text=" you?").event())
        await client.write_event(SynthesizeStop().event())
        types = [event.type]
        while types[-1] != "synthesize-stopped":
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None
            types.append(event.type)
    assert types.count("audio-start") == 2


async def test_new_stream_before_stop_drops_the_unfinished_one(port: int) -> None:
    voice = SynthesizeVoice(name="tiny")
    events = [
        SynthesizeStart(voice=voice).event(),
        SynthesizeChunk(text="Never finished").event(),
        SynthesizeStart(voice=voice).event(),
        SynthesizeChunk(text="Hello there.").event(),
        SynthesizeStop().event(),
    ]
    async with AsyncTcpClient("127.0.0.1", port) as client:
        for event in events:
            await client.write_event(event)
        types = []
        while not types or types[-1] != "synthesize-stopped":
            event = await asyncio.wait_for(client.read_event(), 60)
            assert event is not None
            types.append(event.type)
    assert types.count("audio-start") == types.count("audio-stop") == 1


@pytest.mark.parametrize(
    ("events", "code"),
    [
        ([Synthesize(text="Hello.", voice=SynthesizeVoice(name="nobody")).event()], "unknown-voice"),
        ([Synthesize(text="Hello.", voice=SynthesizeVoice(name="broken")).event()], "unknown-voice"),
        ([Synthesize(text="").event()], "empty-text"),
        ([Synthesize(text="   \n").event()], "empty-text"),
        ([Synthesize(text="Привет, как дела? 😀").event()], "unsupported-language"),
        ([Synthesize(text="Hello there. " * 80).event()], "text-too-long"),
        ([Event(type="synthesize", data={})], "missing-data"),
        ([SynthesizeStart().event(), Event(type="synthesize-chunk")], "missing-data"),
        ([SynthesizeStart().event(), SynthesizeChunk(text="   ").event(), SynthesizeStop().event()], "empty-text"),
        # SynthesizeVoice.to_dict() drops the language when a name is set, so send it raw.
        ([Event(type="synthesize-start", data={"voice": {"name": "tiny", "language": "ja"}})], "unsupported-language"),
    ],
)
async def test_bad_requests_get_error_then_close(port: int, events: list[Event], code: str) -> None:
    received = await send_and_collect(port, events)
    assert [e.type for e in received] == ["error"]
    error = Error.from_event(received[0])
    assert error.code == code and error.text
    # Other clients are unaffected.
    assert (await ha_synthesize(port, "Still fine.", voice="tiny")).audio


async def test_ping_pong_and_unknown_events(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Event(type="made-up-event", data={"x": 1}))
        await client.write_event(Event(type="synthesize-stop"))  # a stop with no stream: just acknowledged
        await client.write_event(Ping(text="hi").event())
        await client.write_event(Describe().event())
        seen = []
        while "info" not in seen:
            event = await asyncio.wait_for(client.read_event(), 10)
            assert event is not None
            seen.append(event.type)
            if Pong.is_type(event.type):
                assert Pong.from_event(event).text == "hi"
    assert seen == ["synthesize-stopped", "pong", "info"]


async def test_voices_follow_the_disk_without_restart(port: int, runtime: Runtime, unpacked_v2) -> None:
    data_dir = runtime.settings.data_dir
    make_voice(data_dir, "added", reference=unpacked_v2["ref_wav"], config=tiny_voice_config(description="Added"))
    try:
        names = {v.name for v in (await describe(port)).tts[0].voices}
        assert names == {"tiny", "added"}
        result = await ha_synthesize(port, "Hello there.", voice="added")
        assert result.error is None and result.audio
    finally:
        shutil.rmtree(data_dir / "voices" / "added")
    assert {v.name for v in (await describe(port)).tts[0].voices} == {"tiny"}


@pytest.mark.parametrize("cut", ["cut0", "cut1", "cut5"])
async def test_voice_text_split_speaks_the_official_chunks(port: int, runtime: Runtime, unpacked_v2, monkeypatch, cut: str) -> None:
    """A voice with `text_split: cutN` speaks exactly the chunks of upstream's preprocess (after
    each, the 0.3 s silence); the default voice speaks our sentences."""
    data_dir = runtime.settings.data_dir
    config = tiny_voice_config(description="Official split", text_split=cut)
    make_voice(data_dir, "official", reference=unpacked_v2["ref_wav"], config=config)
    text = "Hi. This is it, really!! Short one... And then the last sentence of this text"
    chunks = pre_seg_text(replace_consecutive_punctuation(text), "en", cut)
    try:
        spoken = Spy(monkeypatch, runtime.backend, "speak_features")
        result = await ha_synthesize(port, text, voice="official")
        assert result.error is None and result.audio
        assert spoken.calls == len(chunks)
        assert result.seconds >= 0.3 * len(chunks)
    finally:
        shutil.rmtree(data_dir / "voices" / "official")


async def test_requests_never_recompute_the_bundle(port: int, runtime: Runtime, monkeypatch) -> None:
    hubert = Spy(monkeypatch, runtime.backend.hubert(), "features")
    built = Spy(monkeypatch, runtime.backend, "build_bundle")
    for _ in range(2):
        assert (await ha_synthesize(port, "Hello there.", voice="tiny")).audio
    assert hubert.calls == 0 and built.calls == 0
    # A fresh process (new backend, same data dir) loads the bundle from disk instead.
    fresh = GsvBackend(runtime.models, BundleCache(runtime.settings.data_dir / "cache"))
    fresh_built = Spy(monkeypatch, fresh, "build_bundle")
    voice = runtime.registry.get("tiny")
    bundle = fresh.bundle(voice)
    assert fresh_built.calls == 0
    assert torch.equal(bundle.prompt_codes, runtime.backend.bundle(voice).prompt_codes)


async def test_describe_is_fast_while_another_connection_synthesizes(port: int) -> None:
    long_text = " ".join(f"Number {i} here." for i in range(25))
    synthesis = asyncio.create_task(ha_synthesize(port, long_text, voice="tiny"))
    await asyncio.sleep(0.5)  # the engine is busy now
    latencies = []
    for _ in range(5):
        started = time.monotonic()
        await describe(port)
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.1)
    # Had describe waited for the engine, the synthesis would be over by now.
    assert not synthesis.done(), "synthesis finished too early to prove anything"
    assert max(latencies) < 2.0, latencies  # wide: a loaded 2-core CI machine
    assert (await synthesis).audio


async def test_disconnect_cancels_within_one_decode_step(port: int, runtime: Runtime, monkeypatch) -> None:
    """Once the client is gone and its job is cancelled, at most the decode step already under
    way finishes: no later step and no later sentence starts. Each count is checked to have been
    able to see something, so the test cannot pass with cancellation unwired."""
    cancel_called = threading.Event()
    job_flags: list[object] = []  # each job's cancel flag, in the order its sentences start
    counts = {"sentences": 0, "steps": 0, "sentences_after_cancel": 0, "steps_after_cancel": 0}
    original_cancel = EngineJob.cancel
    original_speak = runtime.backend.speak_features

    def cancel(job: EngineJob) -> None:
        original_cancel(job)
        cancel_called.set()

    def speak_features(pair, bundle, target, params, should_stop, generator, emit, *how_audio_runs):
        flag = getattr(should_stop, "__self__", None)  # should_stop is the job's Event.is_set
        if flag not in job_flags:
            job_flags.append(flag)
        counted = flag is job_flags[0]  # the disconnected request's job
        cancelled = isinstance(flag, threading.Event) and flag.is_set()
        if counted:
            counts["sentences"] += 1
            counts["sentences_after_cancel"] += cancelled
        forward = pair.t2s.forward_cached

        def counting_forward(*args, **kwargs):
            if counted:
                counts["steps"] += 1
                counts["steps_after_cancel"] += flag.is_set()
            return forward(*args, **kwargs)

        pair.t2s.forward_cached = counting_forward
        try:
            return original_speak(pair, bundle, target, params, should_stop, generator, emit, *how_audio_runs)
        finally:
            del pair.t2s.forward_cached

    monkeypatch.setattr(EngineJob, "cancel", cancel)
    monkeypatch.setattr(runtime.backend, "speak_features", speak_features)
    sentence_count = 30
    long_text = " ".join(f"Number {i} here." for i in range(sentence_count))
    client = AsyncTcpClient("127.0.0.1", port)
    await client.connect()
    await client.write_event(Synthesize(text=long_text, voice=SynthesizeVoice(name="tiny")).event())
    first = await asyncio.wait_for(client.read_event(), 60)
    assert first is not None and first.type == "audio-start"
    await client.disconnect()
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, cancel_called.wait, 30), "the disconnect did not cancel the job"
    # The engine is free again for others; this request queues behind the rest of the cancelled
    # job, so once it is answered every count of that job is final.
    assert (await ha_synthesize(port, "Hello there.", voice="tiny")).audio
    assert isinstance(job_flags[0], threading.Event) and job_flags[0].is_set()
    assert counts["steps"] > 0, "the step counter saw no decode step"
    assert counts["sentences"] < sentence_count, f"all {sentence_count} sentences ran: nothing was cancelled"
    assert counts["steps_after_cancel"] <= 1, counts
    assert counts["sentences_after_cancel"] <= 1, counts  # one may race the cancel; it stops before its first step


async def test_voice_with_broken_model_file_is_reported_and_left_out(port: int, runtime: Runtime, unpacked_v2) -> None:
    data_dir = runtime.settings.data_dir
    (data_dir / "models" / "garbage.pth").write_bytes(b"PK\x03\x04 this is not a real checkpoint" * 10)
    make_voice(data_dir, "badmodel", reference=unpacked_v2["ref_wav"], config=tiny_voice_config(sovits="models/garbage.pth"))
    try:
        assert "badmodel" in {v.name for v in (await describe(port)).tts[0].voices}  # looks fine until loaded
        result = await ha_synthesize(port, "Hello there.", voice="badmodel")
        assert result.error is not None and result.error.code == "voice-unusable"
        assert "garbage.pth" in result.error.text
        assert {v.name for v in (await describe(port)).tts[0].voices} == {"tiny"}
        assert "garbage.pth" in runtime.registry.problems()["badmodel"]
        assert (await ha_synthesize(port, "Hello there.", voice="tiny")).audio  # others keep working
    finally:
        shutil.rmtree(data_dir / "voices" / "badmodel")
        (data_dir / "models" / "garbage.pth").unlink()
