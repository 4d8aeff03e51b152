"""Protocol edge cases over real TCP (and stdio): clients that leave early, repeat themselves or
close their input, on the real engine with the tiny fixture models."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, read_event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from server_client import ha_synthesize, send_and_collect
from serving import RecordingServer, recording_server, started_runtime
from voice_data import make_tiny_data_dir
from wyoming_gsv.server.handler import GsvEventHandler
from wyoming_gsv.synthesis.runtime import Runtime

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data_dir(tmp_path_factory.mktemp("edge-data"), unpacked_v2)


@pytest.fixture(scope="module")
def runtime(data_dir: Path):
    with started_runtime(data_dir) as runtime:
        yield runtime


@pytest.fixture
async def served(runtime: Runtime):
    async with recording_server(runtime) as served:
        yield served


async def _read_until(client: AsyncTcpClient, last_type: str, count: int = 1) -> list[str]:
    types: list[str] = []
    while types.count(last_type) < count:
        event = await asyncio.wait_for(client.read_event(), 60)
        assert event is not None, f"connection closed after {types}"
        types.append(event.type)
    return types


async def test_client_reset_before_the_answer_ends_the_handler_cleanly(
    served: RecordingServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HA gives up on a slow describe and closes; writing the late answer must not raise out of
    handle_event."""
    voices = runtime.service.voices

    def slow_voices():
        time.sleep(0.3)  # the connection is reset meanwhile
        return voices()

    monkeypatch.setattr(runtime.service, "voices", slow_voices)
    sock = socket.create_connection(("127.0.0.1", served.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    sock.sendall(json.dumps({"type": "describe"}).encode() + b"\n")
    await asyncio.sleep(0.05)
    sock.close()
    assert await served.wait_for_endings(1) == [None]


@pytest.mark.parametrize(
    "request_events",
    [
        [SynthesizeStart().event(), SynthesizeChunk(text="Hello there.").event(), SynthesizeStop().event()],
        [Synthesize(text="Hello there.").event()],
    ],
    ids=["stream", "plain"],
)
async def test_stop_outside_a_stream_is_answered_after_the_audio(served: RecordingServer, request_events) -> None:
    """A repeated synthesize-stop (or one after a plain synthesize) is acknowledged in order: a
    client that reads up to synthesize-stopped must not lose the audio still being made."""
    async with AsyncTcpClient("127.0.0.1", served.port) as client:
        for event in [*request_events, SynthesizeStop().event()]:
            await client.write_event(event)
        expected_stops = 2 if len(request_events) > 1 else 1
        types = await _read_until(client, "synthesize-stopped", expected_stops)
    assert "audio-stop" in types
    last_audio_stop = len(types) - 1 - types[::-1].index("audio-stop")
    assert types.index("synthesize-stopped") > last_audio_stop, types


async def test_stream_left_open_by_a_vanished_client_frees_the_engine(served: RecordingServer, runtime: Runtime) -> None:
    client = AsyncTcpClient("127.0.0.1", served.port)
    await client.connect()
    await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="tiny")).event())
    await client.write_event(SynthesizeChunk(text="Hello there. And then").event())
    await client.disconnect()
    assert await served.wait_for_endings(1) == [None]
    async with AsyncTcpClient("127.0.0.1", served.port) as other:
        await other.write_event(Synthesize(text="Still here.").event())
        assert (await _read_until(other, "audio-stop"))[0] == "audio-start"


def test_stdio_answers_a_request_whose_input_has_ended(data_dir: Path) -> None:
    """`echo '{"type": "synthesize", ...}' | wyoming-gsv --uri stdio://`: the end of stdin used to
    end the server before the audio was written, so nothing came out."""
    request = json.dumps({"type": "synthesize", "data": {"text": "Hello there.", "voice": {"name": "tiny"}}})
    argv = [sys.executable, "-m", "wyoming_gsv", "--uri", "stdio://", "--data-dir", str(data_dir),
            "--threads", "1", "--no-fallback", "--no-warm-up"]
    done = subprocess.run(argv, input=(request + "\n").encode(), capture_output=True, timeout=120,
                          cwd=PROJECT_ROOT, env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    output, types = io.BytesIO(done.stdout), []
    while (event := read_event(output)) is not None:
        types.append(event.type)
    problem = f"events {types[:3]}...{types[-3:]}; stdout starts {done.stdout[:200]!r}; stderr {done.stderr[-1500:]!r}"
    assert types and types[0] == "audio-start" and types[-1] == "audio-stop" and "audio-chunk" in types, problem


async def test_unit_symbols_from_home_assistant_are_spoken(served: RecordingServer) -> None:
    """A lone Greek letter refused the whole answer ("unsupported-language") for an English voice."""
    result = await ha_synthesize(served.port, "Dust is at 12 μg/m³ today.", voice="tiny")
    assert result.error is None and result.audio


async def test_unexpected_failure_while_sending_audio_is_an_error_not_a_hang(
    served: RecordingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HA's non-streaming path has no read timeout: a sender task dying of an unexpected
    exception used to leave it waiting for audio-stop forever."""

    async def broken(self, rate: int, pcm: bytes) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(GsvEventHandler, "_write_samples", broken)
    received = await asyncio.wait_for(send_and_collect(served.port, [Synthesize(text="Hello there.").event()]), 30)
    assert [event.type for event in received] == ["audio-start", "error"]
    error = Error.from_event(received[-1])
    assert error.code == "internal-error" and "a bug" in error.text


async def test_unexpected_failure_handling_an_event_is_an_error_event(
    served: RecordingServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(runtime.service, "open_session", broken)
    received = await asyncio.wait_for(send_and_collect(served.port, [Synthesize(text="Hello there.").event()]), 30)
    assert [event.type for event in received] == ["error"]
    assert Error.from_event(received[0]).code == "internal-error"
    assert await served.wait_for_endings(1) == [None]  # nothing escaped the handler task


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"text": "Hello there.", "voice": "tiny"}, "audio-stop"),  # a bare string names the voice
        ({"text": "Hello there.", "voice": ["tiny"]}, "audio-stop"),  # unusable voice field: default voice
        ({"text": "Hello there.", "voice": {"name": 5}}, "audio-stop"),
        ({"text": 5}, "error"),
        ({"text": ["Hello"]}, "error"),
    ],
)
async def test_wrongly_typed_fields_are_tolerated_or_refused_cleanly(served: RecordingServer, data: dict, expected: str) -> None:
    received = await asyncio.wait_for(send_and_collect_until(served.port, Event(type="synthesize", data=data)), 30)
    assert received[-1].type == expected
    if expected == "error":
        assert Error.from_event(received[-1]).code == "missing-data"
    assert await served.wait_for_endings(1) == [None]  # the handler ended cleanly either way


async def send_and_collect_until(port: int, event: Event) -> list[Event]:
    """Send one event; read up to audio-stop or error."""
    received: list[Event] = []
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(event)
        while not received or received[-1].type not in ("audio-stop", "error"):
            reply = await client.read_event()
            assert reply is not None, f"closed after {[e.type for e in received]}"
            received.append(reply)
    return received


@pytest.mark.parametrize("streaming", [True, False])
async def test_silent_answer_still_gives_home_assistant_a_wav_header(
    served: RecordingServer, monkeypatch: pytest.MonkeyPatch, streaming: bool
) -> None:
    """When every sentence comes out silent, HA still needs one audio-start (its WAV header)
    and, in a stream, a matching audio-stop before synthesize-stopped."""
    from wyoming_gsv.synthesis.session import SpeechSession

    async def no_pieces(self):
        return
        yield  # an async generator that yields nothing

    monkeypatch.setattr(SpeechSession, "pieces", no_pieces)
    if streaming:
        events = [SynthesizeStart().event(), SynthesizeChunk(text="Hello there.").event(), SynthesizeStop().event()]
        expected = ["audio-start", "audio-stop", "synthesize-stopped"]
    else:
        events = [Synthesize(text="Hello there.").event()]
        expected = ["audio-start", "audio-stop"]
    async with AsyncTcpClient("127.0.0.1", served.port) as client:
        for event in events:
            await client.write_event(event)
        assert await _read_until(client, expected[-1]) == expected
