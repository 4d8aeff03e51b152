"""Loading the official s1/s2 files: values, version detection, refusals and bad files."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from wyoming_gsv.gsv.checkpoints import (
    PRETRAINED_SOVITS_HASHES,
    SOVITS_HEADER_TAGS,
    V1_SYMBOL_COUNT,
    guess_sovits_version,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
    sovits_version_from_hash,
)
from wyoming_gsv.gsv.errors import ModelFileError

from conftest import unpack_xz


@pytest.fixture(scope="module")
def s1_raw(v2_tiny: Path) -> dict:
    """What plain torch.load gives for the GPT fixture (it only holds safe types)."""
    return torch.load(v2_tiny / "s1_tiny_v2.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def s2_bytes(unpacked_v2: dict[str, Path]) -> bytes:
    return unpacked_v2["sovits"].read_bytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------------------------ GPT


def test_gpt_loads_with_stripped_keys_and_same_values(v2_tiny: Path, s1_raw: dict) -> None:
    ckpt = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt")
    assert ckpt.version == "v2"
    assert ckpt.config == s1_raw["config"]
    assert set(ckpt.weights) == {key.removeprefix("model.") for key in s1_raw["weight"]}
    for key, value in s1_raw["weight"].items():
        loaded = ckpt.weights[key.removeprefix("model.")]
        assert loaded.dtype == torch.float32
        torch.testing.assert_close(loaded, value.float(), rtol=0, atol=0)


def test_gpt_keeps_fp16_when_asked(v2_tiny: Path, s1_raw: dict) -> None:
    ckpt = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt", dtype=None)
    stored = s1_raw["weight"]["model.ar_predict_layer.weight"]
    assert ckpt.weights["ar_predict_layer.weight"].dtype == stored.dtype == torch.float16
    half = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt", dtype=torch.float16)
    assert half.weights["bert_proj.weight"].dtype == torch.float16


def test_gpt_v1_version_from_phoneme_vocab(tmp_path: Path, s1_raw: dict) -> None:
    raw = dict(s1_raw)
    raw["config"] = json.loads(json.dumps(s1_raw["config"]))
    raw["config"]["model"]["phoneme_vocab_size"] = 512
    weights = dict(s1_raw["weight"])
    dim = weights["model.bert_proj.weight"].shape[0]
    weights["model.ar_text_embedding.word_embeddings.weight"] = torch.zeros(512, dim)
    raw["weight"] = weights
    torch.save(raw, tmp_path / "v1.ckpt")
    assert load_gpt_checkpoint(tmp_path / "v1.ckpt").version == "v1"


def test_gpt_missing_key(tmp_path: Path, s1_raw: dict) -> None:
    raw = dict(s1_raw, weight=dict(s1_raw["weight"]))
    del raw["weight"]["model.h.layers.1.linear2.weight"]
    torch.save(raw, tmp_path / "missing.ckpt")
    with pytest.raises(ModelFileError, match="linear2.weight") as info:
        load_gpt_checkpoint(tmp_path / "missing.ckpt")
    assert info.value.path == tmp_path / "missing.ckpt"


@pytest.mark.parametrize(
    ("field", "delta", "message"),
    [("embedding_dim", 8, "embedding_dim"), ("n_layer", 1, "n_layer"), ("vocab_size", 1, "EOS")],
)
def test_gpt_config_that_does_not_fit(tmp_path: Path, s1_raw: dict, field: str, delta: int,
                                      message: str) -> None:
    raw = dict(s1_raw)
    raw["config"] = json.loads(json.dumps(s1_raw["config"]))
    model = raw["config"]["model"]
    model[field] += delta
    if field == "embedding_dim":
        model["hidden_dim"] = model["embedding_dim"]
    torch.save(raw, tmp_path / "bad.ckpt")
    with pytest.raises(ModelFileError, match=message):
        load_gpt_checkpoint(tmp_path / "bad.ckpt")


def test_gpt_loader_refuses_sovits_file(unpacked_v2: dict[str, Path], tmp_path: Path,
                                        s2_bytes: bytes) -> None:
    with pytest.raises(ModelFileError, match="SoVITS"):
        load_gpt_checkpoint(unpacked_v2["sovits"])
    tagged = _write(tmp_path, "pro.pth", b"05" + s2_bytes[2:])
    with pytest.raises(ModelFileError, match="SoVITS"):
        load_gpt_checkpoint(tagged)


# ------------------------------------------------------------------------------------ SoVITS


def test_sovits_loads_v2_fixture(v2_tiny: Path, unpacked_v2: dict[str, Path]) -> None:
    keys = json.loads((v2_tiny / "checkpoint_keys.json").read_text())["s2_weight_keys"]
    ckpt = load_sovits_checkpoint(unpacked_v2["sovits"])
    assert (ckpt.version, ckpt.is_lora) == ("v2", False)
    assert {key: list(value.shape) for key, value in ckpt.weights.items()} == keys
    assert all(v.dtype == torch.float32 for v in ckpt.weights.values() if v.is_floating_point())
    # The HParams config arrives as plain nested dicts.
    assert type(ckpt.config) is dict and type(ckpt.config["model"]) is dict
    assert ckpt.model_config["version"] == "v2"
    assert ckpt.sampling_rate == 32000
    assert ckpt.model_config["resblock_dilation_sizes"] == [[1, 3, 5]] * 3


def test_sovits_fp16_kept_when_asked(unpacked_v2: dict[str, Path]) -> None:
    ckpt = load_sovits_checkpoint(unpacked_v2["sovits"], dtype=None)
    assert ckpt.weights["enc_p.proj.weight"].dtype == torch.float16
    full = load_sovits_checkpoint(unpacked_v2["sovits"])
    torch.testing.assert_close(full.weights["enc_p.proj.weight"],
                               ckpt.weights["enc_p.proj.weight"].float(), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "version"),
                         [("s2_tiny_v2pro.pth", "v2Pro"), ("s2_tiny_v2proplus.pth", "v2ProPlus")])
def test_sovits_pro_fixtures(v2pro_tiny: Path, tmp_path_factory: pytest.TempPathFactory,
                             name: str, version: str) -> None:
    raw = unpack_xz(v2pro_tiny / f"{name}.xz", tmp_path_factory.mktemp("pro") / name)
    keys = json.loads((v2pro_tiny / "checkpoint_keys.json").read_text())
    ckpt = load_sovits_checkpoint(raw)
    assert ckpt.version == version
    assert raw.read_bytes()[:2] != b"PK"
    assert ckpt.model_config["gin_channels"] == keys[name]["config_model"]["gin_channels"]
    assert {key: list(value.shape) for key, value in ckpt.weights.items()} == keys[name]["weight_keys"]


@pytest.mark.parametrize(("tag", "version"),
                         [(b"05", "v2Pro"), (b"06", "v2ProPlus"), (b"01", "v2"), (b"00", "v2")])
def test_sovits_header_tags(tmp_path: Path, s2_bytes: bytes, tag: bytes, version: str) -> None:
    # "00" (v1 tag) still loads as v2: the 732-row text embedding decides, as upstream.
    path = _write(tmp_path, "tagged.pth", tag + s2_bytes[2:])
    assert load_sovits_checkpoint(path).version == version


@pytest.mark.parametrize(("tag", "message"),
                         [(b"03", "no usable 'lora_rank'"), (b"04", "no usable 'lora_rank'"),
                          (b"02", "detected as SoVITS v3 but lacks keys")])
def test_sovits_v3_v4_tag_on_v2_content_refused(tmp_path: Path, s2_bytes: bytes, tag: bytes,
                                                message: str) -> None:
    path = _write(tmp_path, "tagged.pth", tag + s2_bytes[2:])
    with pytest.raises(ModelFileError, match=message):
        load_sovits_checkpoint(path)


def _small_sovits_dict(source: Path) -> dict:
    ckpt = load_sovits_checkpoint(source, dtype=None)
    return {"weight": ckpt.weights, "config": ckpt.config, "info": "test"}


def test_sovits_lora_rank_refused(tmp_path: Path, unpacked_v2: dict[str, Path]) -> None:
    data = _small_sovits_dict(unpacked_v2["sovits"]) | {"lora_rank": 32}
    torch.save(data, tmp_path / "lora.pth")
    with pytest.raises(ModelFileError, match="LoRA"):
        load_sovits_checkpoint(tmp_path / "lora.pth")


def test_sovits_without_text_embedding_is_v3_style(tmp_path: Path,
                                                   unpacked_v2: dict[str, Path]) -> None:
    data = _small_sovits_dict(unpacked_v2["sovits"])
    del data["weight"]["enc_p.text_embedding.weight"]
    torch.save(data, tmp_path / "v3ish.pth")
    with pytest.raises(ModelFileError, match="v3"):
        load_sovits_checkpoint(tmp_path / "v3ish.pth")


def test_sovits_v1_from_embedding_rows(tmp_path: Path, unpacked_v2: dict[str, Path]) -> None:
    data = _small_sovits_dict(unpacked_v2["sovits"])
    rows = data["weight"]["enc_p.text_embedding.weight"]
    data["weight"]["enc_p.text_embedding.weight"] = rows[:V1_SYMBOL_COUNT].clone()
    torch.save(data, tmp_path / "v1.pth")
    assert load_sovits_checkpoint(tmp_path / "v1.pth").version == "v1"


def test_sovits_missing_key_and_bad_config(tmp_path: Path, unpacked_v2: dict[str, Path]) -> None:
    data = _small_sovits_dict(unpacked_v2["sovits"])
    del data["weight"]["dec.conv_pre.weight"]
    torch.save(data, tmp_path / "missing.pth")
    with pytest.raises(ModelFileError, match="dec.conv_pre.weight"):
        load_sovits_checkpoint(tmp_path / "missing.pth")

    data = _small_sovits_dict(unpacked_v2["sovits"])
    data["config"]["model"]["inter_channels"] *= 2
    torch.save(data, tmp_path / "badcfg.pth")
    with pytest.raises(ModelFileError, match="inter_channels"):
        load_sovits_checkpoint(tmp_path / "badcfg.pth")


def test_sovits_loader_refuses_gpt_file(v2_tiny: Path) -> None:
    with pytest.raises(ModelFileError, match="GPT") as info:
        load_sovits_checkpoint(v2_tiny / "s1_tiny_v2.ckpt")
    assert info.value.path == v2_tiny / "s1_tiny_v2.ckpt"


# ------------------------------------------------------------------------------------ detection


def test_hash_table_lookup() -> None:
    for digest, expected in PRETRAINED_SOVITS_HASHES.items():
        assert sovits_version_from_hash(digest.upper()) == expected
    assert sovits_version_from_hash("c7e9fce2223f3db685cdfa1e6368728a")[1] == "v2Pro"
    assert sovits_version_from_hash("0" * 32) is None


def test_guess_by_tag_and_size() -> None:
    zip_head = b"PK" + bytes(100)
    assert hashlib.md5(zip_head).hexdigest() not in PRETRAINED_SOVITS_HASHES
    assert guess_sovits_version(zip_head, 50 * 1024 * 1024)[1] == "v1"
    assert guess_sovits_version(zip_head, 160 * 1024 * 1024)[1] == "v2"
    assert guess_sovits_version(zip_head, 800 * 1024 * 1024)[1] == "v3"
    for tag, expected in SOVITS_HEADER_TAGS.items():
        assert guess_sovits_version(tag + bytes(100), 1) == expected
    with pytest.raises(ValueError):
        guess_sovits_version(b"zz" + bytes(100), 1)


# ------------------------------------------------------------------------------------ bad files


@pytest.mark.parametrize("loader", [load_gpt_checkpoint, load_sovits_checkpoint])
def test_truncated_random_empty_and_missing_files(tmp_path: Path, v2_tiny: Path, loader) -> None:
    whole = (v2_tiny / "s1_tiny_v2.ckpt").read_bytes()
    cases = {
        "truncated.ckpt": whole[: len(whole) // 2],
        "random.ckpt": os.urandom(50_000),
        "random_pk.ckpt": b"PK" + os.urandom(50_000),
        "empty.ckpt": b"",
    }
    for name, data in cases.items():
        path = _write(tmp_path, name, data)
        with pytest.raises(ModelFileError) as info:
            loader(path)
        assert info.value.path == path
    for path in (tmp_path / "does-not-exist.ckpt", tmp_path):
        with pytest.raises(ModelFileError, match="cannot read"):
            loader(path)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("loader", [load_gpt_checkpoint, load_sovits_checkpoint])
def test_arbitrary_globals_refused(tmp_path: Path, loader) -> None:
    marker = tmp_path / "pwned"
    torch.save({"weight": {"model.x": torch.zeros(1)}, "config": _Exploit(marker)},
               tmp_path / "evil.ckpt")
    with pytest.raises(ModelFileError, match="system"):
        loader(tmp_path / "evil.ckpt")
    assert not marker.exists()


def test_hparams_saved_from_repository_root(tmp_path: Path, unpacked_v2: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A config pickled as `GPT_SoVITS.utils.HParams` (saved from the repo root) loads too."""
    import types

    class HParams:
        def __init__(self, **fields) -> None:
            for key, value in fields.items():
                setattr(self, key, HParams(**value) if isinstance(value, dict) else value)

    package, module = types.ModuleType("GPT_SoVITS"), types.ModuleType("GPT_SoVITS.utils")
    HParams.__module__, HParams.__qualname__ = module.__name__, "HParams"
    module.HParams, package.utils = HParams, module
    monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    data = _small_sovits_dict(unpacked_v2["sovits"])
    expected = data["config"]
    data["config"] = HParams(**expected)
    torch.save(data, tmp_path / "root.pth")
    monkeypatch.delitem(sys.modules, module.__name__)  # loading must not need the class
    monkeypatch.delitem(sys.modules, package.__name__)
    ckpt = load_sovits_checkpoint(tmp_path / "root.pth")
    assert ckpt.version == "v2" and ckpt.config == expected
