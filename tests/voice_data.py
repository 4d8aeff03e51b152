"""Helpers that lay out a wyoming-gsv data dir (voices, models) for the server/voices tests, and read
the WAVs they produce."""

from __future__ import annotations

import os
import shutil
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import yaml


def write_tone(path: Path, seconds: float = 3.5, rate: int = 32000, amplitude: float = 0.3) -> Path:
    """A vowel-like harmonic tone (speech-shaped enough for reference checks)."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * 140.0 * k * t) / k for k in range(1, 6))
    wave = amplitude * wave / np.max(np.abs(wave))
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")
    return path


def read_wav(path: Path) -> tuple[int, bytes]:
    """(sample rate, PCM frames) of a WAV the server or CLI wrote: always mono 16-bit."""
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.getframerate(), wav.readframes(wav.getnframes())


def fake_model_files(data_dir: Path) -> None:
    """Non-empty placeholder base models, enough for voice scanning (not for synthesis), dated a
    minute back as if installed earlier (files changed moments ago count as still being written)."""
    models = data_dir / "models"
    files = {
        "chinese-hubert-base/config.json": b"{}",
        "chinese-hubert-base/preprocessor_config.json": b"{}",
        "chinese-hubert-base/pytorch_model.bin": b"PK-hubert",
        "chinese-roberta-wwm-ext-large/config.json": b"{}",
        "chinese-roberta-wwm-ext-large/pytorch_model.bin": b"PK-bert",
        "gpt.ckpt": b"PK-gpt",
        "sovits.pth": b"PK-sovits",
    }
    for name, data in files.items():
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(data)
        backdate(models / name)


def backdate(path: Path, seconds: float = 60.0) -> Path:
    """Date a file back (a model file replaced moments ago counts as still being written)."""
    earlier = time.time() - seconds
    os.utime(path, (earlier, earlier))
    return path


def link_tiny_models(data_dir: Path, unpacked: dict[str, Path]) -> None:
    """The tiny fixture checkpoints placed where a user would put the real ones."""
    models = data_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    links = {
        "chinese-hubert-base": unpacked["hubert"],
        "chinese-roberta-wwm-ext-large": unpacked["bert"],
        "gpt.ckpt": unpacked["gpt"],
        "sovits.pth": unpacked["sovits"],
    }
    for name, target in links.items():
        link = models / name
        if not link.exists():
            os.symlink(target, link)


def make_voice(
    data_dir: Path,
    voice_id: str,
    *,
    transcript: str | None = "This is a reference voice.",
    config: dict[str, Any] | None = None,
    reference: Path | None = None,
    seconds: float = 3.5,
    rate: int = 32000,
) -> Path:
    folder = data_dir / "voices" / voice_id
    folder.mkdir(parents=True, exist_ok=True)
    if reference is not None:
        shutil.copy(reference, folder / ("ref" + reference.suffix))
    else:
        write_tone(folder / "ref.wav", seconds=seconds, rate=rate)
    if transcript is not None:
        (folder / "ref.txt").write_text(transcript, encoding="utf-8")
    if config is not None:
        (folder / "voice.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return folder


def tiny_voice_config(**overrides: Any) -> dict[str, Any]:
    """An English voice on the tiny fixture models, deterministic unless overridden."""
    config: dict[str, Any] = {"description": "Tiny test voice", "language": "en", "top_k": 1, "noise_scale": 0.0}
    config.update(overrides)
    return config


def make_tiny_data_dir(root: Path, unpacked: dict[str, Path]) -> Path:
    """A data dir with the tiny fixture models, one good voice ("tiny") and one bad ("broken")."""
    link_tiny_models(root, unpacked)
    make_voice(root, "tiny", reference=unpacked["ref_wav"], config=tiny_voice_config())
    make_voice(root, "broken", transcript=None)
    return root
