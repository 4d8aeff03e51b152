"""The first run as a user lives it, on a real server process: an empty models folder, the models
fetched from a (fake, 127.0.0.1) hub in the background while the piper fallback voice already
speaks, and the cloned voice ready once the files land; an interrupted download resumed by the
next start, a corrupt file fetched again.

The hub serves the tiny fixture models under the official v2 file names (tests/fake_hub.py).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from fake_hub import FakeHub, closed_port_url, serve_hub
from server_client import describe, ha_synthesize
from server_process import ServerProcess, server_env, start_server
from voice_data import backdate, make_voice, tiny_voice_config
from wyoming_gsv.download import PRETRAINED
from wyoming_gsv.synthesis.fallback import FALLBACK_VOICE_NAME, PiperFallback
from wyoming_gsv.synthesis.gsv_backend import SUPPORTED_OUTPUT_RATE

V2 = PRETRAINED["v2"]
READY_TIMEOUT = 60.0
FALLBACK_RATE = PiperFallback().voice_info().sample_rate


@pytest.fixture(scope="module")
def tiny_files(unpacked_v2: dict[str, Path], v2_tiny: Path) -> dict[str, bytes]:
    """The official v2 file names with the tiny fixture models' bytes."""
    sources = {
        f"{V2.hubert_dir}/config.json": unpacked_v2["hubert"] / "config.json",
        f"{V2.hubert_dir}/preprocessor_config.json": unpacked_v2["hubert"] / "preprocessor_config.json",
        f"{V2.hubert_dir}/pytorch_model.bin": unpacked_v2["hubert"] / "pytorch_model.bin",
        f"{V2.bert_dir}/config.json": unpacked_v2["bert"] / "config.json",
        f"{V2.bert_dir}/tokenizer.json": unpacked_v2["bert"] / "tokenizer.json",
        f"{V2.bert_dir}/pytorch_model.bin": unpacked_v2["bert"] / "pytorch_model.bin",
        V2.gpt: unpacked_v2["gpt"],
        V2.sovits: unpacked_v2["sovits"],
    }
    assert set(sources) == set(V2.files())  # exactly what `download --version v2` fetches
    return {name: path.read_bytes() for name, path in sources.items()}


@pytest.fixture
def tiny_hub(tiny_files: dict[str, bytes]) -> Iterator[FakeHub]:
    yield from serve_hub(dict(tiny_files))


def _voice_dir(tmp_path: Path, unpacked_v2: dict[str, Path]) -> Path:
    """A data dir with one voice folder (as added in the panel) and no models yet."""
    data_dir = tmp_path / "data"
    make_voice(data_dir, "tiny", reference=unpacked_v2["ref_wav"], config=tiny_voice_config())
    return data_dir


def _fetching_server(data_dir: Path, hub: FakeHub, log_path: Path, *extra: str) -> ServerProcess:
    env = server_env(HF_ENDPOINT=hub.url, HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
    return start_server(data_dir, "--fetch-models", "v2", *extra, log_path=log_path, env=env)


def _voices(port: int) -> list[str]:
    info = asyncio.run(describe(port))
    return [voice.name for program in info.tts for voice in program.voices]


def _wait_for_voice(server: ServerProcess, name: str) -> float:
    started = time.monotonic()
    while name not in _voices(server.port):
        assert time.monotonic() - started < READY_TIMEOUT, f"{name} never listed:\n{server.log()}"
        time.sleep(0.2)
    return time.monotonic() - started


def _speak(port: int, voice: str | None = None) -> tuple[int, float]:
    result = asyncio.run(ha_synthesize(port, "Hello there.", voice=voice))
    assert result.error is None, result.error
    assert result.rate and result.seconds > 0.1
    return result.rate, result.seconds


def test_models_download_in_the_background_while_the_fallback_voice_speaks(
    tiny_hub: FakeHub, tmp_path: Path, unpacked_v2: dict[str, Path]
) -> None:
    data_dir = _voice_dir(tmp_path, unpacked_v2)
    held = len(tiny_hub.files[V2.sovits]) // 2
    tiny_hub.hold[V2.sovits] = held  # the last file stops half way until released
    server = _fetching_server(data_dir, tiny_hub, tmp_path / "server.log")
    try:
        server.wait_for_log(f"downloading {V2.sovits}")
        # Mid-download: describe answers, the voice waits for its SoVITS file, piper speaks.
        assert _voices(server.port) == [FALLBACK_VOICE_NAME]
        rate, _ = _speak(server.port)
        assert rate == FALLBACK_RATE  # piper's rate: the fallback voice answered
        assert not (data_dir / "models" / V2.sovits).exists()  # the half file is not in place
        log = server.log()
        assert f"no sovits weights: looked for {data_dir / 'models' / V2.sovits}" in log
        for rel in V2.files()[:-1]:
            assert f"{rel} downloaded and verified" in log, log
        assert re.search(r"Models v2: \d+% \([\d.]+ MB of [\d.]+ MB\)", log), log  # progress in tenths

        tiny_hub.release.set()
        server.wait_for_log("all 8 files in place")
        _wait_for_voice(server, "tiny")
        rate, seconds = _speak(server.port, "tiny")
        assert rate == SUPPORTED_OUTPUT_RATE and seconds > 0.2  # the cloned voice (GPT-SoVITS v2 speaks at 32 kHz)
        assert (data_dir / "models" / V2.sovits).read_bytes() == tiny_hub.files[V2.sovits]
        assert "Models v2: 100%" in server.log()
    finally:
        server.kill()
    assert "Traceback" not in server.log()


def test_interrupted_download_resumes_and_a_corrupt_file_is_fetched_again(
    tiny_hub: FakeHub, tmp_path: Path, unpacked_v2: dict[str, Path]
) -> None:
    data_dir = _voice_dir(tmp_path, unpacked_v2)
    corrupt = data_dir / "models" / V2.gpt
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(bytes(len(tiny_hub.files[V2.gpt])))  # right size, wrong bytes
    backdate(corrupt)
    tiny_hub.hold[V2.sovits] = len(tiny_hub.files[V2.sovits]) // 2

    first = _fetching_server(data_dir, tiny_hub, tmp_path / "first.log")
    try:
        first.wait_for_log(f"downloading {V2.sovits}")
        partial = _settled_partial(data_dir / "models")
        code, _seconds = first.stop()  # the add-on is stopped in the middle of the download
        assert code == 0, first.log()
    finally:
        first.kill()
    held = partial.stat().st_size
    assert 0 < held < len(tiny_hub.files[V2.sovits])
    assert (data_dir / "models" / V2.gpt).read_bytes() == tiny_hub.files[V2.gpt]  # the corrupt copy replaced
    assert "differs from the hub's copy" in first.log()

    tiny_hub.requests.clear()
    tiny_hub.release.set()
    second = _fetching_server(data_dir, tiny_hub, tmp_path / "second.log")
    try:
        second.wait_for_log("all 8 files in place")
        assert ("GET", f"/cdn/{V2.sovits}", f"bytes={held}-") in tiny_hub.gets()  # resumed, not restarted
        files_fetched = [path for _, path, _ in tiny_hub.gets() if not path.startswith("/api/")]  # the client's own lookups
        assert files_fetched == [f"/cdn/{V2.sovits}"]  # nothing else fetched again
        assert (data_dir / "models" / V2.sovits).read_bytes() == tiny_hub.files[V2.sovits]
        _wait_for_voice(second, "tiny")
        assert _speak(second.port, "tiny")[0] == SUPPORTED_OUTPUT_RATE
    finally:
        second.kill()
    assert "Traceback" not in first.log() + second.log()


def _settled_partial(models: Path) -> Path:
    """The download's partial file once it holds bytes and stops growing (the hub holds back)."""
    deadline, last = time.monotonic() + 60, -1
    while True:
        parts = list((models / ".download").rglob("*.part"))
        size = parts[0].stat().st_size if parts else 0
        if size and size == last:
            return parts[0]
        assert time.monotonic() < deadline, f"no partial download in {models}"
        last = size
        time.sleep(0.5)


def test_unreachable_hub_is_one_log_line_and_the_server_keeps_serving(
    tmp_path: Path, unpacked_v2: dict[str, Path]
) -> None:
    data_dir = _voice_dir(tmp_path, unpacked_v2)
    env = server_env(HF_ENDPOINT=closed_port_url(), HF_HUB_OFFLINE="0", HF_HUB_DISABLE_PROGRESS_BARS="1")
    server = start_server(data_dir, "--fetch-models", "v2", log_path=tmp_path / "server.log", env=env)
    try:
        server.wait_for_log("trying again in")
        assert _voices(server.port) == [FALLBACK_VOICE_NAME]
        assert _speak(server.port)[0] == FALLBACK_RATE
        lines = [line for line in server.log().splitlines() if "trying again in" in line]
        assert len(lines) == 1 and "cannot reach" in lines[0] and "Serving on" in lines[0]
    finally:
        server.kill()
    assert "Traceback" not in server.log()


def test_offline_mode_is_named_once(tmp_path: Path, unpacked_v2: dict[str, Path]) -> None:
    """HF_HUB_OFFLINE=1 (the suite's own setting, as a user may have it): said once, no crash."""
    data_dir = _voice_dir(tmp_path, unpacked_v2)
    env = server_env(HF_HUB_OFFLINE="1")
    server = start_server(data_dir, "--fetch-models", "v2", log_path=tmp_path / "server.log", env=env)
    try:
        server.wait_for_log("trying again in")
        assert "HF_HUB_OFFLINE" in server.log()
        assert _voices(server.port) == [FALLBACK_VOICE_NAME]
    finally:
        server.kill()


def test_fetch_models_flag_names_the_versions() -> None:
    from shipping import parse_cli

    assert parse_cli(["--data-dir", "/d", "--fetch-models", "v2Pro"]).fetch_models == "v2Pro"
    with pytest.raises(AssertionError):
        parse_cli(["--data-dir", "/d", "--fetch-models", "v9"])
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # the suite stays offline outside these servers
