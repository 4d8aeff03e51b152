"""SoVITS v3 / v4 parity with the official implementation (gsv-v3v4: full-size files, random weights).

Every float array within 2e-5 * max(1, max|golden|) (the fixture README's recommendation, ~10x the
goldens' own fp32 rounding); codes, lengths and shapes exact. One model is loaded at a time (the
`version` fixture is module-scoped, so all v3 tests run, then all v4 tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from conftest import load_npz
from v3v4_fixture import V3V4Files
from wyoming_gsv.gsv.audio import load_audio, load_reference_audio, load_reference_waveform
from wyoming_gsv.gsv.checkpoints import guess_sovits_version, load_sovits_checkpoint, HASH_PREFIX_BYTES
from wyoming_gsv.gsv.mel import denormalize_mel
from wyoming_gsv.gsv.sovits_v3 import LAYOUTS, PromptContext, SovitsV3Model, load_vocoder
from wyoming_gsv.gsv.ssl import SSL_SAMPLE_RATE, HubertEncoder, ssl_pad_samples

REL = 2e-5  # README: max|diff| <= 2e-5 * max(1, max|golden|)
RESAMPLED_ATOL = 1e-5  # README: audio_tgt_head (the torchaudio resampler)


def assert_close(actual: torch.Tensor | np.ndarray, golden: np.ndarray, what: str, rel: float = REL) -> None:
    actual = actual.detach().cpu().float().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    actual = actual.reshape(golden.shape) if actual.size == golden.size else actual
    assert actual.shape == golden.shape, f"{what}: shape {actual.shape}, golden {golden.shape}"
    limit = rel * max(1.0, float(np.abs(golden).max()))
    diff = float(np.abs(actual - golden).max())
    log = os.environ.get("WYOMING_GSV_PARITY_LOG")  # the report's parity table is made from this
    if log:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{test}\t{what}\t{diff:.3g}\t{limit:.3g}\n")
    assert diff <= limit, f"{what}: max |diff| {diff:.3g} > {limit:.3g}"


def t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


@contextmanager
def capture(modules: dict[str, torch.nn.Module], inputs: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Outputs (or first inputs) of named modules during the block, the last call's, as [B, C, T]
    (the HiFi-GAN generator runs its convs on channels-last [B, C, 1, T] on the CPU)."""
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str, tensor: torch.Tensor) -> None:
        seen[name] = (tensor.squeeze(2) if tensor.dim() == 4 else tensor).clone()

    handles = [
        module.register_forward_hook(lambda _m, args, out, name=name: keep(name, args[0] if inputs else out))
        for name, module in modules.items()
    ]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


# --------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=["v3", "v4"])
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def model(v3v4: V3V4Files, version: str) -> Iterator[SovitsV3Model]:
    ckpt = load_sovits_checkpoint(v3v4.base(version), extra_hashes=v3v4.extra_hashes())
    loaded = SovitsV3Model.from_checkpoint(ckpt, load_vocoder(version, v3v4.vocoder(version)))
    del ckpt
    yield loaded


@pytest.fixture(scope="module")
def goldens(v3v4: V3V4Files, version: str) -> dict[str, dict[str, np.ndarray]]:
    names = ("ref", "encp", "dit", "cfm", "vocoder", "decode")
    return {name: load_npz(v3v4.golden(f"{name}_golden_{version}.npz")) for name in names}


# --------------------------------------------------------------------------------- detection


def test_version_detection_as_upstream(v3v4: V3V4Files) -> None:
    """Upstream's fast guess (hash table, header tag, size) on every file, with and without the
    fixture's md5s added to the pretrained table; and what the loader concludes."""
    for name, entry in v3v4.manifest["version_detection"].items():
        path = v3v4.root / entry["path_in_set"]
        head = _head(path)
        assert head[:2].decode() == entry["head2"], name
        size = path.stat().st_size
        assert size == entry["size"], name
        assert list(guess_sovits_version(head, size)) == entry["get_sovits_version_from_path_fast_unpatched"], name
        guessed = guess_sovits_version(head, size, v3v4.extra_hashes())
        assert list(guessed) == entry["get_sovits_version_from_path_fast"], name
        assert guessed[1] == entry["loaded_version"], name


def _head(path) -> bytes:
    with open(path, "rb") as f:
        return f.read(HASH_PREFIX_BYTES)


def test_model_reports_version_and_rate(model: SovitsV3Model, version: str, v3v4: V3V4Files) -> None:
    entry = v3v4.manifest["version_detection"][v3v4.base(version).name]
    assert model.version == entry["loaded_version"] == version
    assert model.output_rate == entry["vocoder_configs"]["sr"]
    assert model.sampling_rate == entry["sampling_rate_hps"]  # the 32 kHz spectrogram side
    layout = LAYOUTS[version]
    assert (layout.ref_frames, layout.chunk_frames) == (entry["vocoder_configs"]["T_ref"], entry["vocoder_configs"]["T_chunk"])
    assert model.vocoder.upsample_rate == entry["vocoder_configs"]["upsample_rate"]


# --------------------------------------------------------------------------------- reference side


def test_reference_spectrogram_and_ge(model: SovitsV3Model, v3v4: V3V4Files, goldens) -> None:
    spec_golden = load_npz(v3v4.golden("ref_spec_golden.npz"))
    for ref, wav in (("a", v3v4.manifest["ref_wavs"]["a"]), ("b", v3v4.manifest["ref_wavs"]["b"])):
        spec = model.spectrogram(torch.from_numpy(load_reference_audio(v3v4.golden(wav), model.sampling_rate)))
        head = spec_golden[f"{ref}_spec_head"]
        assert spec.shape[-1] == int(spec_golden[f"{ref}_spec_frames"])
        assert_close(spec[0, :, : head.shape[1]], head, f"{ref} spectrogram")
        assert_close(model.global_embedding([spec]), goldens["ref"][f"{ref}_ge"], f"{ref} ge")


def test_reference_mel(model: SovitsV3Model, v3v4: V3V4Files, goldens) -> None:
    rate = LAYOUTS[model.version].reference_mel.sampling_rate
    for ref in ("a", "b"):
        wav = v3v4.golden(v3v4.manifest["ref_wavs"][ref])
        audio = load_reference_waveform(wav, rate)
        head = goldens["ref"][f"{ref}_audio_tgt_head"]
        assert len(audio) == int(goldens["ref"][f"{ref}_audio_tgt_len"])
        assert_close(audio[: len(head)], head, f"{ref} resampled", rel=RESAMPLED_ATOL)
        mel = model.reference_mel(wav)
        assert_close(denormalize_mel(mel)[0], goldens["ref"][f"{ref}_mel"], f"{ref} log-mel")


def test_prompt_codes(model: SovitsV3Model, v3v4: V3V4Files, unpacked_v2, goldens) -> None:
    """HuBERT (the tiny one of gsv-v2-tiny, as the generator used) -> this model's ssl_proj + codebook."""
    hubert = HubertEncoder.from_folder(unpacked_v2["hubert"], "cpu", torch.float32)
    for ref in ("a", "b"):
        wav16k = load_audio(v3v4.golden(v3v4.manifest["ref_wavs"][ref]), SSL_SAMPLE_RATE)
        codes = model.extract_prompt_codes(hubert.features(wav16k, ssl_pad_samples(model.sampling_rate)))
        np.testing.assert_array_equal(codes.numpy(), goldens["ref"][f"{ref}_prompt_codes"])


# --------------------------------------------------------------------------------- features


def test_conditioning_features(model: SovitsV3Model, goldens) -> None:
    g = goldens["encp"]
    ge = t(g["ge"])[None]
    assert_close(model.features(t(g["prompt_codes"]), t(g["prompt_phones"]), ge), g["fea_ref"], "fea_ref")
    with capture({"enc_x": model.bridge[0]}, inputs=True) as seen:
        fea = model.features(t(g["codes"]), t(g["phones"]), ge)
    assert_close(fea, g["fea_todo"], "fea_todo")
    assert_close(seen["enc_x"], g["enc_x"], "text encoder output")
    assert_close(model.quantizer.decode(t(g["codes"])[None]), g["quantized_25hz"], "quantizer decode")
    assert_close(model.bridge(t(g["enc_x"])[None]), g["bridge"], "bridge")
    speed = float(g["speed"])
    with capture({"enc_x": model.bridge[0]}, inputs=True) as seen:
        fea = model.features(t(g["codes"]), t(g["phones"]), ge, speed)
    assert_close(seen["enc_x"], g["enc_x_speed"], "text encoder output at speed")
    assert_close(fea, g["fea_speed"], "fea at speed")  # v4: wns1's mask is one frame short here


# --------------------------------------------------------------------------------- DiT and sampler


def test_dit_forward(model: SovitsV3Model, goldens) -> None:
    g = goldens["dit"]
    dit = model.cfm.estimator
    assert_close(dit.rotary_embed.inv_freq, g["inv_freq"], "RoPE inv_freq (fp16-rounded, from the file)")
    from wyoming_gsv.gsv.dit import rotary_angles

    assert_close(rotary_angles(dit.rotary_embed.inv_freq, g["x"].shape[-1]), g["rope_freqs"], "RoPE angles")
    watched = {
        "t_emb": dit.time_embed,
        "text": dit.text_embed,
        "input": dit.input_embed,
        **{f"block{i}": dit.transformer_blocks[i] for i in (0, 1, 11, 21)},
    }
    with torch.inference_mode(), capture(watched) as seen, capture({"norm_out": dit.proj_out}, inputs=True) as final:
        cache = dit.conditions(t(g["mu"])[None], t(g["d"]))
        v = dit(t(g["x"])[None], t(g["prompt_x"])[None], t(g["t"]), cache)
    assert_close(v[0], g["v"], "velocity")
    assert_close(seen["t_emb"][0], g["t_emb"], "time embedding")
    assert_close(cache.step[0], g["d_emb"], "step-size embedding")
    crop = g["text_embed_crop"].shape[1]
    assert_close(seen["text"][0, :, :crop], g["text_embed_crop"], "text embedding")
    assert_close(seen["input"][0, :, :crop], g["input_embed_crop"], "input embedding")
    for i in (0, 1, 11, 21):
        assert_close(seen[f"block{i}"][0, :, :crop], g[f"block{i}_crop"], f"block {i}")
    assert_close(final["norm_out"][0, :, :crop], g["norm_out_crop"], "final adaptive norm")


def test_flow_matching_euler(model: SovitsV3Model, goldens, v3v4: V3V4Files) -> None:
    g = goldens["cfm"]
    mu, prompt, x0 = t(g["mu"]).T[None], t(g["prompt"])[None], t(g["x0"])[None]
    steps = v3v4.manifest["config"]["cfm_steps"]
    first = min(steps)
    velocities: list[torch.Tensor] = []
    handle = model.cfm.estimator.register_forward_hook(lambda _m, _a, out: velocities.append(out.clone()))
    try:
        out = model.cfm.sample(mu, prompt, first, noise=x0)
    finally:
        handle.remove()
    assert_close(out[0], g[f"out_steps{first}"], f"{first} steps")
    assert_close(torch.cat(velocities), g[f"v_steps{first}"], f"velocities of {first} steps")
    for n in steps:
        if n != first:
            assert_close(model.cfm.sample(mu, prompt, n, noise=x0)[0], g[f"out_steps{n}"], f"{n} steps")


def test_noise_comes_from_the_generator(model: SovitsV3Model, goldens) -> None:
    g = goldens["cfm"]
    mu, prompt = t(g["mu"]).T[None][..., :12], t(g["prompt"])[None][..., :4]
    a = model.cfm.sample(mu, prompt, 1, generator=torch.Generator().manual_seed(5))
    b = model.cfm.sample(mu, prompt, 1, generator=torch.Generator().manual_seed(5))
    c = model.cfm.sample(mu, prompt, 1, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.all(a[..., :4] == 0)  # the prompt's place stays zero


# --------------------------------------------------------------------------------- vocoder


def test_vocoder(model: SovitsV3Model, goldens) -> None:
    g = goldens["vocoder"]
    vocoder = model.vocoder
    ups = {f"ups{i}": (up[0] if isinstance(up, torch.nn.ModuleList) else up) for i, up in enumerate(_ups(vocoder))}
    for name in ("refmel", "cfmmel"):
        with torch.inference_mode(), capture({"conv_pre": _conv_pre(vocoder), **ups}) as seen:
            audio = vocoder(t(g[f"{name}_mel"])[None])
        assert_close(audio.reshape(-1), g[f"{name}_audio"], f"{name} audio")
        assert_close(seen["conv_pre"][0], g[f"{name}_conv_pre"], f"{name} conv_pre")
        for i in range(len(ups)):
            crop = g[f"{name}_ups{i}_crop"]
            assert_close(seen[f"ups{i}"][0, : crop.shape[0], : crop.shape[1]], crop, f"{name} upsampling {i}")


def _ups(vocoder) -> torch.nn.ModuleList:
    return getattr(vocoder, "generator", vocoder).ups


def _conv_pre(vocoder) -> torch.nn.Module:
    return getattr(vocoder, "generator", vocoder).conv_pre


# --------------------------------------------------------------------------------- whole decode


def _prompt(model: SovitsV3Model, v3v4: V3V4Files, g: dict, case: str, ref: str) -> tuple[torch.Tensor, PromptContext]:
    wav = v3v4.golden(v3v4.manifest["ref_wavs"][ref])
    spec = model.spectrogram(torch.from_numpy(load_reference_audio(wav, model.sampling_rate)))
    ge = model.global_embedding([spec])
    assert_close(ge, g[f"{case}_ge"], f"{case} ge")
    return ge, model.prompt_context(t(g[f"{case}_prompt_codes"]), t(g["prompt_phones"]), ge, model.reference_mel(wav))


def test_decode_short_sentence(model: SovitsV3Model, v3v4: V3V4Files, goldens) -> None:
    """Decode A: ref_a (shorter than T_ref), one sampler call."""
    g = goldens["decode"]
    ge, prompt = _prompt(model, v3v4, g, "A", "a")
    assert prompt.mel.shape[-1] == int(g["A_chunk0_prompt_len"])
    assert_close(model.features(t(g["A_codes"]), t(g["A_phones"]), ge), g["A_fea_todo"], "A fea_todo")
    calls = _record_sampler(model)
    with calls:
        audio = model.synthesize(t(g["A_codes"]), t(g["A_phones"]), ge, prompt, sample_steps=int(g["A_steps"]),
                                 noises=[t(g["A_chunk0_noise"])[None]])
    assert len(calls.outputs) == int(v3v4.manifest[f"decode_golden_{model.version}.npz"]["A_cfm_calls"])
    assert_close(calls.outputs[0], g["A_chunk0_cfm_out"], "A sampler output")
    assert_close(audio, g["A_audio"], "A audio")


def test_decode_long_sentence_chunking(model: SovitsV3Model, v3v4: V3V4Files, goldens, monkeypatch) -> None:
    """Decode B's bookkeeping, the sampler replayed from the goldens (the sampler itself is checked by
    decode A and the cfm goldens): ref_b's prompt cut to its last T_ref frames, the target cut into
    T_chunk - P frames, each call prompted with the previous call's tail, the mels joined."""
    g = goldens["decode"]
    ge, prompt = _prompt(model, v3v4, g, "B", "b")
    assert prompt.mel.shape[-1] == int(g["B_T_min"])
    calls_expected = int(v3v4.manifest[f"decode_golden_{model.version}.npz"]["B_cfm_calls"])
    outputs = [t(g[f"B_chunk{i}_cfm_out"])[None] for i in range(calls_expected)]
    calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def replay(features, prompt_mel, steps, *, noise=None, generator=None):
        assert steps == int(g["B_steps"])
        calls.append((features, prompt_mel, noise))
        return outputs[len(calls) - 1]

    vocoded: list[torch.Tensor] = []
    monkeypatch.setattr(model.cfm, "sample", replay)
    monkeypatch.setattr(model, "vocode", lambda mel: vocoded.append(mel) or torch.zeros(1))
    noises = [t(g[f"B_chunk{i}_noise"])[None] for i in range(calls_expected)]
    model.synthesize(t(g["B_codes"]), t(g["B_phones"]), ge, prompt, sample_steps=int(g["B_steps"]), noises=noises)

    assert len(calls) == calls_expected
    chunk_len = int(g["B_chunk_len"])
    for i, (features, prompt_mel, noise) in enumerate(calls):
        prompt_len = int(g[f"B_chunk{i}_prompt_len"])
        assert prompt_mel.shape[-1] == prompt_len
        assert features.shape[-1] == noise.shape[-1] == g[f"B_chunk{i}_noise"].shape[-1]
        assert torch.equal(noise, noises[i])
        if i == 0:
            assert torch.equal(prompt_mel, prompt.mel) and torch.equal(features[..., :prompt_len], prompt.features)
        else:  # prompted with the end of the previous call's generated mel
            assert_close(prompt_mel[0], g[f"B_chunk{i - 1}_cfm_out"][:, -prompt_len:], f"B call {i} prompt")
        assert features.shape[-1] - prompt_len <= chunk_len
    from wyoming_gsv.gsv.mel import denormalize_mel as denorm

    assert_close(denorm(vocoded[0])[0], g["B_vocoder_in"], "B vocoder input")


@pytest.mark.usefixtures("slow_enabled")
def test_decode_long_sentence_in_chunks(model: SovitsV3Model, v3v4: V3V4Files, goldens) -> None:
    """Decode B in full (minutes: two sampler calls of up to T_chunk frames and a 5 s vocoder run)."""
    g = goldens["decode"]
    ge, prompt = _prompt(model, v3v4, g, "B", "b")
    calls_expected = int(v3v4.manifest[f"decode_golden_{model.version}.npz"]["B_cfm_calls"])
    noises = [t(g[f"B_chunk{i}_noise"])[None] for i in range(calls_expected)]
    calls = _record_sampler(model)
    with calls:
        audio = model.synthesize(t(g["B_codes"]), t(g["B_phones"]), ge, prompt, sample_steps=int(g["B_steps"]),
                                 noises=noises)
    assert len(calls.outputs) == calls_expected
    for i, out in enumerate(calls.outputs):
        assert calls.prompt_lengths[i] == int(g[f"B_chunk{i}_prompt_len"])
        assert_close(out, g[f"B_chunk{i}_cfm_out"], f"B sampler call {i}")
    assert_close(audio, g["B_audio"], "B audio")


@pytest.mark.usefixtures("slow_enabled")
def test_decode_batched_sentences(model: SovitsV3Model, v3v4: V3V4Files, goldens) -> None:
    """Decode P: sentences A and B in one batched sampler call, SOLA-joined and split again (minutes:
    a batch of two T_chunk-frame rows and a 10 s vocoder run)."""
    g = goldens["decode"]
    ge, prompt = _prompt(model, v3v4, g, "B", "b")
    assert prompt.mel.shape[-1] == int(g["P_prompt_len"])
    sentences = [(t(g["A_codes"]), t(g["A_phones"])), (t(g["B_codes"]), t(g["B_phones"]))]
    with capture({"vocoder_in": model.vocoder}, inputs=True) as seen:
        fragments = model.synthesize_batched(sentences, ge, prompt, sample_steps=int(g["P_steps"]), noise=t(g["P_noise"]))
    assert_close(seen["vocoder_in"][0], g["P_vocoder_in"], "P vocoder input (denormalised mel)")
    sizes = v3v4.manifest[f"decode_golden_{model.version}.npz"]["P_fragments"]
    assert [len(f) for f in fragments] == sizes
    for i, fragment in enumerate(fragments):
        assert_close(fragment, g[f"P_fragment{i}"], f"P fragment {i}")


class _record_sampler:
    """Records each sampler call's full output and prompt length."""

    def __init__(self, model: SovitsV3Model) -> None:
        self.model = model
        self.outputs: list[torch.Tensor] = []
        self.prompt_lengths: list[int] = []

    def __enter__(self) -> "_record_sampler":
        original = self.model.cfm.sample

        def recording(features, prompt, steps, **kwargs):
            out = original(features, prompt, steps, **kwargs)
            self.outputs.append(out[0].clone())
            self.prompt_lengths.append(prompt.shape[-1])
            return out

        self.model.cfm.sample = recording  # instance attribute shadows the method
        return self

    def __exit__(self, *exc) -> None:
        del self.model.cfm.sample
