"""v3 / v4 voices end to end: LoRA fine-tunes over their pretrained base in upstream's layout under
DIR/models/, served over Wyoming (real TCP) and spoken by `synth`, at the vocoder's true rate.

The DiT is full size, so the voices use 2 sampler steps (a voice.yaml setting) to stay affordable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import server_client
from server_client import describe, ha_stream
from serving import serving
from v3v4_fixture import LORA_FILES, V3V4Files
from voice_data import link_tiny_models, make_voice, read_wav, tiny_voice_config
from wyoming_gsv.__main__ import main
from wyoming_gsv.download import PRETRAINED
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings

TEXT = "The front door is open."
STEPS = 2


@pytest.fixture(scope="module")
def data_dir(unpacked_v2, v3v4: V3V4Files, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT/HuBERT/BERT of the v2 set, the v3/v4 pretrained files and vocoders where
    `wyoming-gsv download --version v3 v4` puts them, one LoRA voice per version."""
    root = tmp_path_factory.mktemp("v3v4-data")
    link_tiny_models(root, unpacked_v2)
    models = root / "models"
    for version in ("v3", "v4"):
        for rel in (PRETRAINED[version].sovits, *PRETRAINED[version].vocoder):
            (models / rel).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(v3v4.pretrained / rel, models / rel)
        (models / "user").mkdir(exist_ok=True)
        _place(v3v4.lora(version), models / "user" / LORA_FILES[version])  # a file the voice names: inside DIR
        config = tiny_voice_config(description=f"LoRA {version} voice", sovits=f"models/user/{LORA_FILES[version]}",
                                   sample_steps=STEPS)
        make_voice(root, f"lora_{version}", reference=v3v4.golden(v3v4.manifest["ref_wavs"]["a"]), config=config)
    return root


def _place(source: Path, target: Path) -> None:
    """A real file inside the data dir (voices may only name files there): hard link, else copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy(source, target)


def runtime_for(data_dir: Path) -> Runtime:
    return Runtime(RuntimeSettings(data_dir=data_dir, threads=2, max_chars=1000, use_fallback=False))


async def test_v4_voice_over_wyoming_at_48_khz(data_dir: Path, monkeypatch) -> None:
    # A full-size DiT on a shared 2-core CI machine: allow minutes per event, not the usual one.
    monkeypatch.setattr(server_client, "TIMEOUT", 900.0)
    runtime = runtime_for(data_dir)
    v4_voice = next(voice for voice in runtime.registry.scan() if voice.id == "lora_v4")
    runtime.backend.prepare(v4_voice)  # models and bundle loaded before serving
    runtime.start()
    try:
        async with serving(runtime) as port:
            info = await describe(port)
            names = {voice.name for voice in info.tts[0].voices}
            assert {"lora_v3", "lora_v4"} <= names
            # HA's streaming path: the WAV header comes from audio-start, which must carry 48 kHz.
            result = await ha_stream(port, [TEXT], voice="lora_v4")
            assert result.error is None
            assert (result.rate, result.width, result.channels) == (48000, 2, 1)
            assert result.seconds > 0.2
    finally:
        runtime.close()

    # The bundle holds the reference side: prompt codes/phones/BERT, ge, and the sampler's prompt.
    cached = list((data_dir / "cache").glob("lora_v4.*.safetensors"))
    assert len(cached) == 1
    tensors = load_file(str(cached[0]))
    mel, features = tensors["extra.prompt_mel"], tensors["extra.prompt_features"]
    assert mel.shape[0] == 100 and features.shape[0] == 512 and mel.shape[1] == features.shape[1] > 0
    assert tensors["ge"].shape == (1, 512, 1)


def test_synth_speaks_a_v3_voice_at_24_khz(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "v3.wav"
    argv = ["synth", "--data-dir", str(data_dir), "--voice", "lora_v3", "--threads", "2", "--no-fallback",
            "--seed", "7", TEXT, "-o", str(out)]
    assert main(argv) == 0
    rate, pcm = read_wav(out)
    assert rate == 24000
    assert len(pcm) > 0.2 * 24000 * 2


def test_missing_base_or_vocoder_is_reported(data_dir: Path, tmp_path: Path, capsys) -> None:
    """A v4 LoRA voice without its pretrained base, then without the vocoder: refused with the missing
    file's path (and what to do), not a traceback."""
    broken = tmp_path / "data"
    models = data_dir / "models"
    link_tiny_models(broken, {"hubert": models / "chinese-hubert-base", "bert": models / "chinese-roberta-wwm-ext-large",
                              "gpt": models / "gpt.ckpt", "sovits": models / "sovits.pth"})
    (broken / "models" / "user").mkdir()
    _place(models / "user" / LORA_FILES["v4"], broken / "models" / "user" / LORA_FILES["v4"])
    vocoder = PRETRAINED["v4"].vocoder[0]
    (broken / "models" / vocoder).parent.mkdir(parents=True)
    os.symlink(models / vocoder, broken / "models" / vocoder)
    config = tiny_voice_config(sovits=f"models/user/{LORA_FILES['v4']}", sample_steps=STEPS)
    make_voice(broken, "lora_v4", reference=next((data_dir / "voices" / "lora_v4").glob("ref.*")), config=config)
    out = tmp_path / "x.wav"
    argv = ["synth", "--data-dir", str(broken), "--voice", "lora_v4", "--threads", "1", "--no-fallback", TEXT,
            "-o", str(out)]

    assert main(argv) != 0
    said = capsys.readouterr()
    text = said.out + said.err
    assert "pretrained base model missing" in text and str(broken / "models" / PRETRAINED["v4"].sovits) in text
    assert "download --version v4" in text

    (broken / "models" / vocoder).unlink()
    assert main(argv) != 0
    said = capsys.readouterr()
    assert f"{broken / 'models' / vocoder}: v4 vocoder weights not found" in said.out + said.err
    assert not out.exists()
    torch.set_num_threads(2)
