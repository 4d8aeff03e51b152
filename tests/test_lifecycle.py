"""Start-up, shutdown and health of real processes: a port already taken, SIGTERM/SIGINT while a
synthesis runs, Ctrl-C in `wyoming-gsv synth`, and the health check with no usable voice.

Durations are asserted with a wide margin (a loaded 2-core machine); the measured figures are
printed (`pytest -s`) for the record.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wyoming.audio import AudioChunk
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeVoice

from server_client import describe
from server_process import ServerProcess, free_port, launch, server_env, start_server
from voice_data import make_tiny_data_dir, make_voice
from wyoming_gsv.synthesis.service import PLACEHOLDER_VOICE

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = ROOT / "addon" / "rootfs" / "usr" / "local" / "bin" / "wyoming-gsv-healthcheck"
STOP_LIMIT = 2.0  # what the service promises
MARGIN = 2.0  # a loaded CI machine
LONG_TEXT = " ".join(f"This is sentence number {n} of a long announcement." for n in range(1, 31))
CRASH_MARKS = ("Traceback", "terminate called", "Aborted", "core dumped")


@pytest.fixture(scope="module")
def data_dir(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_data_dir(tmp_path_factory.mktemp("lifecycle-data"), unpacked_v2)


@pytest.mark.parametrize("which", ["wyoming", "web"])
def test_port_in_use_is_one_line_and_an_exit_before_any_model_loads(data_dir: Path, tmp_path: Path, which: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "server.log"
        wyoming_port = port if which == "wyoming" else free_port()
        argv = ["--uri", f"tcp://127.0.0.1:{wyoming_port}", "--data-dir", str(data_dir)]
        if which == "web":
            argv += ["--web", f"127.0.0.1:{port}"]
        started = time.monotonic()
        process = launch(argv, log)
        code = process.wait(120)
        seconds = time.monotonic() - started
    text = log.read_text()
    print(f"\n{which} port in use: exit {code} after {seconds:.2f} s; log: {text.strip()!r}")
    assert code != 0
    lines = text.strip().splitlines()
    assert len(lines) == 1 and f"port {port} is already in use" in lines[0], text
    assert "Voice" not in text and "Loading" not in text  # nothing was loaded first


async def _stop_during_synthesis(server: ServerProcess, signum: int) -> tuple[int, float, int]:
    """Start a long synthesis, send `signum` once its first audio arrived; (exit code, seconds to
    exit, audio bytes the client got)."""
    received = 0
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        await client.write_event(Synthesize(text=LONG_TEXT, voice=SynthesizeVoice(name="tiny")).event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 120)
            assert event is not None, server.log()
            if AudioChunk.is_type(event.type):
                received += len(AudioChunk.from_event(event).audio)
                break
        started = time.monotonic()
        server.process.send_signal(signum)
        code = await asyncio.get_running_loop().run_in_executor(None, server.process.wait, 30)
        seconds = time.monotonic() - started
        while (event := await asyncio.wait_for(client.read_event(), 10)) is not None:  # closed, not hung
            if AudioChunk.is_type(event.type):
                received += len(AudioChunk.from_event(event).audio)
    return code, seconds, received


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_the_server_quickly_cancelling_the_running_synthesis(
    data_dir: Path, tmp_path: Path, signum: int
) -> None:
    server = start_server(data_dir, "--no-fallback", log_path=tmp_path / "server.log")
    try:
        code, seconds, received = asyncio.run(_stop_during_synthesis(server, signum))
    finally:
        server.kill()
    log = server.log()
    print(f"\n{signal.Signals(signum).name} during a synthesis: exit {code} after {seconds:.2f} s")
    assert code == 0, log
    assert seconds < STOP_LIMIT + MARGIN, f"took {seconds:.2f} s:\n{log}"
    assert received > 0
    assert not any(mark in log for mark in CRASH_MARKS), log


def test_ctrl_c_in_synth_exits_130_at_once(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    log = tmp_path / "synth.log"
    argv = ["synth", "--data-dir", str(data_dir), "--voice", "tiny", "--threads", "1", "--no-fallback",
            "-o", str(out), LONG_TEXT]
    process = launch(argv, log)
    try:
        deadline = time.monotonic() + 120
        while "Loading GPT" not in log.read_text():  # the synthesis is under way on the engine thread
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(30)
        seconds = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    print(f"\nCtrl-C in synth: exit {code} after {seconds:.2f} s")
    assert code == 130, text
    assert seconds < STOP_LIMIT + MARGIN
    assert "interrupted" in text and not any(mark in text for mark in CRASH_MARKS), text
    assert not out.exists()


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--port", str(port), "--timeout", "30"],
        capture_output=True, text=True, timeout=60, env=server_env(),
    )


def test_no_usable_voice_fails_the_health_check_but_describe_offers_a_voice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    make_voice(data_dir, "anna")  # no models yet: left out
    server = start_server(data_dir, "--no-fallback", log_path=tmp_path / "server.log")
    try:
        info = asyncio.run(describe(server.port))
        (voice,) = info.tts[0].voices
        assert voice.name == PLACEHOLDER_VOICE.name and voice.languages  # HA's entity needs one
        result = _healthcheck(server.port)
        log = server.log()
    finally:
        server.kill()
    assert result.returncode == 1
    assert "no usable voice" in result.stdout
    warning = next(line for line in log.splitlines() if "No usable voice" in line)
    assert "anna" in warning and "--fetch-models" in warning and str(data_dir / "voices") in warning


def test_health_check_passes_with_the_fallback_voice(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    server = start_server(data_dir, log_path=tmp_path / "server.log")
    try:
        result = _healthcheck(server.port)
    finally:
        server.kill()
    assert result.returncode == 0, result.stdout + server.log()


def test_healthcheck_knows_the_placeholder_name() -> None:
    """The check does not import the server (that would load torch every minute): same name."""
    assert f'PLACEHOLDER_VOICE = "{PLACEHOLDER_VOICE.name}"' in HEALTHCHECK.read_text()

