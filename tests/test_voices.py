"""Voice folders, reference checks, the registry rescan and the bundle cache."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest
import torch

from voice_data import backdate, make_voice, write_tone
from wyoming_gsv.text import frontend
from wyoming_gsv.voices import (
    LANGUAGE_MODES,
    BundleCache,
    ModelPaths,
    VoiceBundle,
    VoiceError,
    VoiceRegistry,
    advertised_languages,
    bundle_key,
    load_voice,
    mode_for_language_code,
)


def test_models_resolve_from_data_dir(data_dir: Path, models: ModelPaths) -> None:
    assert models.hubert == data_dir / "models" / "chinese-hubert-base"
    assert models.bert == data_dir / "models" / "chinese-roberta-wwm-ext-large"
    assert models.gpt == data_dir / "models" / "gpt.ckpt"
    assert models.sovits == data_dir / "models" / "sovits.pth"
    override = ModelPaths.resolve(data_dir, gpt=data_dir / "x.ckpt")
    assert override.gpt == data_dir / "x.ckpt"


def test_voice_from_folder_with_yaml(data_dir: Path, models: ModelPaths) -> None:
    folder = make_voice(
        data_dir,
        "alice",
        config={"description": "Alice", "language": "en", "top_k": 5, "speed": 1.1, "temperature": 0.8},
    )
    voice = load_voice(folder, models)
    assert voice.id == "alice"
    assert voice.description == "Alice"
    assert voice.language == "en" and voice.prompt_language == "en"
    assert voice.params.top_k == 5 and voice.params.speed == 1.1 and voice.params.temperature == 0.8
    assert voice.params.top_p == 1.0  # untouched defaults stay
    assert voice.languages == ("en", "en_US")
    assert voice.reference.sample_rate == 32000
    assert voice.reference.seconds == pytest.approx(3.5)
    assert voice.transcript == "This is a reference voice."
    assert voice.gpt == models.gpt.resolve()


def test_voice_text_split(data_dir: Path, models: ModelPaths) -> None:
    assert load_voice(make_voice(data_dir, "plain"), models).text_split is None  # our sentence splitter
    assert load_voice(make_voice(data_dir, "cut", config={"text_split": "cut2"}), models).text_split == "cut2"


def test_voice_without_yaml_defaults_to_auto(data_dir: Path, models: ModelPaths) -> None:
    voice = load_voice(make_voice(data_dir, "bob"), models)
    assert voice.language == "auto"
    assert voice.description == "bob"
    assert {"zh", "zh_CN", "en", "en_US", "ja", "ja_JP", "ko", "ko_KR"} <= set(voice.languages)


def test_voice_model_paths_relative_to_data_dir(data_dir: Path, models: ModelPaths) -> None:
    (data_dir / "models" / "mine").mkdir()
    (data_dir / "models" / "mine" / "g.ckpt").write_bytes(b"PK")
    voice = load_voice(make_voice(data_dir, "carol", config={"gpt": "models/mine/g.ckpt"}), models)
    assert voice.gpt == (data_dir / "models" / "mine" / "g.ckpt").resolve()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"transcript": None}, "transcript is missing"),
        ({"transcript": "   "}, "transcript is empty"),
        ({"seconds": 2.0}, "must be 3-10 s"),
        ({"seconds": 11.0}, "must be 3-10 s"),
        ({"rate": 8000}, "below 16000 Hz"),
        ({"config": {"language": "klingon"}}, "language 'klingon'"),
        ({"config": {"temprature": 0.5}}, "unknown setting(s) temprature"),
        ({"config": {"top_k": 0}}, "top_k must be >= 1"),
        # Wrong types are refused when the folder is read, not when a request reaches the model.
        ({"config": {"seed": "abc"}}, "seed must be a whole number, got 'abc'"),
        ({"config": {"top_k": 2.5}}, "top_k must be a whole number"),
        ({"config": {"temperature": True}}, "temperature must be a number, got True"),
        ({"config": {"speed": float("nan")}}, "speed must be a number, got nan"),
        # YAML keys need not be strings (`1:`, `true:`); listing them must not crash the scan.
        ({"config": {3: "x", True: "y"}}, "unknown setting(s) 3, True"),
        ({"config": {"gpt": "models/none.ckpt"}}, "gpt weights file not found"),
        ({"config": {"aux_refs": ["nope.wav"]}}, "reference clip is missing"),
        ({"config": {"text_split": "cut9"}}, "text_split 'cut9' is not one of cut0, cut1, cut2, cut3, cut4, cut5"),
    ],
)
def test_bad_voice_names_the_problem(data_dir: Path, models: ModelPaths, kwargs: dict, expected: str) -> None:
    folder = make_voice(data_dir, "bad", **kwargs)
    with pytest.raises(VoiceError) as info:
        load_voice(folder, models)
    assert expected in str(info.value)
    assert "'bad'" in str(info.value)


def test_silent_and_unreadable_references(data_dir: Path, models: ModelPaths) -> None:
    silent = make_voice(data_dir, "silent")
    write_tone(silent / "ref.wav", amplitude=0.0)
    with pytest.raises(VoiceError, match="silent"):
        load_voice(silent, models)
    garbage = make_voice(data_dir, "garbage")
    (garbage / "ref.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(VoiceError, match="cannot read audio"):
        load_voice(garbage, models)


def test_flac_reference_accepted(data_dir: Path, models: ModelPaths, tmp_path: Path) -> None:
    flac = write_tone(tmp_path / "src" / "ref.flac", rate=48000)
    voice = load_voice(make_voice(data_dir, "flac", reference=flac), models)
    assert voice.reference.path.suffix == ".flac" and voice.reference.sample_rate == 48000


def test_missing_base_models_is_a_voice_problem(tmp_path: Path) -> None:
    folder = make_voice(tmp_path, "lonely")
    with pytest.raises(VoiceError, match="no gpt weights"):
        load_voice(folder, ModelPaths.resolve(tmp_path))


def test_registry_rescans_and_logs_bad_voice_once(
    data_dir: Path, models: ModelPaths, caplog: pytest.LogCaptureFixture
) -> None:
    registry = VoiceRegistry(models)
    assert registry.scan() == []
    make_voice(data_dir, "a")
    make_voice(data_dir, "b", transcript=None)
    with caplog.at_level(logging.ERROR):
        assert [v.id for v in registry.scan()] == ["a"]
        registry.scan()
    assert sum("transcript is missing" in r.getMessage() for r in caplog.records) == 1
    assert "b" in registry.problems()

    # Fix the bad voice, change the good one, add a third: all seen without a restart.
    (data_dir / "voices" / "b" / "ref.txt").write_text("Now it has words.")
    (data_dir / "voices" / "a" / "voice.yaml").write_text("description: Voice A\nlanguage: en\n")
    make_voice(data_dir, "c")
    voices = {v.id: v for v in registry.scan()}
    assert set(voices) == {"a", "b", "c"}
    assert voices["a"].description == "Voice A"
    assert registry.problems() == {}

    import shutil

    shutil.rmtree(data_dir / "voices" / "c")
    assert [v.id for v in registry.scan()] == ["a", "b"]
    assert registry.get("c") is None
    assert registry.get("../models") is None


def test_unlistable_voice_folder_does_not_hide_the_others(
    data_dir: Path, models: ModelPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PermissionError listing one folder escaped scan(), so describe listed no voice at all."""
    make_voice(data_dir, "a")
    make_voice(data_dir, "locked")
    listdir = Path.iterdir

    def iterdir(self: Path):
        if self.name == "locked":
            raise PermissionError(13, "Permission denied", str(self))
        return listdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    assert "a" in [v.id for v in VoiceRegistry(models).scan()]


def test_registry_reuses_unchanged_voice(data_dir: Path, models: ModelPaths) -> None:
    make_voice(data_dir, "a")
    registry = VoiceRegistry(models)
    first = registry.get("a")
    assert first is not None and registry.get("a") is first


def test_registry_mark_broken_until_files_change(data_dir: Path, models: ModelPaths) -> None:
    folder = make_voice(data_dir, "a")
    registry = VoiceRegistry(models)
    assert registry.get("a") is not None
    registry.mark_broken("a", "sovits weights unusable")
    assert registry.scan() == []
    assert registry.problems() == {"a": "sovits weights unusable"}
    later = time.time() + 5
    os.utime(folder / "ref.txt", (later, later))
    assert registry.get("a") is not None


def test_languages_both_forms() -> None:
    assert advertised_languages("zh") == ["zh", "zh_CN"]
    assert advertised_languages("all_ja") == ["ja", "ja_JP"]
    assert advertised_languages("yue") == ["yue", "zh_HK"]
    assert mode_for_language_code("en-US") == "en"
    assert mode_for_language_code("zh_HK") == "yue"
    assert mode_for_language_code("xx") is None


def test_every_frontend_mode_is_a_voice_language_with_codes() -> None:
    """Voices accept exactly the text frontend's modes, and each one is advertised under some code."""
    assert LANGUAGE_MODES == set(frontend.LANGUAGE_MODES)
    for mode in frontend.LANGUAGE_MODES:
        assert advertised_languages(mode), mode
        assert mode_for_language_code(mode) == mode


def _bundle(prompt_len: int = 7) -> VoiceBundle:
    return VoiceBundle(
        prompt_codes=torch.arange(prompt_len * 2, dtype=torch.int64),
        prompt_phones=torch.arange(prompt_len, dtype=torch.int64),
        prompt_bert=torch.randn(16, prompt_len),
        ge=torch.randn(1, 8, 1),
        extras={"sv_emb": torch.randn(1, 4)},
    )


def test_bundle_key_changes_with_every_input(data_dir: Path, models: ModelPaths) -> None:
    folder = make_voice(data_dir, "a", config={"language": "en"})
    key = bundle_key(load_voice(folder, models), models)
    assert bundle_key(load_voice(folder, models), models) == key

    (folder / "ref.txt").write_text("Another transcript.")
    changed_text = bundle_key(load_voice(folder, models), models)
    write_tone(folder / "ref.wav", amplitude=0.5)
    changed_audio = bundle_key(load_voice(folder, models), models)
    (folder / "voice.yaml").write_text("language: en\nprompt_language: zh\n")
    changed_lang = bundle_key(load_voice(folder, models), models)
    sovits = data_dir / "models" / "sovits.pth"
    sovits.write_bytes(b"PK-other-weights")
    backdate(sovits)
    changed_model = bundle_key(load_voice(folder, models), models)
    assert len({key, changed_text, changed_audio, changed_lang, changed_model}) == 5
    assert bundle_key(load_voice(folder, models), models, {"frontend": "2"}) != changed_model


def test_bundle_cache_roundtrip_and_atomic_replace(tmp_path: Path) -> None:
    cache = BundleCache(tmp_path / "cache")
    assert cache.load("a", "k1") is None
    bundle = _bundle()
    path = cache.save("a", "k1", bundle)
    loaded = cache.load("a", "k1")
    assert loaded is not None
    for name in ("prompt_codes", "prompt_phones", "prompt_bert", "ge"):
        assert torch.equal(getattr(loaded, name), getattr(bundle, name))
    assert torch.equal(loaded.extras["sv_emb"], bundle.extras["sv_emb"])
    # A new key for the same voice replaces the stale file; no temp files are left behind.
    cache.save("a", "k2", _bundle(5))
    assert not path.exists()
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [cache.path_for("a", "k2").name]


def test_bundle_cache_keeps_bundles_of_voices_with_dotted_ids(tmp_path: Path) -> None:
    """Saving "anna" drops anna's stale bundles only, not those of "anna.v2" (its glob matches them)."""
    cache = BundleCache(tmp_path / "cache")
    dotted = cache.save("anna.v2", "k1", _bundle())
    cache.save("anna", "k1", _bundle())
    cache.save("anna", "k2", _bundle())
    assert dotted.exists() and cache.load("anna.v2", "k1") is not None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [dotted.name, cache.path_for("anna", "k2").name]
    )


def test_bundle_cache_rejects_corrupt_and_mismatched(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = BundleCache(tmp_path / "cache")
    path = cache.save("a", "k1", _bundle())
    path.write_bytes(path.read_bytes()[:50])
    with caplog.at_level(logging.WARNING):
        assert cache.load("a", "k1") is None
    assert "rebuilding" in caplog.text
    assert not path.exists()

    # A file under the right name but written for another key is not trusted either.
    other = cache.save("a", "k2", _bundle())
    other.rename(cache.path_for("a", "k1"))
    assert cache.load("a", "k1") is None


def test_corrupt_bundle_in_a_read_only_cache_is_rebuilt_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = BundleCache(tmp_path / "cache")
    path = cache.save("a", "k1", _bundle())
    path.write_bytes(b"garbage")

    def read_only(self: Path, missing_ok: bool = False) -> None:
        raise PermissionError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    assert cache.load("a", "k1") is None  # the OSError of the clean-up used to escape


def test_bundle_validates_shapes() -> None:
    with pytest.raises(ValueError, match="prompt_bert"):
        VoiceBundle(
            prompt_codes=torch.zeros(3, dtype=torch.int64),
            prompt_phones=torch.zeros(4, dtype=torch.int64),
            prompt_bert=torch.zeros(16, 5),
            ge=torch.zeros(1, 8, 1),
        )
