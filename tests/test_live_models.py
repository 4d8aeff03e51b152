"""Base models copied in while the server runs (by hand: cp, Samba) are used from the next describe
or request on, without a restart; a file still being copied is never loaded. Real engine on the
tiny fixture models, real TCP."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import torch
from wyoming.server import AsyncTcpServer

from server_client import describe, ha_synthesize
from voice_data import make_voice, tiny_voice_config
from wyoming_gsv.download import PRETRAINED
from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.server.run import bound_port, handler_factory
from wyoming_gsv.synthesis.gsv_backend import SUPPORTED_OUTPUT_RATE
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.synthesis.service import PLACEHOLDER_VOICE
from wyoming_gsv.voices.models import SETTLE_SECONDS

V2 = PRETRAINED["v2"]


async def _names(port: int) -> list[str]:
    return [voice.name for program in (await describe(port)).tts for voice in program.voices]


def _copy_by_hand(source: Path, target: Path) -> None:
    """As `cp` does: the copy gets the time of copying (not the source's)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target, copy_function=shutil.copyfile, dirs_exist_ok=True)
    else:
        shutil.copyfile(source, target)


def _wait_settled() -> None:
    time.sleep(SETTLE_SECONDS + 0.3)


async def test_models_copied_in_after_start_are_used_and_half_copies_are_not(
    unpacked_v2: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch.set_num_threads(1)
    data_dir = tmp_path / "data"
    make_voice(data_dir, "tiny", reference=unpacked_v2["ref_wav"], config=tiny_voice_config())
    models = data_dir / "models"
    runtime = Runtime(RuntimeSettings(data_dir=data_dir, threads=1, use_fallback=False))
    runtime.warm_up()
    runtime.start()
    server = AsyncTcpServer("127.0.0.1", 0)
    await server.start(handler_factory(runtime.service, HandlerSettings()))
    port = bound_port(server)
    try:
        # Nothing installed: the message names the file it looked for.
        assert await _names(port) == [PLACEHOLDER_VOICE.name]
        assert f"looked for {models / V2.gpt}" in runtime.registry.problems()["tiny"]

        # The encoders and the GPT copied in, the SoVITS half way through its copy.
        _copy_by_hand(unpacked_v2["hubert"], models / V2.hubert_dir)
        _copy_by_hand(unpacked_v2["bert"], models / V2.bert_dir)
        _copy_by_hand(unpacked_v2["gpt"], models / V2.gpt)
        sovits = unpacked_v2["sovits"].read_bytes()
        (models / V2.sovits).write_bytes(sovits[: len(sovits) // 2])
        assert await _names(port) == [PLACEHOLDER_VOICE.name]
        assert "still being written" in runtime.registry.problems()["tiny"]

        # The copy stalls past the settling time: the voice is offered, but the half file fails
        # to load, which leaves the voice out (a clear error, no crash) until the file changes.
        _wait_settled()
        assert await _names(port) == ["tiny"]
        with caplog.at_level(logging.INFO):
            result = await ha_synthesize(port, "Hello there.", voice="tiny")
        assert result.error is not None and result.error.code == "voice-unusable", result.error
        assert Path(V2.sovits).name in result.error.text  # the file (clients get its name, the log its path)
        assert await _names(port) == [PLACEHOLDER_VOICE.name]

        # The copy completes: picked up from the next describe on, and it speaks.
        with open(models / V2.sovits, "ab") as rest:
            rest.write(sovits[len(sovits) // 2 :])
        assert await _names(port) == [PLACEHOLDER_VOICE.name]  # changed a moment ago
        _wait_settled()
        assert await _names(port) == ["tiny"]
        result = await ha_synthesize(port, "Hello there.", voice="tiny")
        assert result.error is None and result.rate == SUPPORTED_OUTPUT_RATE and result.seconds > 0.2

        # Replaced by another copy (same path, new file): loaded again, not the old one kept.
        loads = sum("Loading GPT" in r.getMessage() for r in caplog.records)
        _copy_by_hand(unpacked_v2["sovits"], models / V2.sovits)
        _wait_settled()
        with caplog.at_level(logging.INFO):
            result = await ha_synthesize(port, "Hello again.", voice="tiny")
        assert result.error is None and result.audio
        assert sum("Loading GPT" in r.getMessage() for r in caplog.records) == loads + 1
    finally:
        await server.stop()
        runtime.close()


def test_the_preferred_version_is_the_default_pair(tmp_path: Path) -> None:
    """--fetch-models v2Pro makes v2Pro's pair the default once both its files are present."""
    from wyoming_gsv.voices import ModelPaths

    models = tmp_path / "models"
    for rel in (V2.gpt, V2.sovits, PRETRAINED["v2Pro"].gpt):
        (models / rel).parent.mkdir(parents=True, exist_ok=True)
        (models / rel).write_bytes(b"PK")
    paths = ModelPaths.resolve(tmp_path, prefer="v2Pro")
    assert (paths.gpt, paths.sovits) == (models / V2.gpt, models / V2.sovits)  # v2Pro is incomplete
    pro = models / PRETRAINED["v2Pro"].sovits
    pro.parent.mkdir(parents=True)
    pro.write_bytes(b"PK")
    refreshed = paths.refreshed()
    assert (refreshed.gpt, refreshed.sovits) == (models / PRETRAINED["v2Pro"].gpt, pro)
    assert ModelPaths.resolve(tmp_path).sovits == models / V2.sovits  # no preference: v2 first
