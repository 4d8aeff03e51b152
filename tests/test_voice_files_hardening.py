"""Voice files copied from the internet cannot make a scan slow, huge or wrong: every file a voice
reads is bounded before it is read whole."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest
import soundfile
import torch

from voice_data import fake_model_files, make_voice, write_tone
from wyoming_gsv.gsv.checkpoints import (
    MAX_PICKLED_DEPTH,
    MAX_PICKLED_NODES,
    ModelFileError,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.voices import BundleCache, ModelPaths, VoiceBundle, VoiceError, VoiceRegistry, load_voice
from wyoming_gsv.voices.reference import MAX_SECONDS, check_reference, ReferenceProblem
from wyoming_gsv.voices.voice import MAX_ID_LENGTH, MAX_TRANSCRIPT_CHARS, MAX_YAML_BYTES, STYLES_DIR

# Generous for a loaded 2-core CI machine; the unbounded code took 18 s and 340 MB on the bomb below.
FAST_SECONDS = 5.0


def test_transcript_over_the_limit_is_refused(data_dir: Path, models: ModelPaths) -> None:
    at_limit = make_voice(data_dir, "long", transcript="a" * MAX_TRANSCRIPT_CHARS)
    assert len(load_voice(at_limit, models).transcript) == MAX_TRANSCRIPT_CHARS
    over = make_voice(data_dir, "longer", transcript="a" * (MAX_TRANSCRIPT_CHARS + 1))
    with pytest.raises(VoiceError, match=f"limit is {MAX_TRANSCRIPT_CHARS}"):
        load_voice(over, models)
    huge = make_voice(data_dir, "huge", transcript=None)
    (huge / "ref.txt").write_bytes(b"a" * 50_000_000)  # never read whole
    with pytest.raises(VoiceError, match="over the limit"):
        load_voice(huge, models)


def test_yaml_alias_bomb_is_refused_without_expanding(data_dir: Path, models: ModelPaths) -> None:
    folder = make_voice(data_dir, "bomb")
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):  # 9**9 = 387 million strings once expanded
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        levels.append(f"{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]")
    levels.append("description: *i")
    (folder / "voice.yaml").write_text("\n".join(levels) + "\n")
    started = time.monotonic()
    with pytest.raises(VoiceError, match="aliases"):
        load_voice(folder, models)
    assert time.monotonic() - started < FAST_SECONDS


def test_yaml_over_the_size_limit_is_refused(data_dir: Path, models: ModelPaths) -> None:
    folder = make_voice(data_dir, "big")
    (folder / "voice.yaml").write_text("description: " + "x" * MAX_YAML_BYTES + "\n")
    with pytest.raises(VoiceError, match="over the limit"):
        load_voice(folder, models)


def test_clip_length_comes_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long clip is refused from its header: its audio is never decoded (a rescan runs on
    every describe)."""
    long_clip = write_tone(tmp_path / "long.wav", seconds=6 * MAX_SECONDS, rate=16000)
    decoded: list[str] = []
    real_read = soundfile.read

    def counting_read(*args, **kwargs):
        decoded.append(str(args[0]))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(soundfile, "read", counting_read)
    with pytest.raises(ReferenceProblem, match="long"):
        check_reference(long_clip)
    assert decoded == []
    good = write_tone(tmp_path / "good.wav", seconds=4.0, rate=16000)
    assert check_reference(good).seconds == pytest.approx(4.0)  # a good clip is still read (silence check)


def test_voice_id_too_long_for_a_cache_file_is_never_advertised(data_dir: Path, models: ModelPaths) -> None:
    make_voice(data_dir, "v" * (MAX_ID_LENGTH + 1))
    make_voice(data_dir, "ok")
    registry = VoiceRegistry(models)
    assert [voice.id for voice in registry.scan()] == ["ok"]
    assert "longer than" in registry.problems()["v" * (MAX_ID_LENGTH + 1)]


def _fan_out_bomb(levels: int, fan_out: int) -> list:
    """A list of lists sharing one child per level: tiny pickled, fan_out**levels once walked."""
    tree: list = [0]
    for _ in range(levels):
        tree = [tree] * fan_out
    return tree


def _saved(tmp_path: Path, name: str, checkpoint: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    path = tmp_path / name
    path.write_bytes(buffer.getvalue())
    return path


@pytest.mark.parametrize("loader", [load_sovits_checkpoint, load_gpt_checkpoint], ids=["sovits", "gpt"])
def test_pickled_list_of_lists_bomb_is_refused_fast(tmp_path: Path, loader) -> None:
    bomb = _fan_out_bomb(levels=5, fan_out=16)  # a million nodes behind a 1.9 KB file
    weights = {"enc_p.text_embedding.weight": torch.zeros(2, 2), "model.x": torch.zeros(1)}
    path = _saved(tmp_path, "bomb.pth", {"weight": weights, "config": {"model": {}, "data": {}, "x": bomb}})
    assert path.stat().st_size < 4096
    started = time.monotonic()
    with pytest.raises(ModelFileError, match=f"over {MAX_PICKLED_NODES} entries"):
        loader(path)
    assert time.monotonic() - started < FAST_SECONDS


def test_deeply_nested_pickle_is_refused(tmp_path: Path) -> None:
    nested: list = []
    for _ in range(MAX_PICKLED_DEPTH + 5):
        nested = [nested]
    path = _saved(tmp_path, "deep.pth", {"weight": {"enc_p.text_embedding.weight": torch.zeros(2, 2)}, "config": nested})
    with pytest.raises(ModelFileError, match=f"over {MAX_PICKLED_DEPTH} levels"):
        load_sovits_checkpoint(path)


# ----------------------------------------------------------------------------- 6. a cache that cannot lie
def _bundle() -> VoiceBundle:
    return VoiceBundle(
        prompt_codes=torch.arange(40, dtype=torch.int64),
        prompt_phones=torch.arange(9, dtype=torch.int64),
        prompt_bert=torch.randn(16, 9),
        ge=torch.randn(1, 8, 1),
    )


def test_bundle_with_damaged_tensor_bytes_is_rebuilt_not_used(tmp_path: Path) -> None:
    """safetensors checks its header, not the tensor bytes: a flipped byte in the data used to be
    loaded as a valid bundle."""
    cache = BundleCache(tmp_path / "cache")
    path = cache.save("anna", "k1", _bundle())
    assert cache.load("anna", "k1") is not None
    raw = bytearray(path.read_bytes())
    header_length = int.from_bytes(raw[:8], "little")
    raw[8 + header_length + 20] ^= 0xFF  # inside the first tensor's bytes; the header is intact
    path.write_bytes(bytes(raw))
    assert cache.load("anna", "k1") is None
    assert not path.exists()


def test_temp_files_of_a_killed_writer_are_removed_at_start(tmp_path: Path) -> None:
    fake_model_files(tmp_path)
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    abandoned = cache_dir / ".anna.x1y2z3.tmp"
    abandoned.write_bytes(b"half a bundle")
    an_hour_ago = time.time() - 3600
    os.utime(abandoned, (an_hour_ago, an_hour_ago))
    being_written = cache_dir / ".bert.a1b2c3.tmp"  # another process may be writing it now
    being_written.write_bytes(b"in progress")
    kept = BundleCache(cache_dir).save("anna", "k1", _bundle())
    runtime = Runtime(RuntimeSettings(data_dir=tmp_path, threads=1, use_fallback=False))
    try:
        assert not abandoned.exists()
        assert being_written.exists() and kept.exists()
    finally:
        runtime.close()


# ----------------------------------------------------------------------------- 5. files stay inside their roots
def _escape_by_folder_link(data_dir: Path, outside: Path) -> None:
    real = make_voice(outside, "elsewhere")
    (data_dir / "voices").mkdir(exist_ok=True)
    os.symlink(real, data_dir / "voices" / "escape")


def _escape_by_clip_link(data_dir: Path, outside: Path) -> None:
    folder = make_voice(data_dir, "escape")
    (folder / "ref.wav").unlink()
    os.symlink(write_tone(outside / "clip.wav"), folder / "ref.wav")


def _escape_by_transcript_link(data_dir: Path, outside: Path) -> None:
    folder = make_voice(data_dir, "escape", transcript=None)
    secret = outside / "secret.txt"
    secret.write_text("a file the server has no business reading")
    os.symlink(secret, folder / "ref.txt")


def _escape_by_aux_refs(data_dir: Path, outside: Path) -> None:
    write_tone(outside / "aux.wav")
    relative = os.path.relpath(outside / "aux.wav", data_dir / "voices" / "escape")
    make_voice(data_dir, "escape", config={"aux_refs": [relative]})


def _escape_by_absolute_gpt(data_dir: Path, outside: Path) -> None:
    (outside / "gpt.ckpt").write_bytes(b"PK-weights")
    make_voice(data_dir, "escape", config={"gpt": str(outside / "gpt.ckpt")})


def _escape_by_relative_sovits(data_dir: Path, outside: Path) -> None:
    (outside / "sovits.pth").write_bytes(b"PK-weights")
    make_voice(data_dir, "escape", config={"sovits": os.path.relpath(outside / "sovits.pth", data_dir)})


@pytest.mark.parametrize(
    "escape",
    [_escape_by_folder_link, _escape_by_clip_link, _escape_by_transcript_link, _escape_by_aux_refs,
     _escape_by_absolute_gpt, _escape_by_relative_sovits],
    ids=["folder-symlink", "clip-symlink", "transcript-symlink", "aux_refs", "gpt-absolute", "sovits-relative"],
)
def test_voice_files_outside_the_data_dir_are_refused_unless_allowed(tmp_path: Path, escape) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    fake_model_files(data_dir)
    outside.mkdir()
    escape(data_dir, outside)
    registry = VoiceRegistry(ModelPaths.resolve(data_dir))
    assert registry.scan() == []
    assert "outside the data dir" in registry.problems()["escape"]
    allowed = VoiceRegistry(ModelPaths.resolve(data_dir, allowed_roots=(outside,)))
    assert [voice.id for voice in allowed.scan()] == ["escape"]


def test_style_files_outside_the_data_dir_and_overlong_style_names_are_left_out(tmp_path: Path) -> None:
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    fake_model_files(data_dir)
    folder = make_voice(data_dir, "anna")
    styles = folder / STYLES_DIR
    make_voice(outside, "whisper")  # a style folder linked in from elsewhere
    styles.mkdir()
    os.symlink(outside / "voices" / "whisper", styles / "whisper")
    long_style = "s" * (MAX_ID_LENGTH - len("anna"))  # "anna@sss..." one over the limit
    write_tone(styles / long_style / "ref.wav")
    (styles / long_style / "ref.txt").write_text("This is a reference voice.")
    write_tone(styles / "calm" / "ref.wav")
    (styles / "calm" / "ref.txt").write_text("This is a calm reference voice.")
    voice = load_voice(folder, ModelPaths.resolve(data_dir))
    assert voice.style_names() == ("calm",)
    problems = dict(voice.style_problems)
    assert "outside the data dir" in problems["whisper"]
    assert "cache file name" in problems[long_style]
    allowed = load_voice(folder, ModelPaths.resolve(data_dir, allowed_roots=(outside,)))
    assert allowed.style_names() == ("calm", "whisper")
