"""v2Pro speaker path: resampling, Kaldi fbank and ERes2NetV2 against the official goldens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import fixture_manifest, load_npz, reference_clip, unpack_xz
from wyoming_gsv.gsv.errors import ModelFileError
from wyoming_gsv.gsv.audio import sinc_resample
from wyoming_gsv.gsv.fbank import kaldi_fbank
from wyoming_gsv.gsv.speaker import SpeakerEncoder


@pytest.fixture(scope="module")
def golden(v2pro_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2pro_tiny / "sv_golden.npz")


@pytest.fixture(scope="module")
def reference(v2pro_tiny: Path) -> np.ndarray:
    audio, rate = sf.read(reference_clip(v2pro_tiny), dtype="float32")
    assert rate == fixture_manifest(v2pro_tiny)["config"]["ref_sr"]
    return audio


@pytest.fixture(scope="module")
def sv_file(v2pro_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = v2pro_tiny / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt.xz"
    return unpack_xz(src, tmp_path_factory.mktemp("sv") / "pretrained_eres2netv2w24s4ep4.ckpt")


@pytest.fixture(scope="module")
def encoder(sv_file: Path) -> SpeakerEncoder:
    return SpeakerEncoder.from_file(sv_file)


def test_resample_to_16k_matches_torchaudio(golden, reference, v2pro_tiny):
    rate = fixture_manifest(v2pro_tiny)["config"]["ref_sr"]
    full = sinc_resample(torch.from_numpy(reference), rate, 16000).numpy()
    half = sinc_resample(torch.from_numpy(reference[: len(reference) // 2]), rate, 16000).numpy()
    np.testing.assert_allclose(full, golden["audio_16k"], atol=1e-6)
    np.testing.assert_allclose(half, golden["audio_16k_half"], atol=1e-6)


def test_resample_same_rate_is_identity():
    x = torch.randn(1000)
    assert sinc_resample(x, 16000, 16000) is x


def test_kaldi_fbank_matches_reference(golden):
    for suffix in ("", "_half"):
        fbank = kaldi_fbank(torch.from_numpy(golden["audio_16k" + suffix])).numpy()
        assert fbank.shape == golden["fbank" + suffix].shape
        np.testing.assert_allclose(fbank, golden["fbank" + suffix], atol=1e-4, rtol=1e-4)


def test_kaldi_fbank_rejects_short_or_multichannel_audio():
    with pytest.raises(ValueError, match="shorter than one frame"):
        kaldi_fbank(torch.zeros(100))
    with pytest.raises(ValueError, match="1-D"):
        kaldi_fbank(torch.zeros(2, 16000))


def test_stage_summaries_match(golden, encoder):
    with torch.inference_mode():
        stages = encoder.network.stages(torch.from_numpy(golden["fbank"]).unsqueeze(0))
    for name, value in stages.items():
        value = value[0].numpy()
        np.testing.assert_allclose(value.mean(axis=(1, 2)), golden[f"{name}_chmean"], atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(value[:8, :, :16], golden[f"{name}_crop"], atol=2e-3, rtol=1e-4)


def test_embedding_from_reference_audio(golden, reference, encoder):
    full = encoder.embed(reference).numpy()
    half = encoder.embed(reference[: len(reference) // 2]).numpy()
    assert full.shape == golden["sv_emb"].shape
    np.testing.assert_allclose(full, golden["sv_emb"], atol=2e-3, rtol=1e-4)
    np.testing.assert_allclose(half, golden["sv_emb_half"], atol=2e-3, rtol=1e-4)


def test_fp16_file_loads_into_fp32_network(sv_file, tmp_path, golden, encoder):
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in torch.load(sv_file).items()}
    path = tmp_path / "sv16.ckpt"
    torch.save(half, path)
    loaded = SpeakerEncoder.from_file(path)
    assert next(loaded.network.parameters()).dtype == torch.float32
    fbank = torch.from_numpy(golden["fbank_half"]).unsqueeze(0)
    with torch.inference_mode():
        a, b = loaded.network(fbank), encoder.network(fbank)
    # fixture weights are fp16-exact, so the fp16 round trip changes nothing
    torch.testing.assert_close(a, b)


def test_missing_and_broken_files_raise_model_file_error(tmp_path, sv_file):
    with pytest.raises(ModelFileError, match="not found"):
        SpeakerEncoder.from_file(tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a torch file at all" * 10)
    with pytest.raises(ModelFileError, match="junk.ckpt"):
        SpeakerEncoder.from_file(junk)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(sv_file.read_bytes()[:1_000_000])
    with pytest.raises(ModelFileError):
        SpeakerEncoder.from_file(truncated)
    partial = tmp_path / "partial.ckpt"
    state = torch.load(sv_file)
    torch.save({k: v for k, v in state.items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ModelFileError, match="missing"):
        SpeakerEncoder.from_file(partial)
    reshaped = tmp_path / "reshaped.ckpt"
    name = next(key for key, value in state.items() if key.startswith("layer4.") and value.dim() > 1)
    torch.save({**state, name: state[name].flatten()}, reshaped)
    with pytest.raises(ModelFileError, match=f"{name} has shape"):
        SpeakerEncoder.from_file(reshaped)


def test_reference_audio_is_read_as_the_official_spectrogram_path(v2pro_tiny, golden, tmp_path):
    """load_reference_audio resamples with the torchaudio-equivalent kernel and caps the peak."""
    from wyoming_gsv.gsv.audio import load_reference_audio

    audio_16k = load_reference_audio(reference_clip(v2pro_tiny), 16000)
    np.testing.assert_allclose(audio_16k, golden["audio_16k"], atol=1e-6)
    stereo_loud = tmp_path / "loud.wav"
    mono, rate = sf.read(reference_clip(v2pro_tiny), dtype="float32")
    sf.write(stereo_loud, np.stack([mono * 3, mono * 3], axis=1), rate, subtype="FLOAT")
    loud = load_reference_audio(stereo_loud, rate)
    # peak 3 * 0.6 = 1.8 > 1 -> divided by min(2, 1.8)
    assert np.abs(loud).max() == pytest.approx(1.0, abs=1e-6)
