"""Reference audio, HuBERT prompt codes and BERT features against the official goldens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from conftest import load_npz
from wyoming_gsv.gsv.audio import AudioFileError, load_audio
from wyoming_gsv.gsv.bert import BertFeaturizer
from wyoming_gsv.gsv.checkpoints import load_sovits_checkpoint
from wyoming_gsv.gsv.errors import ModelFileError
from wyoming_gsv.gsv.sovits import SovitsModel
from wyoming_gsv.gsv.ssl import HubertEncoder, reference_prompt_codes, ssl_pad_samples

ACT = dict(atol=1e-4, rtol=1e-4)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ssl_golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "ssl_golden.npz")


@pytest.fixture(scope="module")
def bert_golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "bert_golden.npz")


@pytest.fixture(scope="module")
def sovits(unpacked_v2: dict[str, Path]) -> SovitsModel:
    return SovitsModel.from_checkpoint(load_sovits_checkpoint(unpacked_v2["sovits"]))


@pytest.fixture(scope="module")
def hubert(unpacked_v2: dict[str, Path]) -> HubertEncoder:
    return HubertEncoder.from_folder(unpacked_v2["hubert"])


@pytest.fixture(scope="module")
def bert(unpacked_v2: dict[str, Path]) -> BertFeaturizer:
    return BertFeaturizer.from_folder(unpacked_v2["bert"])


# ---------------------------------------------------------------------------------- audio
def test_load_audio_16k_matches_librosa(unpacked_v2, ssl_golden) -> None:
    wav = load_audio(unpacked_v2["ref_wav"], 16000)
    assert wav.dtype == np.float32
    assert wav.shape == ssl_golden["wav16k"].shape
    np.testing.assert_allclose(wav, ssl_golden["wav16k"], **ACT)


def test_load_audio_native_rate_is_the_file(unpacked_v2) -> None:
    data, rate = soundfile.read(unpacked_v2["ref_wav"], dtype="float32")
    np.testing.assert_array_equal(load_audio(unpacked_v2["ref_wav"], rate), data)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_load_audio_stereo_mixes_down_and_resamples(tmp_path: Path, fmt: str) -> None:
    rate = 22050
    time = np.arange(rate) / rate
    left = 0.5 * np.sin(2 * np.pi * 220 * time)
    stereo = np.stack([left, np.zeros_like(left)], axis=1).astype(np.float32)
    path = tmp_path / f"stereo.{fmt.lower()}"
    soundfile.write(path, stereo, rate, format=fmt)
    wav = load_audio(path, 16000)
    assert wav.ndim == 1 and len(wav) == 16000
    # the mean of the channels halves the amplitude
    assert 0.2 < np.abs(wav[1000:-1000]).max() < 0.3


def test_load_audio_peak_normalisation(tmp_path: Path) -> None:
    path = tmp_path / "loud.wav"
    loud = np.full(800, 1.5, dtype=np.float32)
    soundfile.write(path, loud, 16000, subtype="FLOAT")
    assert load_audio(path, 16000).max() == pytest.approx(1.5)
    assert load_audio(path, 16000, normalize_peak=True).max() == pytest.approx(1.0)
    louder = tmp_path / "louder.wav"
    soundfile.write(louder, loud * 2, 16000, subtype="FLOAT")
    assert load_audio(louder, 16000, normalize_peak=True).max() == pytest.approx(1.5)  # divided by min(2, 3)


def test_unreadable_audio_names_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF not really audio" * 10)
    with pytest.raises(AudioFileError, match="junk.wav"):
        load_audio(junk, 16000)
    with pytest.raises(AudioFileError, match="absent.wav"):
        load_audio(tmp_path / "absent.wav", 16000)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioFileError, match="no samples"):
        load_audio(empty, 16000)


# --------------------------------------------------------------------------------- HuBERT
def test_hubert_features_and_prompt_codes(hubert, sovits, ssl_golden) -> None:
    pad = ssl_pad_samples(sovits.sampling_rate)
    assert pad == int(ssl_golden["zero_pad_len"])
    features = hubert.features(ssl_golden["wav16k"], pad)
    assert features.shape == (1, hubert.hidden_size, ssl_golden["hubert_last_hidden"].shape[0])
    np.testing.assert_allclose(features[0].T.numpy(), ssl_golden["hubert_last_hidden"], **ACT)
    with torch.inference_mode():
        projected = sovits.ssl_proj(features)
    np.testing.assert_allclose(projected[0].numpy(), ssl_golden["ssl_proj"], **ACT)
    codes = sovits.extract_prompt_codes(features)
    assert codes.dtype == torch.int64
    np.testing.assert_array_equal(codes.numpy(), ssl_golden["prompt_codes"])


def test_reference_file_to_prompt_codes(hubert, sovits, unpacked_v2, ssl_golden) -> None:
    codes = reference_prompt_codes(unpacked_v2["ref_wav"], hubert, sovits)
    np.testing.assert_array_equal(codes.numpy(), ssl_golden["prompt_codes"])


@pytest.mark.parametrize("seconds", [2.5, 10.5])
def test_reference_outside_3_to_10_seconds_is_refused(tmp_path, hubert, sovits, seconds: float) -> None:
    path = tmp_path / f"ref_{seconds}.wav"
    soundfile.write(path, np.zeros(int(seconds * 16000), dtype=np.float32), 16000)
    with pytest.raises(AudioFileError, match=r"between 3 and 10 s") as info:
        reference_prompt_codes(path, hubert, sovits)
    assert path.name in str(info.value)


def test_hubert_legacy_weight_norm_names_load(tmp_path, unpacked_v2, hubert, ssl_golden) -> None:
    """The real chinese-hubert-base stores the pos-conv weight norm as weight_g / weight_v."""
    folder = tmp_path / "hubert_legacy"
    folder.mkdir()
    shutil.copy(unpacked_v2["hubert"] / "config.json", folder / "config.json")
    state = torch.load(unpacked_v2["hubert"] / "pytorch_model.bin", weights_only=True)
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v"): v
        for k, v in state.items()
    }
    assert any(k.endswith("weight_g") for k in renamed)
    torch.save(renamed, folder / "pytorch_model.bin")
    legacy = HubertEncoder.from_folder(folder)
    wav = ssl_golden["wav16k"][:16000]
    torch.testing.assert_close(legacy.features(wav, 0), hubert.features(wav, 0))


def test_hubert_fp16_runs(unpacked_v2, ssl_golden) -> None:
    half = HubertEncoder.from_folder(unpacked_v2["hubert"], dtype=torch.float16)
    features = half.features(ssl_golden["wav16k"], 0)
    assert features.dtype == torch.float16 and torch.isfinite(features).all()


def broken_copies(source: Path, root: Path) -> dict[str, Path]:
    """Model folders with one thing wrong each."""
    cases = {}
    for name in ("no_config", "bad_json", "not_object", "no_weights", "bad_weights", "more_layers"):
        folder = root / name
        shutil.copytree(source, folder)
        cases[name] = folder
    (cases["no_config"] / "config.json").unlink()
    (cases["bad_json"] / "config.json").write_text("{ not json")
    (cases["not_object"] / "config.json").write_text(json.dumps([1, 2]))
    for folder in (cases["no_weights"],):
        for weights in folder.glob("pytorch_model.bin*"):
            weights.unlink()
        for weights in folder.glob("model.safetensors"):
            weights.unlink()
    (cases["bad_weights"] / "pytorch_model.bin").write_bytes(b"\x00" * 100)
    config = json.loads((cases["more_layers"] / "config.json").read_text())
    config["num_hidden_layers"] += 1  # weights lack the extra layer: must not be random-filled
    (cases["more_layers"] / "config.json").write_text(json.dumps(config))
    cases["missing"] = root / "does_not_exist"
    return cases


@pytest.mark.parametrize(
    "case", ["missing", "no_config", "bad_json", "not_object", "no_weights", "bad_weights", "more_layers"]
)
@pytest.mark.parametrize("kind", ["hubert", "bert"])
def test_broken_model_folders_raise_model_file_error(tmp_path, unpacked_v2, case: str, kind: str) -> None:
    folder = broken_copies(unpacked_v2[kind], tmp_path)[case]
    loader = HubertEncoder.from_folder if kind == "hubert" else BertFeaturizer.from_folder
    with pytest.raises(ModelFileError) as info:
        loader(folder)
    assert str(folder) in str(info.value)


# ----------------------------------------------------------------------------------- BERT
@pytest.mark.parametrize("case", ["case0", "case1"])
def test_bert_features_match(bert, bert_golden, case: str) -> None:
    ids = bert_golden[f"{case}_input_ids"]
    text = "".join(bert.tokenizer.convert_ids_to_tokens(ids[1:-1].tolist()))
    word2ph = bert_golden[f"{case}_word2ph"].tolist()
    assert bert.tokenizer(text)["input_ids"] == ids.tolist()
    features = bert.features(text, word2ph)
    assert features.shape == (bert.hidden_size, sum(word2ph))
    np.testing.assert_allclose(features.numpy(), bert_golden[f"{case}_features"], **ACT)
    # the third-from-last hidden state, one vector per character, repeated per phone
    layer = bert_golden[f"{case}_all_hidden_states"][-3][1:-1]
    np.testing.assert_allclose(features.numpy(), np.repeat(layer, word2ph, axis=0).T, **ACT)


def test_bert_zeros_use_model_hidden_size(bert, bert_golden, unpacked_v2) -> None:
    n_phones = int(bert_golden["en_zero_features_shape"][1])
    config = json.loads((unpacked_v2["bert"] / "config.json").read_text())
    zeros = bert.zeros(n_phones)
    assert zeros.shape == (config["hidden_size"], n_phones)
    assert not zeros.any()


def test_bert_rejects_token_character_mismatch(bert) -> None:
    with pytest.raises(ValueError, match="word2ph"):
        bert.features("你好", [2])
    # "ab" becomes one [UNK] token for two characters
    with pytest.raises(ValueError, match="tokens"):
        bert.features("你好ab", [2, 2, 1, 1])
