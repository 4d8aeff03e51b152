"""v2Pro / v2ProPlus SoVITS against the official goldens (tiny fixtures, header-tagged files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import FIXTURES, load_npz, reference_clip, speed_goldens, unpack_xz
from wyoming_gsv.gsv.audio import load_reference_audio
from wyoming_gsv.gsv.checkpoints import load_sovits_checkpoint
from wyoming_gsv.gsv.errors import ModelFileError
from wyoming_gsv.gsv.sovits import SovitsModel
from wyoming_gsv.gsv.sovits_pro import SovitsProModel, sovits_from_checkpoint
from wyoming_gsv.gsv.speaker import SpeakerEncoder
from wyoming_gsv.gsv.ssl import HubertEncoder, reference_prompt_codes

ACT = dict(atol=1e-4, rtol=1e-4)
WAVE = dict(atol=2e-4, rtol=0)
FILES = {"v2Pro": "s2_tiny_v2pro.pth", "v2ProPlus": "s2_tiny_v2proplus.pth"}
GOLDENS = {"v2Pro": "s2_golden_v2pro.npz", "v2ProPlus": "s2_golden_v2proplus.npz"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pro_files(v2pro_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("v2pro")
    return {version: unpack_xz(v2pro_tiny / f"{name}.xz", root / name) for version, name in FILES.items()}


@pytest.fixture(scope="module")
def sv_golden(v2pro_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2pro_tiny / "sv_golden.npz")


@pytest.fixture(scope="module", params=list(FILES))
def case(request, pro_files, v2pro_tiny):
    version = request.param
    model = sovits_from_checkpoint(load_sovits_checkpoint(pro_files[version]))
    golden = load_npz(v2pro_tiny / GOLDENS[version])
    return version, model, golden


def reference_ge(model: SovitsModel, sv_golden, *suffixes: str) -> torch.Tensor:
    specs = [torch.from_numpy(sv_golden["spec" + s])[None] for s in suffixes]
    embeddings = [torch.from_numpy(sv_golden["sv_emb" + s]) for s in suffixes]
    return model.global_embedding(specs, embeddings)


def test_header_tagged_files_load_as_their_version(case, pro_files):
    version, model, _ = case
    assert pro_files[version].read_bytes()[:2] == {"v2Pro": b"05", "v2ProPlus": b"06"}[version]
    assert isinstance(model, SovitsProModel)
    assert model.version == version
    assert model.sampling_rate == 32000


def test_global_embedding_with_speaker_projection(case, sv_golden):
    _, model, golden = case
    ge = reference_ge(model, sv_golden, "")
    np.testing.assert_allclose(ge[0].numpy(), golden["ge"], **ACT)
    np.testing.assert_allclose(model.mrte_condition(ge)[0, :, 0].numpy(), golden["ge512"], **ACT)
    ge_half = reference_ge(model, sv_golden, "_half")
    np.testing.assert_allclose(ge_half[0].numpy(), golden["ge_half"], **ACT)


def test_prior_and_flow_match(case, sv_golden):
    _, model, golden = case
    ge = reference_ge(model, sv_golden, "")
    codes, phones = torch.from_numpy(golden["codes"]), torch.from_numpy(golden["phones"])
    x, m_p, logs_p = model.encode(codes, phones, ge)
    np.testing.assert_allclose(x[0].numpy(), golden["enc_x"], **ACT)
    np.testing.assert_allclose(m_p[0].numpy(), golden["m_p"], **ACT)
    np.testing.assert_allclose(logs_p[0].numpy(), golden["logs_p"], **ACT)
    z = model.latent(codes, phones, ge, noise_scale=0.0)
    np.testing.assert_allclose(z[0].numpy(), golden["z"], **ACT)


@pytest.mark.parametrize(
    "key, kwargs",
    [
        ("audio_noise0", dict(noise_scale=0.0)),
        ("audio_noise05", dict(noise_scale=0.5, noise="noise")),
        *[(name, dict(noise_scale=0.0, speed=speed)) for name, speed in speed_goldens(FIXTURES / "gsv-v2pro-tiny")],
    ],
)
def test_waveforms_match(case, sv_golden, key, kwargs):
    _, model, golden = case
    ge = reference_ge(model, sv_golden, "")
    if kwargs.get("noise"):
        kwargs = {**kwargs, "noise": torch.from_numpy(golden["noise"])}
    audio = model.decode(torch.from_numpy(golden["codes"]), torch.from_numpy(golden["phones"]), ge, **kwargs)
    np.testing.assert_allclose(audio.numpy(), golden[key], **WAVE)


def test_two_references_average_after_prelu(case, sv_golden):
    _, model, golden = case
    ge = reference_ge(model, sv_golden, "", "_half")
    audio = model.decode(torch.from_numpy(golden["codes"]), torch.from_numpy(golden["phones"]), ge, noise_scale=0.0)
    np.testing.assert_allclose(audio.numpy(), golden["audio_tworef"], **WAVE)


def test_reference_file_to_ge_through_the_speaker_network(case, v2pro_tiny, tmp_path_factory):
    """The whole reference side from the wav file: spectrogram + ERes2NetV2 embedding -> ge."""
    _, model, golden = case
    sv_path = unpack_xz(
        v2pro_tiny / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt.xz",
        tmp_path_factory.getbasetemp() / "sv-shared" / "pretrained_eres2netv2w24s4ep4.ckpt",
    )
    speaker = SpeakerEncoder.from_file(sv_path)
    audio = load_reference_audio(reference_clip(v2pro_tiny), model.sampling_rate)
    spec = model.spectrogram(torch.from_numpy(audio))
    ge = model.global_embedding([spec], [speaker.embed(audio, model.sampling_rate)])
    np.testing.assert_allclose(ge[0].numpy(), golden["ge"], atol=2e-4, rtol=1e-4)


def test_prompt_codes_reuse_the_v2_hubert_path(case, unpacked_v2, v2pro_tiny):
    _, model, golden = case
    hubert = HubertEncoder.from_folder(unpacked_v2["hubert"])
    codes = reference_prompt_codes(reference_clip(v2pro_tiny), hubert, model)
    np.testing.assert_array_equal(codes.numpy(), golden["prompt_codes"])


def test_pro_model_requires_a_speaker_embedding(case, sv_golden):
    _, model, _ = case
    with pytest.raises(ValueError, match="speaker embedding"):
        model.global_embedding([torch.from_numpy(sv_golden["spec"])[None]])


def test_dispatch_builds_plain_v2_for_v2_files(unpacked_v2):
    model = sovits_from_checkpoint(load_sovits_checkpoint(unpacked_v2["sovits"]))
    assert type(model) is SovitsModel
    assert not model.needs_speaker_embedding


def test_pro_weights_missing_speaker_projection_are_refused(pro_files):
    ckpt = load_sovits_checkpoint(pro_files["v2Pro"])
    del ckpt.weights["sv_emb.weight"]
    with pytest.raises(ModelFileError, match="sv_emb.weight"):
        sovits_from_checkpoint(ckpt)
