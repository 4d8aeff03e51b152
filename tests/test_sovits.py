"""SoVITS decoder parity with the official implementation (tiny v2 fixture) and robustness."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import FIXTURES, load_npz, speed_goldens
from wyoming_gsv.gsv.checkpoints import SovitsCheckpoint, load_sovits_checkpoint
from wyoming_gsv.gsv.errors import ModelFileError
from wyoming_gsv.gsv.sovits import SovitsConfig, SovitsModel, reference_spectrogram
from wyoming_gsv.gsv.t2s import intra_op_threads
from wyoming_gsv.gsv.vits_modules import fold_weight_norm

ACT = dict(atol=1e-4, rtol=1e-4)
WAVE = dict(atol=2e-4, rtol=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "s2_golden.npz")


@pytest.fixture(scope="module")
def checkpoint(unpacked_v2: dict[str, Path]) -> SovitsCheckpoint:
    return load_sovits_checkpoint(unpacked_v2["sovits"])


@pytest.fixture(scope="module")
def model(checkpoint: SovitsCheckpoint) -> SovitsModel:
    return SovitsModel.from_checkpoint(checkpoint)


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def batched(array: np.ndarray) -> torch.Tensor:
    return t(array)[None]


def test_model_reports_checkpoint_settings(model: SovitsModel, checkpoint: SovitsCheckpoint) -> None:
    data = checkpoint.config["data"]
    assert model.version == "v2"
    assert model.sampling_rate == data["sampling_rate"]
    assert model.hop_length == data["hop_length"]
    assert model.config.inter_channels == checkpoint.config["model"]["inter_channels"]
    assert model.samples_per_code == 2 * data["hop_length"]


def test_reference_spectrogram(model: SovitsModel, golden, unpacked_v2) -> None:
    audio, rate = soundfile.read(unpacked_v2["ref_wav"], dtype="float32")
    assert rate == model.sampling_rate
    spec = reference_spectrogram(t(audio))
    np.testing.assert_allclose(spec[0].numpy(), golden["spec"], **ACT)
    np.testing.assert_allclose(model.spectrogram(t(audio))[0].numpy(), golden["spec"], **ACT)
    expected_frames = (len(audio) + 2 * 704 - 2048) // 640 + 1
    assert spec.shape == (1, 1025, expected_frames)
    from_file = model.load_reference_spectrogram(unpacked_v2["ref_wav"])
    np.testing.assert_allclose(from_file[0].numpy(), golden["spec"], **ACT)


def test_global_embedding(model: SovitsModel, golden) -> None:
    ge = model.global_embedding([batched(golden["spec"])])
    np.testing.assert_allclose(ge[0].numpy(), golden["ge"], **ACT)
    ge_half = model.global_embedding([batched(golden["spec_half"])])
    np.testing.assert_allclose(ge_half[0].numpy(), golden["ge_half"], **ACT)
    both = model.global_embedding([batched(golden["spec"]), batched(golden["spec_half"])])
    np.testing.assert_allclose(both.numpy(), (ge + ge_half).numpy() / 2, atol=1e-5, rtol=1e-5)


def test_quantizer_decode(model: SovitsModel, golden) -> None:
    quantized = model.quantizer.decode(t(golden["codes"])[None])
    np.testing.assert_allclose(quantized[0].numpy(), golden["quantized_25hz"], **ACT)


def test_encoder_outputs(model: SovitsModel, golden) -> None:
    x, m_p, logs_p = model.encode(t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]))
    np.testing.assert_allclose(x[0].numpy(), golden["enc_x"], **ACT)
    np.testing.assert_allclose(m_p[0].numpy(), golden["m_p"], **ACT)
    np.testing.assert_allclose(logs_p[0].numpy(), golden["logs_p"], **ACT)
    # The official mask is all ones over exactly 2 frames per code.
    assert golden["y_mask"].shape[-1] == m_p.shape[-1] == 2 * len(golden["codes"])
    assert np.all(golden["y_mask"] == 1)


def test_flow_reverse(model: SovitsModel, golden) -> None:
    with torch.inference_mode():
        z = model.flow.reverse(batched(golden["m_p"]), batched(golden["ge"]))
    np.testing.assert_allclose(z[0].numpy(), golden["z"], **ACT)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("audio_noise0", dict(noise_scale=0.0)),
        ("audio_noise05", dict(noise_scale=0.5, noise="noise")),
        *[(name, dict(noise_scale=0.0, speed=speed)) for name, speed in speed_goldens(FIXTURES / "gsv-v2-tiny")],
    ],
)
def test_decode_waveforms(model: SovitsModel, golden, name: str, kwargs: dict) -> None:
    if "noise" in kwargs:
        kwargs = {**kwargs, "noise": t(golden[kwargs["noise"]])}
    audio = model.decode(t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]), **kwargs)
    assert audio.dtype == torch.float32 and audio.dim() == 1
    np.testing.assert_allclose(audio.numpy(), golden[name], **WAVE)


def test_decode_two_references(model: SovitsModel, golden) -> None:
    ge = model.global_embedding([batched(golden["spec"]), batched(golden["spec_half"])])
    audio = model.decode(t(golden["codes"]), t(golden["phones"]), ge, noise_scale=0.0)
    np.testing.assert_allclose(audio.numpy(), golden["audio_tworef"], **WAVE)


def test_noise_is_reproducible_with_generator(model: SovitsModel, golden) -> None:
    args = (t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]))
    first = model.decode(*args, generator=torch.Generator().manual_seed(7))
    again = model.decode(*args, generator=torch.Generator().manual_seed(7))
    other = model.decode(*args, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_fp16_model_runs(checkpoint: SovitsCheckpoint, golden) -> None:
    half = SovitsModel.from_checkpoint(checkpoint, dtype=torch.float16)
    ge = half.global_embedding([batched(golden["spec"])])
    assert ge.dtype == torch.float16
    audio = half.decode(t(golden["codes"]), t(golden["phones"]), ge, noise_scale=0.0)
    assert audio.dtype == torch.float32 and audio.shape == golden["audio_noise0"].shape
    assert torch.isfinite(audio).all()
    # Half precision is not bit-exact, but it must still be the same signal (measured ~0.3%).
    reference = golden["audio_noise0"]
    relative_rms = np.sqrt(np.mean((audio.numpy() - reference) ** 2) / np.mean(reference**2))
    assert relative_rms < 0.02


def tiny_config(version: str) -> SovitsConfig:
    return SovitsConfig(
        version=version,
        n_symbols=322 if version == "v1" else 732,
        inter_channels=8,
        filter_channels=32,
        n_layers=2,
        upsample_initial_channel=32,
    )


def test_v1_variant_builds_and_decodes() -> None:
    torch.manual_seed(0)
    config = tiny_config("v1")
    v1 = SovitsModel(config)
    assert v1.enc_p.text_embedding.num_embeddings == 322
    assert v1.ref_enc.spectral[0].fc.in_features == 1025  # v1 reads the whole spectrogram
    spec = reference_spectrogram(torch.randn(32000) * 0.1)
    ge = v1.global_embedding([spec])
    assert ge.shape == (1, config.gin_channels, 1)
    audio = v1.decode(torch.randint(0, 1024, (10,)), torch.randint(0, 322, (7,)), ge, noise_scale=0.0)
    assert audio.shape == (10 * v1.samples_per_code,)
    assert torch.isfinite(audio).all()


def test_v1_state_dict_round_trip(tmp_path: Path) -> None:
    """A v1-shaped state dict (legacy weight-norm names) loads into a fresh v1 model."""
    torch.manual_seed(1)
    source = SovitsModel(tiny_config("v1"))
    weights = dict(source.state_dict())
    weight_normed = "dec.ups.0.weight"
    w = weights.pop(weight_normed)
    g = w.norm(dim=(1, 2), keepdim=True)
    weights[weight_normed + "_g"] = g
    weights[weight_normed + "_v"] = w * 3.0  # any scale: folding renormalises v
    target = SovitsModel(tiny_config("v1"))
    target.load_weights(weights)
    assert torch.allclose(target.dec.ups[0].weight, w, atol=1e-6)


@pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")
@pytest.mark.parametrize("parametrized", [False, True])
def test_fold_weight_norm_conv_transpose_uses_input_channel_axis(parametrized: bool) -> None:
    conv = torch.nn.ConvTranspose1d(6, 3, 4, 2)
    if parametrized:
        conv = torch.nn.utils.parametrizations.weight_norm(conv)
        g = conv.parametrizations.weight.original0
    else:
        conv = torch.nn.utils.weight_norm(conv)
        g = conv.weight_g
    with torch.no_grad():
        g.uniform_(0.5, 2.0)
        conv(torch.zeros(1, 6, 5))  # recompute the effective weight from g, v
    state = dict(conv.state_dict())
    folded = fold_weight_norm(state)
    assert set(folded) == {"weight", "bias"}
    assert g.shape == (6, 1, 1)  # the norm is per input channel for ConvTranspose
    assert torch.allclose(folded["weight"], conv.weight, atol=1e-6)


def test_missing_weights_raise_model_file_error(checkpoint: SovitsCheckpoint) -> None:
    weights = {k: v for k, v in checkpoint.weights.items() if not k.startswith("flow.flows.2.")}
    broken = dataclasses.replace(checkpoint, weights=weights)
    with pytest.raises(ModelFileError, match="missing .*flow.flows.2"):
        SovitsModel.from_checkpoint(broken)


def test_config_not_fitting_weights_raises(checkpoint: SovitsCheckpoint) -> None:
    config = {**checkpoint.config, "model": {**checkpoint.config["model"], "filter_channels": 48}}
    with pytest.raises(ModelFileError, match="shape") as info:
        SovitsModel.from_checkpoint(dataclasses.replace(checkpoint, config=config))
    assert str(checkpoint.path) in str(info.value)


@pytest.mark.parametrize(
    ("section", "field", "value", "message"),
    [
        ("model", "n_heads", None, "lacks model.n_heads"),
        ("model", "upsample_rates", [10, 8, 2, 2], "upsample"),
        ("model", "n_layers", "six", "n_layers"),
        ("data", "hop_length", 320, "hop"),
    ],
)
def test_broken_config_raises(checkpoint: SovitsCheckpoint, section, field, value, message) -> None:
    block = dict(checkpoint.config[section])
    if value is None:
        del block[field]
    else:
        block[field] = value
    config = {**checkpoint.config, section: block}
    with pytest.raises(ModelFileError, match=message):
        SovitsModel.from_checkpoint(dataclasses.replace(checkpoint, config=config))


def test_unsupported_version_is_refused(checkpoint: SovitsCheckpoint) -> None:
    with pytest.raises(ModelFileError, match="v2Pro"):
        SovitsModel.from_checkpoint(dataclasses.replace(checkpoint, version="v2Pro"))


def test_streamed_sentence_encodes_its_phones_once(model: SovitsModel, golden) -> None:
    """The text side of the prior encoder does not depend on the tokens: a streamed sentence
    computes it at its first chunk and reuses it, and each piece is what recomputing gives."""
    from wyoming_gsv.gsv.streaming import StreamDecoder, StreamingConfig

    codes, phones, ge = golden["codes"].tolist(), t(golden["phones"]), batched(golden["ge"])
    size = max(2, len(codes) // 3)
    chunks = [codes[i : i + size] for i in range(0, len(codes), size)]
    assert len(chunks) >= 2

    def pieces(reuse: bool) -> tuple[list[torch.Tensor], int]:
        calls = 0

        def count(*_args) -> None:
            nonlocal calls
            calls += 1

        hook = model.enc_p.encoder_text.register_forward_hook(count)
        try:
            decoder = StreamDecoder(model, phones, ge, StreamingConfig(min_chunk_tokens=size),
                                    generator=torch.Generator().manual_seed(0))
            if not reuse:  # as before: every chunk's encoder pass sees no earlier encoding
                decoder.sovits = _ForgetfulSovits(model)
            with torch.inference_mode():  # as the engine and the vocoder worker run it
                out = [decoder.piece(chunk, final=index == len(chunks) - 1) for index, chunk in enumerate(chunks)]
        finally:
            hook.remove()
        return out, calls

    reused, reused_calls = pieces(reuse=True)
    recomputed, recomputed_calls = pieces(reuse=False)
    assert reused_calls == 1 and recomputed_calls == len(chunks)
    for ours, reference in zip(reused, recomputed):
        assert torch.equal(ours, reference)


class _ForgetfulSovits:
    """A SoVITS model that hands out no phone encoding: every chunk computes its own."""

    def __init__(self, model: SovitsModel) -> None:
        self.model = model

    def __getattr__(self, name: str):
        return getattr(self.model, name)

    def encode_phones(self, _phone_ids: torch.Tensor) -> None:
        return None


def test_empty_inputs_raise(model: SovitsModel, golden) -> None:
    ge = batched(golden["ge"])
    with pytest.raises(ValueError, match="code"):
        model.decode(torch.zeros(0, dtype=torch.long), t(golden["phones"]), ge)
    with pytest.raises(ValueError, match="phone"):
        model.decode(t(golden["codes"]), torch.zeros(0, dtype=torch.long), ge)
    with pytest.raises(ValueError, match="reference"):
        model.global_embedding([])
    with pytest.raises(ValueError, match="speed"):
        model.decode(t(golden["codes"]), t(golden["phones"]), ge, speed=0)
    with pytest.raises(ValueError, match="noise"):
        model.decode(t(golden["codes"]), t(golden["phones"]), ge, noise=torch.zeros(3, 5))


def test_bfloat16_generator_keeps_the_signal(checkpoint: SovitsCheckpoint, golden) -> None:
    mixed = SovitsModel.from_checkpoint(checkpoint, generator_dtype=torch.bfloat16)
    assert mixed.dtype == torch.float32 and mixed.generator_dtype == torch.bfloat16
    audio = mixed.decode(t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]), noise_scale=0.0)
    reference = golden["audio_noise0"]
    assert audio.dtype == torch.float32 and audio.shape == reference.shape
    relative_rms = np.sqrt(np.mean((audio.numpy() - reference) ** 2) / np.mean(reference**2))
    assert relative_rms < 0.05


def test_prior_runs_on_one_thread_and_the_generator_on_all(model: SovitsModel, golden, monkeypatch) -> None:
    """The text encoder and flow use one intra-op thread on the CPU (their ops are too small to
    split); the generator keeps the caller's threads, which are restored afterwards."""
    seen: dict[str, int] = {}
    flow_reverse, dec_forward = model.flow.reverse, model.dec.forward

    def flow_spy(*args, **kwargs):
        seen["flow"] = torch.get_num_threads()
        return flow_reverse(*args, **kwargs)

    def dec_spy(*args, **kwargs):
        seen["dec"] = torch.get_num_threads()
        return dec_forward(*args, **kwargs)

    monkeypatch.setattr(model.flow, "reverse", flow_spy)
    monkeypatch.setattr(model.dec, "forward", dec_spy)
    with intra_op_threads(2):
        audio = model.decode(t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]), noise_scale=0.0)
        assert seen == {"flow": 1, "dec": 2} and torch.get_num_threads() == 2
        seen.clear()
        model.decode_streaming(t(golden["codes"]), t(golden["phones"]), batched(golden["ge"]), noise_scale=0.0)
        assert seen == {"flow": 1, "dec": 2} and torch.get_num_threads() == 2
    np.testing.assert_allclose(audio.numpy(), golden["audio_noise0"], **WAVE)
