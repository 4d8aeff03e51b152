"""A v2Pro voice end to end: served over Wyoming, spoken by `synth`, bundle holds the speaker."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import fixture_manifest, load_npz, reference_clip, unpack_xz
from server_client import describe, ha_synthesize
from serving import serving
from spy import Spy
from voice_data import link_tiny_models, make_voice, read_wav, tiny_voice_config
from wyoming_gsv.__main__ import main
from wyoming_gsv.gsv.speaker import SpeakerEncoder
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.voices.models import SV_NAME

TEXT = "The front door is open."


@pytest.fixture(scope="module")
def pro_data_dir(unpacked_v2, v2pro_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Base models from the v2 set (as upstream shares them), a v2Pro SoVITS and the sv model."""
    root = tmp_path_factory.mktemp("pro-data")
    link_tiny_models(root, unpacked_v2)
    unpack_xz(v2pro_tiny / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt.xz", root / "models" / SV_NAME)
    unpack_xz(v2pro_tiny / "s2_tiny_v2pro.pth.xz", root / "models" / "user" / "pro_voice.pth")
    config = tiny_voice_config(description="Tiny v2Pro voice", sovits="models/user/pro_voice.pth")
    make_voice(root, "pro", reference=reference_clip(v2pro_tiny), config=config)
    return root


def _model_rate(v2pro_tiny: Path) -> int:
    """The v2Pro SoVITS file's output rate, as the fixture's manifest records it."""
    return fixture_manifest(v2pro_tiny)["version_detection"]["s2_tiny_v2pro.pth"]["sampling_rate"]


def runtime_for(data_dir: Path) -> Runtime:
    return Runtime(RuntimeSettings(data_dir=data_dir, threads=1, max_chars=1000, use_fallback=False))


async def test_v2pro_voice_is_served_like_a_v2_voice(pro_data_dir: Path, v2pro_tiny: Path, monkeypatch) -> None:
    torch.set_num_threads(1)
    spy = Spy(monkeypatch, SpeakerEncoder, "embed")
    runtime = runtime_for(pro_data_dir)
    runtime.warm_up()  # builds the bundle: one speaker embedding for the one reference
    runtime.start()
    try:
        async with serving(runtime) as port:
            info = await describe(port)
            voices = {voice.name: voice for voice in info.tts[0].voices}
            assert "pro" in voices and "en" in voices["pro"].languages
            built = spy.calls
            assert built == 1
            result = await ha_synthesize(port, TEXT, voice="pro")
            assert result.rate == _model_rate(v2pro_tiny) and result.width == 2 and result.channels == 1
            assert result.seconds > 0.2
            assert spy.calls == built  # the request used the bundle, not the speaker network
    finally:
        runtime.close()

    cached = list((pro_data_dir / "cache").glob("pro.*.safetensors"))
    assert len(cached) == 1
    from safetensors.torch import load_file

    tensors = load_file(str(cached[0]))
    embedding_size = load_npz(v2pro_tiny / "sv_golden.npz")["sv_emb"].shape[-1]
    assert tensors["extra.speaker_embeddings"].shape == (1, embedding_size)

    # A new process with the bundle on disk never loads or runs the speaker network.
    fresh = runtime_for(pro_data_dir)
    try:
        monkeypatch.setattr(SpeakerEncoder, "from_file", classmethod(lambda cls, *a, **k: pytest.fail("sv loaded")))
        fresh.warm_up()
        assert spy.calls == built
    finally:
        fresh.close()


def test_synth_speaks_a_v2pro_voice_deterministically(pro_data_dir: Path, v2pro_tiny: Path, tmp_path: Path) -> None:
    frames = []
    for name in ("a.wav", "b.wav"):
        out = tmp_path / name
        argv = ["synth", "--data-dir", str(pro_data_dir), "--voice", "pro", "--threads", "1", "--no-fallback",
                "--top-k", "1", "--noise-scale", "0", TEXT, "-o", str(out)]
        assert main(argv) == 0
        rate, pcm = read_wav(out)
        assert rate == _model_rate(v2pro_tiny)
        frames.append(pcm)
    assert len(frames[0]) > 0 and frames[0] == frames[1]
