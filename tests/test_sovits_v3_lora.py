"""SoVITS v3 / v4 LoRA fine-tunes: merged onto their pretrained base at load, as upstream
(`TTS.init_vits_weights` + peft `merge_and_unload`), and the errors when the base is not there."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_npz
from test_sovits_v3 import assert_close, t
from v3v4_fixture import V3V4Files
from wyoming_gsv.gsv.checkpoints import load_sovits_checkpoint
from wyoming_gsv.gsv.errors import ModelFileError
from wyoming_gsv.gsv.lora import merge_lora
from wyoming_gsv.gsv.sovits_v3 import SovitsV3Model, load_vocoder

MERGED_ATOL = 1e-6  # README: merged LoRA weights


@pytest.fixture(scope="module", params=["v3", "v4"])
def version(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def lora_model(v3v4: V3V4Files, version: str) -> Iterator[SovitsV3Model]:
    ckpt = load_sovits_checkpoint(v3v4.lora(version))
    yield SovitsV3Model.from_checkpoint(ckpt, load_vocoder(version, v3v4.vocoder(version)), base=v3v4.base(version))


@pytest.fixture(scope="module")
def golden(v3v4: V3V4Files, version: str) -> dict[str, np.ndarray]:
    return load_npz(v3v4.golden(f"lora_golden_{version}.npz"))


def test_lora_file_is_recognised(v3v4: V3V4Files, version: str) -> None:
    entry = v3v4.manifest["version_detection"][v3v4.lora(version).name]
    ckpt = load_sovits_checkpoint(v3v4.lora(version))
    assert (ckpt.version, ckpt.is_lora) == (entry["loaded_version"], True)
    assert ckpt.lora_rank == entry["lora_rank"]
    assert len(ckpt.weights) == entry["saved_keys"]


def test_merged_weights(lora_model: SovitsV3Model, golden) -> None:
    blocks = lora_model.cfm.estimator.transformer_blocks
    for block in (0, len(blocks) - 1):
        attention = blocks[block].attn
        for name, layer in (("to_q", attention.to_q), ("to_k", attention.to_k), ("to_v", attention.to_v),
                            ("to_out0", attention.to_out[0])):
            rows = golden[f"merged_block{block}_{name}_rows0_4"]
            assert_close(layer.weight[: rows.shape[0]], rows, f"merged {name} of block {block}", rel=MERGED_ATOL)
            total = float(layer.weight.double().sum())
            expected = float(golden[f"merged_block{block}_{name}_sum"])
            assert abs(total - expected) <= 1e-3 * max(1.0, abs(expected)), (name, block, total, expected)


def test_fine_tuned_modules_replace_the_base(lora_model: SovitsV3Model, v3v4: V3V4Files, golden) -> None:
    e = load_npz(v3v4.golden(f"encp_golden_{lora_model.version}.npz"))
    spec_audio = v3v4.golden(v3v4.manifest["ref_wavs"]["a"])
    from wyoming_gsv.gsv.audio import load_reference_audio

    spec = lora_model.spectrogram(torch.from_numpy(load_reference_audio(spec_audio, lora_model.sampling_rate)))
    ge = lora_model.global_embedding([spec])
    assert_close(ge, golden["ge"], "ge (fine-tuned ref_enc)")
    assert_close(lora_model.features(t(e["codes"]), t(e["phones"]), ge), golden["fea_todo"], "fea_todo")
    speed = float(e["speed"])
    assert_close(lora_model.features(t(e["codes"]), t(e["phones"]), ge, speed), golden["fea_speed"], "fea at speed")


def test_merged_dit_and_sampler(lora_model: SovitsV3Model, v3v4: V3V4Files, golden) -> None:
    dit_golden = load_npz(v3v4.golden(f"dit_golden_{lora_model.version}.npz"))
    cfm_golden = load_npz(v3v4.golden(f"cfm_golden_{lora_model.version}.npz"))
    dit = lora_model.cfm.estimator
    blocks: list[torch.Tensor] = []
    handle = dit.transformer_blocks[0].register_forward_hook(lambda _m, _a, out: blocks.append(out.clone()))
    try:
        with torch.inference_mode():
            cache = dit.conditions(t(golden["dit_mu"])[None], t(dit_golden["d"]))
            v = dit(t(dit_golden["x"])[None], t(dit_golden["prompt_x"])[None], t(dit_golden["t"]), cache)
    finally:
        handle.remove()
    assert_close(v[0], golden["dit_v"], "velocity with merged LoRA")
    crop = golden["dit_block0_crop"].shape[1]
    assert_close(blocks[0][0, :, :crop], golden["dit_block0_crop"], "block 0 with merged LoRA")

    steps = min(v3v4.manifest["config"]["cfm_steps"])
    velocities: list[torch.Tensor] = []
    handle = dit.register_forward_hook(lambda _m, _a, out: velocities.append(out.clone()))
    try:
        out = lora_model.cfm.sample(t(golden["dit_mu"])[None], t(cfm_golden["prompt"])[None], steps,
                                    noise=t(golden["cfm_x0"])[None])
    finally:
        handle.remove()
    assert_close(out[0], golden[f"cfm_out_steps{steps}"], f"{steps} steps with merged LoRA")
    assert_close(torch.cat(velocities), golden[f"cfm_v_steps{steps}"], "velocities with merged LoRA")


def test_lora_without_its_base_is_refused(v3v4: V3V4Files, tmp_path: Path, version: str) -> None:
    ckpt = load_sovits_checkpoint(v3v4.lora(version))
    missing = tmp_path / "pretrained_models" / v3v4.base(version).name
    with pytest.raises(ModelFileError, match="pretrained base model missing") as info:
        SovitsV3Model.from_checkpoint(ckpt, vocoder=None, base=missing)  # type: ignore[arg-type]
    assert info.value.path == missing
    assert ckpt.path.name in str(info.value)


def test_lora_adapters_that_do_not_fit_are_refused(v3v4: V3V4Files, version: str) -> None:
    lora = load_sovits_checkpoint(v3v4.lora(version))
    base = {"cfm.estimator.transformer_blocks.0.attn.to_q.weight": torch.zeros(1024, 1024)}
    adapters = {k: v for k, v in lora.weights.items() if "transformer_blocks.0.attn.to_q." in k}
    with pytest.raises(ModelFileError, match="does not fit rank 16") as info:
        merge_lora(base, adapters, 16, lora.path)
    assert info.value.path == lora.path
    only_a = {k: v for k, v in adapters.items() if "lora_A" in k}
    with pytest.raises(ModelFileError, match="lacks lora_B"):
        merge_lora(base, only_a, lora.lora_rank, lora.path)
    with pytest.raises(ModelFileError, match="does not have"):
        merge_lora({}, adapters, lora.lora_rank, lora.path)


def test_truncated_lora_file_names_the_file(v3v4: V3V4Files, tmp_path: Path, version: str) -> None:
    broken = tmp_path / "broken_lora.pth"
    with open(v3v4.lora(version), "rb") as f:
        broken.write_bytes(f.read(1_000_000))
    with pytest.raises(ModelFileError) as info:
        load_sovits_checkpoint(broken)
    assert info.value.path == broken
    shutil.rmtree(tmp_path, ignore_errors=True)
