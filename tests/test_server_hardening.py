"""What no client can do to the server over real TCP: make it buffer what a frame announces,
raise out of a connection handler, hold more connections than allowed or hold one forever."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event, async_read_event, read_event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeVoice

from malformed_frames import fuzzed_frame
from server_client import describe, ha_synthesize
from serving import RecordingServer, recording_server, started_runtime
from voice_data import fake_model_files, make_tiny_data_dir, make_voice, tiny_voice_config
from wyoming_gsv.server.limits import ConnectionLimits, FrameLimits
from wyoming_gsv.synthesis.runtime import Runtime

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FRAMES = FrameLimits()
READ_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def runtime(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    with started_runtime(make_tiny_data_dir(tmp_path_factory.mktemp("hardening-data"), unpacked_v2)) as runtime:
        yield runtime


@pytest.fixture
async def served(runtime: Runtime):
    async with recording_server(runtime) as served:
        yield served


async def _exchange(port: int, raw: bytes, *, close_input: bool = True) -> tuple[list[Event], bool]:
    """Send raw bytes (then half-close unless told not to); the events read back and whether the
    server closed the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        if close_input:
            writer.write_eof()
        events: list[Event] = []
        while True:
            event = await asyncio.wait_for(async_read_event(reader), READ_TIMEOUT)
            if event is None:
                return events, reader.at_eof()
            events.append(event)
    finally:
        writer.close()


def _frame(header: object, data: bytes = b"", payload: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + data + payload


def _server_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("wyoming_gsv.server", "asyncio"))]


# ----------------------------------------------------------------------------- 1. bounded frames
@pytest.mark.parametrize("field", ["data_length", "payload_length"])
async def test_oversized_frame_is_refused_before_it_is_buffered(served: RecordingServer, field: str) -> None:
    """600 MB announced, a few bytes sent, the connection left open: the server answers at once
    instead of waiting to buffer 600 MB."""
    header = {"type": "describe", field: 600_000_000}
    events, closed = await _exchange(served.port, _frame(header, b"{" * 10), close_input=False)
    assert [e.type for e in events] == ["error"]
    error = Error.from_event(events[0])
    assert error.code == "frame-too-large" and field in error.text
    assert closed
    assert await served.wait_for_endings(1) == [None]


@pytest.mark.parametrize("field", ["data_length", "payload_length"])
async def test_frame_at_the_limit_is_read(served: RecordingServer, field: str) -> None:
    limit = DEFAULT_FRAMES.max_data_bytes if field == "data_length" else DEFAULT_FRAMES.max_payload_bytes
    if field == "data_length":
        body = json.dumps({"text": "x" * (limit - len('{"text": ""}'))}).encode()
        assert len(body) == limit
        raw = _frame({"type": "ping", "data_length": limit}, body)
    else:
        raw = _frame({"type": "ping", "data": {"text": "hi"}, "payload_length": limit}, payload=b"\0" * limit)
    events, _ = await _exchange(served.port, raw)
    assert [e.type for e in events] == ["pong"]


# ----------------------------------------------------------------------------- 2. malformed frames
_NESTED = b'{"t": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
MALFORMED = {
    "data_length string": (_frame({"type": "ping", "data_length": "12"}), "bad-frame"),
    "data_length 1.5": (_frame({"type": "ping", "data_length": 1.5}), "bad-frame"),
    "data_length negative": (_frame({"type": "ping", "data_length": -5}), "bad-frame"),
    "data_length true": (_frame({"type": "ping", "data_length": True}, b"{"), "bad-frame"),
    "payload_length string": (_frame({"type": "ping", "payload_length": "big"}), "bad-frame"),
    "header a list": (b'["ping"]\n', "bad-frame"),
    "header a string": (b'"ping"\n', "bad-frame"),
    "header not JSON": (b"{type: ping\n", "bad-frame"),
    "header not UTF-8": (b'{"type": "\xff\xfe"}\n', "bad-frame"),
    "no type": (_frame({"data": {}}), "bad-frame"),
    "type a number": (_frame({"type": 5}), "bad-frame"),
    "data a list": (_frame({"type": "ping", "data": [1, 2]}), "bad-frame"),
    "data a string": (_frame({"type": "synthesize", "data": "hello"}), "bad-frame"),
    "data block a list": (_frame({"type": "ping", "data_length": 6}, b"[1, 2]"), "bad-frame"),
    "data block not JSON": (_frame({"type": "ping", "data_length": 5}, b"{oops"), "bad-frame"),
    "EOF inside data": (_frame({"type": "ping", "data_length": 100}, b'{"text": "hi'), "truncated-frame"),
    "EOF inside payload": (_frame({"type": "ping", "payload_length": 100}, payload=b"abc"), "truncated-frame"),
    "EOF inside header": (b'{"type": "pi', "truncated-frame"),
    "20000 nested brackets": (b'{"type": "ping", "data": ' + b"[" * 20_000 + b"]" * 20_000 + b"}\n", "bad-frame"),
    "20000 nested in data": (_frame({"type": "ping", "data_length": len(_NESTED)}, _NESTED), "bad-frame"),
    "lone surrogate in ping": (b'{"type": "ping", "data": {"text": "\\ud800"}}\n', "bad-frame"),
    "lone surrogate in synthesize": (b'{"type": "synthesize", "data": {"text": "a\\udfff"}}\n', "bad-frame"),
    "header over 64 KiB": (b'{"type": "ping", "x": "' + b"y" * 70_000 + b'"}\n', "bad-frame"),
}


@pytest.mark.parametrize("raw,code", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_frame_closes_the_connection_with_one_log_line(
    served: RecordingServer, caplog: pytest.LogCaptureFixture, raw: bytes, code: str
) -> None:
    caplog.set_level(logging.DEBUG)
    events, closed = await _exchange(served.port, raw)
    assert closed
    assert await served.wait_for_endings(1) == [None]  # nothing escaped the handler
    assert [e.type for e in events] == ["error"]
    assert Error.from_event(events[0]).code == code
    records = [r for r in _server_records(caplog) if r.levelno >= logging.INFO]
    assert len(records) == 1, [r.getMessage()[:200] for r in records]
    assert records[0].exc_info is None and len(records[0].getMessage()) < 300


async def test_good_frames_before_a_bad_one_are_answered(served: RecordingServer) -> None:
    raw = _frame({"type": "ping", "data": {"text": "one"}}) + _frame({"type": "ping", "data_length": -1})
    events, closed = await _exchange(served.port, raw)
    assert [e.type for e in events] == ["pong", "error"] and closed


async def test_fuzzed_frames_never_raise_out_of_a_handler(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A few thousand seeded malformed frames, a connection each: every handler ends cleanly,
    nothing is logged with a traceback, no task exception goes unretrieved, and the server still
    answers describe."""
    caplog.set_level(logging.INFO)
    rng = random.Random(12)
    count = 2000
    async with recording_server(runtime, ConnectionLimits(max_connections=1000)) as served:

        async def one(raw: bytes) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
            try:
                writer.write(raw)
                writer.write_eof()
                await writer.drain()
                while await asyncio.wait_for(reader.read(65536), READ_TIMEOUT):
                    pass
            except ConnectionError:
                pass  # the server may close first
            finally:
                writer.close()

        frames = [fuzzed_frame(rng) for _ in range(count)]
        for start in range(0, count, 50):
            await asyncio.gather(*(one(raw) for raw in frames[start : start + 50]))
        endings = await served.wait_for_endings(count)
        assert len(endings) == count and set(endings) == {None}
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            await client.write_event(Describe().event())
            assert Info.is_type((await asyncio.wait_for(client.read_event(), READ_TIMEOUT)).type)
    gc.collect()  # unretrieved task exceptions are reported when the task is collected
    records = _server_records(caplog)
    assert not [r for r in records if r.exc_info or "never retrieved" in r.getMessage()]
    assert len(records) <= count  # at most one line per connection


# ----------------------------------------------------------------------------- 3. connection limits
async def test_connections_over_the_limit_are_closed_at_once(runtime: Runtime) -> None:
    async with recording_server(runtime, ConnectionLimits(max_connections=3)) as served:
        held = [await asyncio.open_connection("127.0.0.1", served.port) for _ in range(3)]
        try:
            await asyncio.sleep(0.2)  # the three handlers are running
            events, closed = await _exchange(served.port, b"", close_input=False)
            assert closed and [e.type for e in events] == ["error"]
            assert Error.from_event(events[0]).code == "too-many-connections"
            # The held connections still work, and a freed slot is taken by the next client.
            reader, writer = held[0]
            writer.write(_frame({"type": "ping"}))
            assert (await asyncio.wait_for(async_read_event(reader), READ_TIMEOUT)).type == "pong"
            writer.close()
            await served.wait_for_endings(2)  # the refused one and this one
            events, _ = await _exchange(served.port, _frame({"type": "describe"}))
            assert [e.type for e in events] == ["info"]
        finally:
            for _, writer in held:
                writer.close()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> list[Event]:
    events = []
    while (event := await asyncio.wait_for(async_read_event(reader), seconds)) is not None:
        events.append(event)
    return events


@pytest.mark.parametrize("opening", [[], [SynthesizeStart(voice=SynthesizeVoice(name="tiny")).event()]], ids=["silent", "open-stream"])
async def test_idle_connection_is_closed(runtime: Runtime, opening: list[Event]) -> None:
    """A connection that sends nothing (or opens a stream and sends no text) holds a slot; it is
    closed after the idle timeout with an error event."""
    async with recording_server(runtime, ConnectionLimits(idle_timeout=0.5)) as served:
        client = AsyncTcpClient("127.0.0.1", served.port)
        await client.connect()
        for event in opening:
            await client.write_event(event)
        events = await _closed_within(client._reader, 20)  # noqa: SLF001 - the client's own stream
        await client.disconnect()
        assert [e.type for e in events] == ["error"]
        assert Error.from_event(events[0]).code == "idle-timeout"
        assert await served.wait_for_endings(1) == [None]


async def test_a_long_answer_is_not_cut_by_the_idle_timeout(runtime: Runtime) -> None:
    """The client sends one synthesize and then nothing while the answer takes longer than the
    idle timeout: that is work, not idleness."""
    text = " ".join(f"Number {i} here." for i in range(12))
    async with recording_server(runtime, ConnectionLimits(idle_timeout=0.3)) as served:
        async with AsyncTcpClient("127.0.0.1", served.port) as client:
            started = time.monotonic()
            await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name="tiny")).event())
            types = []
            while not types or types[-1] not in ("audio-stop", "error"):
                event = await asyncio.wait_for(client.read_event(), 60)
                assert event is not None, types[-3:]
                types.append(event.type)
            took = time.monotonic() - started
        assert types[-1] == "audio-stop"
        assert took > 0.3, f"the answer took {took:.2f} s: too fast to prove anything"


async def test_stream_with_text_then_silence_is_closed(runtime: Runtime) -> None:
    async with recording_server(runtime, ConnectionLimits(idle_timeout=1.0)) as served:
        client = AsyncTcpClient("127.0.0.1", served.port)
        await client.connect()
        await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="tiny")).event())
        await client.write_event(SynthesizeChunk(text="Hello there. And").event())
        events = await _closed_within(client._reader, 30)  # noqa: SLF001
        await client.disconnect()
        assert events[-1].type == "error" and Error.from_event(events[-1]).code == "idle-timeout"


def _describe_voices(sock: socket.socket) -> list[str] | str:
    """Voice names from describe on an open socket, or the error text."""
    sock.sendall(_frame({"type": "describe"}))
    event = read_event(sock.makefile("rb"))
    assert event is not None, "connection closed instead of answering describe"
    if event.type == "error":
        return Error.from_event(event).text
    return [voice.name for voice in Info.from_event(event).tts[0].voices]


def test_descriptor_limit_leaves_describe_and_later_connections_working(tmp_path: Path) -> None:
    """A server process that may open only 64 files, flooded with connections: describe on a
    connection it already has still lists the voice (the voice scan needs descriptors too), and
    clients coming after the flood are served (the accept loop survives EMFILE)."""
    data_dir = tmp_path / "data"
    fake_model_files(data_dir)
    make_voice(data_dir, "anna")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    limit = 64

    def lower_descriptor_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    argv = [sys.executable, "-m", "wyoming_gsv", "--uri", f"tcp://127.0.0.1:{port}", "--data-dir", str(data_dir),
            "--no-warm-up", "--no-fallback", "--threads", "1"]
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        server = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                  env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}, preexec_fn=lower_descriptor_limit)
    flood: list[socket.socket] = []
    try:
        first = _connect_when_listening(port, server, log)
        assert _describe_voices(first) == ["anna"]
        flood = [socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) for _ in range(2 * limit)]
        time.sleep(1.5)  # the server accepts what it can
        assert _describe_voices(first) == ["anna"], log.read_text()[-3000:]
        for sock in flood:
            sock.close()
        # asyncio retries accept() a second after EMFILE, and the server notices the closed
        # connections as it reads their end: within seconds a later client is served.
        deadline = time.monotonic() + 20
        while True:
            with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as later:
                answer = _describe_voices(later)
            if answer == ["anna"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer == ["anna"], log.read_text()[-3000:]
        first.close()
    finally:
        for sock in flood:
            sock.close()
        server.terminate()
        server.wait(30)


def _connect_when_listening(port: int, server: subprocess.Popen, log: Path) -> socket.socket:
    deadline = time.monotonic() + 120
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}") from None
            time.sleep(0.2)


# ----------------------------------------------------------------------------- 5. no paths to clients
async def test_errors_sent_to_clients_hold_no_server_paths(
    served: RecordingServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = str(runtime.settings.data_dir)
    long_name = await ha_synthesize(served.port, "Hello there.", voice="v" * 300)  # over the file name limit
    assert long_name.error is not None and long_name.error.code == "unknown-voice"
    assert data_dir not in long_name.error.text

    def failing_open(*args, **kwargs):
        raise OSError(5, "Input/output error", f"{data_dir}/voices/tiny/ref.wav")

    monkeypatch.setattr(runtime.service, "open_session", failing_open)
    failed = await ha_synthesize(served.port, "Hello there.", voice="tiny")
    assert failed.error is not None and failed.error.code == "internal-error"
    assert data_dir not in failed.error.text and "ref.wav" in failed.error.text


# ----------------------------------------------------------------------------- 6. unbuildable voices
async def test_voice_whose_bundle_cannot_be_built_is_left_out_until_its_files_change(
    served: RecordingServer, runtime: Runtime, monkeypatch: pytest.MonkeyPatch, unpacked_v2: dict[str, Path]
) -> None:
    """Any failure building a voice's bundle (here the text side, not a model file) leaves the
    voice out of describe until its files change, instead of failing each request of it."""
    folder = make_voice(runtime.settings.data_dir, "oddtext", reference=unpacked_v2["ref_wav"], config=tiny_voice_config())
    build_bundle = runtime.backend.build_bundle

    def failing_build(voice):
        if voice.id == "oddtext":
            raise LookupError("a resource the text frontend needs is missing")
        return build_bundle(voice)

    monkeypatch.setattr(runtime.backend, "build_bundle", failing_build)
    try:
        assert "oddtext" in await _voice_names(served.port)
        result = await ha_synthesize(served.port, "Hello there.", voice="oddtext")
        assert result.error is not None and result.error.code == "voice-unusable"
        assert "LookupError" in result.error.text
        assert "oddtext" not in await _voice_names(served.port)
        assert "LookupError" in runtime.registry.problems()["oddtext"]
        monkeypatch.undo()
        (folder / "ref.txt").write_text("This is a changed reference.", encoding="utf-8")
        assert "oddtext" in await _voice_names(served.port)
        assert (await ha_synthesize(served.port, "Hello there.", voice="oddtext")).audio
    finally:
        shutil.rmtree(folder)


async def _voice_names(port: int) -> set[str]:
    return {voice.name for voice in (await describe(port)).tts[0].voices}


async def test_client_that_stops_reading_is_cut_off(runtime: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    """A client that asks for a long answer and then reads nothing held its connection (and the
    sender task) forever: writes that wait longer than the idle timeout end the connection, and
    the engine is free for others."""
    text = " ".join(f"Number {i} is here and it is spoken slowly." for i in range(40))
    async with recording_server(runtime, ConnectionLimits(idle_timeout=1.0)) as served:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up after a little audio
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", served.port))
        await asyncio.get_running_loop().sock_sendall(sock, _frame({"type": "synthesize", "data": {"text": text}}))
        caplog.set_level(logging.INFO)
        assert await served.wait_for_endings(1, timeout=120) == [None]  # ended, nothing escaped
        assert "read nothing" in caplog.text  # cut off while audio waited, not idle after the answer
        sock.close()
        assert (await ha_synthesize(served.port, "Hello there.", voice="tiny")).audio


def test_limit_flags_default_to_the_one_place_defaults_live() -> None:
    from wyoming_gsv.__main__ import parse_args, serve_settings

    defaults = serve_settings(parse_args(["--data-dir", "/data"]))
    assert (defaults.max_connections, defaults.idle_timeout) == (ConnectionLimits().max_connections, ConnectionLimits().idle_timeout)
    chosen = serve_settings(parse_args(["--data-dir", "/data", "--max-connections", "5", "--idle-timeout", "2.5"]))
    assert (chosen.max_connections, chosen.idle_timeout) == (5, 2.5)
    for bad in (["--max-connections", "0"], ["--idle-timeout", "0"], ["--idle-timeout", "inf"]):
        with pytest.raises(SystemExit):
            parse_args(["--data-dir", "/data", *bad])
