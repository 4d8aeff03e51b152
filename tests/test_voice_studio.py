"""Styles as Home Assistant speakers over real TCP, and the product side of the voice page
(synthesis/studio.py): status, background builds, previews on the shared engine queue, and
changes made by the store showing up at the next describe without a restart."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from wyoming.audio import AudioChunk, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from clip_data import encode, speechlike
from server_client import TIMEOUT, describe
from serving import serving, started_runtime
from voice_data import make_tiny_data_dir, make_voice, tiny_voice_config
from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.synthesis.engine import EngineJob
from wyoming_gsv.synthesis.runtime import Runtime
from wyoming_gsv.synthesis.speech import BadRequest
from wyoming_gsv.synthesis.studio import BUILDING, READY, UNUSABLE, Studio
from wyoming_gsv.voices.store import VoiceDraft

WORDS = "one two three four five six seven eight nine ten eleven twelve"
STYLE_CLIP = encode(speechlike(5.0, seed=7), 32000, "FLAC")


@pytest.fixture(scope="module")
def runtime(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("studio-data"), unpacked_v2)
    with started_runtime(data_dir, max_chars=1000) as runtime:
        yield runtime


@pytest.fixture(scope="module")
def studio(runtime: Runtime) -> Studio:
    studio = Studio.for_runtime(runtime)
    studio.store.add_style("tiny", "cheerful", STYLE_CLIP, WORDS)
    return studio


@pytest.fixture
async def port(runtime: Runtime, studio: Studio):
    async with serving(runtime, HandlerSettings(samples_per_chunk=1024)) as port:
        yield port


async def _synthesize(port: int, text: str, voice: str, speaker: str | None = None) -> tuple[bytes, Error | None]:
    """HA's non-streaming request with `tts.speak` options {voice, speaker}."""
    audio = b""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice, speaker=speaker)).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
            if event is None:
                return audio, None
            if Error.is_type(event.type):
                return audio, Error.from_event(event)
            if AudioChunk.is_type(event.type):
                audio += AudioChunk.from_event(event).audio
            elif AudioStop.is_type(event.type):
                return audio, None


async def _stream(port: int, text: str, voice: str, speaker: str | None) -> tuple[bytes, list[Event]]:
    synth_voice = SynthesizeVoice(name=voice, speaker=speaker)
    events: list[Event] = []
    audio = b""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart(voice=synth_voice).event())
        await client.write_event(SynthesizeChunk(text=text).event())
        await client.write_event(SynthesizeStop().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), TIMEOUT)
            if event is None:
                return audio, events
            events.append(event)
            if AudioChunk.is_type(event.type):
                audio += AudioChunk.from_event(event).audio
            if SynthesizeStopped.is_type(event.type) or Error.is_type(event.type):
                return audio, events


async def _wait_status(studio: Studio, voice_id: str, wanted: str, timeout: float = 120.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await loop.run_in_executor(None, studio.voice, voice_id)
        if status is not None and status.status == wanted and all(s.status != BUILDING for s in status.styles):
            return status
        assert loop.time() < deadline, f"{voice_id} never became {wanted}: {status}"
        await asyncio.sleep(0.1)


async def test_describe_lists_styles_as_speakers(port: int) -> None:
    info = await describe(port)
    voices = {voice.name: voice for voice in info.tts[0].voices}
    assert [speaker.name for speaker in voices["tiny"].speakers] == ["cheerful"]


async def test_speaker_picks_the_style_and_none_picks_the_main_clip(port: int) -> None:
    text = "Hello there."
    main, error = await _synthesize(port, text, "tiny")
    assert error is None and main
    styled, error = await _synthesize(port, text, "tiny", "cheerful")
    assert error is None and styled
    again, _ = await _synthesize(port, text, "tiny", "cheerful")
    # The voice is deterministic (top_k 1, no noise): same speaker, same audio; another clip, other audio.
    assert again == styled and styled != main
    streamed, events = await _stream(port, text, "tiny", "cheerful")
    assert not [e for e in events if Error.is_type(e.type)] and streamed == styled


async def test_unknown_speaker_is_an_error_event(port: int) -> None:
    audio, error = await _synthesize(port, "Hello.", "tiny", "grumpy")
    assert not audio and error is not None
    assert error.code == "unknown-speaker" and "grumpy" in error.text and "cheerful" in error.text
    _, events = await _stream(port, "Hello.", "tiny", "grumpy")
    errors = [Error.from_event(e) for e in events if Error.is_type(e.type)]
    assert errors and errors[0].code == "unknown-speaker"


async def test_store_changes_show_at_the_next_describe_and_build_in_the_background(
    port: int, studio: Studio, runtime: Runtime
) -> None:
    loop = asyncio.get_running_loop()
    clip = encode(speechlike(4.0, seed=3), 32000, "WAV")
    draft = VoiceDraft("fresh", clip, WORDS, language="en", description="Fresh voice", params={"top_k": 1, "noise_scale": 0.0})
    await loop.run_in_executor(None, studio.store.create, draft)
    studio.request_build("fresh")
    names = [voice.name for voice in (await describe(port)).tts[0].voices]
    assert "fresh" in names  # no restart
    status = await _wait_status(studio, "fresh", READY)
    assert status.description == "Fresh voice" and status.language == "en" and status.transcript == WORDS
    assert status.model_version == "v2" and status.params["top_k"] == 1 and status.check["verdict"] in ("good", "usable")
    assert runtime.backend.has_bundle(runtime.registry.get("fresh"))

    await loop.run_in_executor(None, studio.store.add_style, "fresh", "soft", STYLE_CLIP, WORDS)
    info = await describe(port)
    fresh = next(voice for voice in info.tts[0].voices if voice.name == "fresh")
    assert [speaker.name for speaker in fresh.speakers] == ["soft"]
    status = await _wait_status(studio, "fresh", READY)
    assert [(s.name, s.status) for s in status.styles] == [("soft", READY)]
    audio, error = await _synthesize(port, "Hello there.", "fresh", "soft")
    assert error is None and audio

    await loop.run_in_executor(None, studio.store.delete, "fresh")
    assert "fresh" not in [voice.name for voice in (await describe(port)).tts[0].voices]
    assert studio.voice("fresh") is None


async def test_status_lists_unusable_voices_with_the_cli_reason(studio: Studio, runtime: Runtime) -> None:
    data_dir = runtime.settings.data_dir
    junk = data_dir / "models" / "junk.pth"
    junk.write_bytes(b"PK" + b"\0" * 100)
    make_voice(data_dir, "badweights", config=tiny_voice_config(sovits="models/junk.pth"))
    statuses = {s.id: s for s in await asyncio.get_running_loop().run_in_executor(None, studio.voices)}
    assert statuses["broken"].status == UNUSABLE and "transcript is missing" in statuses["broken"].problem
    status = await _wait_status(studio, "badweights", UNUSABLE)
    assert "junk.pth" in status.problem
    cli = subprocess.run(
        [sys.executable, "-m", "wyoming_gsv", "voices", "--data-dir", str(data_dir), "--threads", "1", "--no-fallback"],
        capture_output=True,
        text=True,
    )
    lines = dict(line.split("\t", 1) for line in cli.stdout.splitlines())
    assert lines["badweights"].endswith("UNUSABLE: " + status.problem)
    assert lines["broken"].endswith("LEFT OUT: " + statuses["broken"].problem)
    assert lines["tiny@cheerful"].endswith("ready (bundle cached)")  # styles are listed and built too


def _hold_the_engine(runtime: Runtime) -> threading.Event:
    """Put a job on the engine (as a Home Assistant request would be) that holds it until the
    returned event is set."""
    release = threading.Event()

    class Blocker:
        def prepare(self) -> None:
            pass

        def speak(self, text, should_stop, emit) -> None:
            release.wait(30)

    runtime.engine.submit(EngineJob(speaker=Blocker(), on_result=lambda *args: None), 0, "block")
    return release


async def test_preview_uses_overrides_and_the_same_engine_queue(studio: Studio, runtime: Runtime) -> None:
    async def speak(session) -> bytes:
        session.feed("Hello there, how are you?")
        session.finish()
        return b"".join([speech.samples.tobytes() async for speech in session.speeches()])

    normal = await speak(studio.open_preview("tiny"))
    fast = await speak(studio.open_preview("tiny", overrides={"speed": 2.0}))
    styled = await speak(studio.open_preview("tiny", style="cheerful"))
    assert normal and fast and styled != normal
    assert len(fast) < 0.8 * len(normal)

    # A job already on the engine (a Home Assistant request) is served before the preview.
    release = _hold_the_engine(runtime)
    pending = asyncio.ensure_future(speak(studio.open_preview("tiny")))
    await asyncio.sleep(0.5)
    assert not pending.done()
    release.set()
    assert await asyncio.wait_for(pending, TIMEOUT) == normal

    for bad, code in (({"top_k": 0}, "bad-setting"), ({"temprature": 1.0}, "bad-setting")):
        with pytest.raises(BadRequest) as refused:
            studio.open_preview("tiny", overrides=bad)
        assert refused.value.code == code
    with pytest.raises(BadRequest) as unknown:
        studio.open_preview("nobody")
    assert unknown.value.code == "unknown-voice"
    with pytest.raises(BadRequest) as speaker:
        studio.open_preview("tiny", style="grumpy")
    assert speaker.value.code == "unknown-speaker"


async def test_builds_take_one_engine_place_at_a_time_and_status_never_waits_for_them(
    studio: Studio, runtime: Runtime
) -> None:
    loop = asyncio.get_running_loop()
    release = _hold_the_engine(runtime)
    ids = [f"batch{n}" for n in range(3)]
    try:
        for n, voice_id in enumerate(ids):
            clip = encode(speechlike(4.0, seed=20 + n), 32000, "WAV")
            await loop.run_in_executor(None, studio.store.create, VoiceDraft(voice_id, clip, WORDS, language="en"))
        statuses = {s.id: s.status for s in await loop.run_in_executor(None, studio.voices)}
        assert all(statuses[voice_id] == BUILDING for voice_id in ids)
        # Three builds wanted, one handed to the engine: Home Assistant's requests keep their places.
        assert runtime.engine._queue.qsize() <= 1
        # A status request does not wait for a build holding the models (here: the backend's lock).
        with runtime.backend._lock:
            status = await asyncio.wait_for(loop.run_in_executor(None, studio.voice, "tiny"), 10)
        assert status.status == READY
    finally:
        release.set()
    for voice_id in ids:
        await _wait_status(studio, voice_id, READY)
    for voice_id in ids:
        await loop.run_in_executor(None, studio.store.delete, voice_id)
