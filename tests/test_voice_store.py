"""The voice store (voices/store.py) on real folders: create, update, rename, delete, styles;
refusals naming their field; atomic writes; concurrent saves; the registry seeing every change."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest
import soundfile
import yaml

from clip_data import encode, speechlike
from voice_data import fake_model_files
from wyoming_gsv.voices import ModelPaths, VoiceRegistry
from wyoming_gsv.voices.check import Window
from wyoming_gsv.voices.store import DEFAULT_MAX_UPLOAD_BYTES, MAX_ID_LENGTH, StoreError, VoiceDraft, VoiceStore

RATE = 32000
WORDS = "one two three four five six seven eight nine ten eleven twelve"


@pytest.fixture
def store(data_dir: Path) -> VoiceStore:
    return VoiceStore(data_dir)


@pytest.fixture
def registry(data_dir: Path) -> VoiceRegistry:
    return VoiceRegistry(ModelPaths.resolve(data_dir))


def _clip(seconds: float = 5.0, fmt: str = "FLAC", **kwargs) -> bytes:
    return encode(speechlike(seconds, **kwargs), RATE, fmt)


def _draft(voice_id: str = "anna", **changes) -> VoiceDraft:
    fields = {"voice_id": voice_id, "clip": _clip(), "transcript": WORDS, "language": "en"}
    fields.update(changes)
    return VoiceDraft(**fields)


def _listing(data_dir: Path) -> list[str]:
    """Everything under voices/, hidden leftovers included."""
    root = data_dir / "voices"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_create_writes_a_voice_the_registry_loads(store: VoiceStore, registry: VoiceRegistry, data_dir: Path) -> None:
    assert registry.scan() == []
    folder = store.create(_draft(description="Anna,  calm", params={"top_k": 5, "temperature": 0.8}))
    assert folder == (data_dir / "voices" / "anna").resolve()
    assert sorted(p.name for p in folder.iterdir()) == ["ref.txt", "ref.wav", "voice.yaml"]
    # The FLAC upload is stored as WAV.
    assert (folder / "ref.wav").read_bytes()[:4] == b"RIFF"
    voices = registry.scan()  # no restart: the next scan sees it
    assert [v.id for v in voices] == ["anna"]
    voice = voices[0]
    assert voice.description == "Anna, calm" and voice.language == "en" and voice.transcript == WORDS
    assert voice.params.top_k == 5 and voice.params.temperature == 0.8
    assert voice.reference.report is not None and voice.reference.report.verdict == "good"
    assert not [name for name in _listing(data_dir) if name.startswith(".")]


def test_a_long_clip_is_saved_as_its_window(store: VoiceStore, registry: VoiceRegistry) -> None:
    long_clip = _clip(25.0, fmt="WAV")
    with pytest.raises(StoreError, match="25.00 s long") as refused:
        store.create(_draft(clip=long_clip))
    assert refused.value.field == "clip"
    folder = store.create(_draft(clip=long_clip, window=Window(3.0, 9.5)))
    info = soundfile.info(str(folder / "ref.wav"))
    assert info.frames == int(6.5 * RATE)
    with pytest.raises(StoreError) as outside:
        store.create(_draft("b", clip=long_clip, window=Window(20.0, 30.0)))
    assert outside.value.field == "window"


@pytest.mark.parametrize(
    "voice_id, message",
    [
        ("a/b", "'/'"),
        ("../etc", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("x" * 300, "300 characters"),
        ("bad\x07id", "control characters"),
        (".hidden", "must start with a letter or digit"),
        ("", "required"),
        ("sp ace", "letters"),
    ],
)
def test_bad_ids_are_refused_and_nothing_is_written(store: VoiceStore, data_dir: Path, voice_id: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as refused:
        store.create(_draft(voice_id))
    assert refused.value.field == "id"
    assert _listing(data_dir) == []
    assert sorted(p.name for p in data_dir.iterdir()) == ["models"]  # nothing outside voices/ either


def test_id_length_limit(store: VoiceStore) -> None:
    store.create(_draft("x" * MAX_ID_LENGTH))
    with pytest.raises(StoreError, match="at most"):
        store.create(_draft("x" * (MAX_ID_LENGTH + 1)))


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"clip": b"not audio at all" * 100}, "clip", "cannot read audio"),
        ({"clip": b""}, "clip", "empty"),
        ({"clip": None}, "clip", "no audio file"),
        ({"clip": encode(speechlike(5.0, 8000), 8000, "WAV")}, "clip", "below 16000 Hz"),
        ({"transcript": "   "}, "transcript", "required"),
        ({"language": "klingon"}, "language", "not one of"),
        ({"prompt_language": "xx"}, "prompt_language", "not one of"),
        ({"params": {"top_p": 2.0}}, "top_p", "top_p must be"),
        ({"params": {"top_k": "many"}}, "top_k", "whole number"),
        ({"params": {"temprature": 1.0}}, "params", "unknown setting"),
        ({"description": "x" * 500}, "description", "200 characters"),
        ({"aux_clips": (b"junk",)}, "aux_clips", "cannot read audio"),
    ],
)
def test_bad_fields_are_refused_by_name(store: VoiceStore, data_dir: Path, changes: dict, field: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as refused:
        store.create(_draft(**changes))
    assert refused.value.field == field and refused.value.code == "bad-request"
    assert str(refused.value) == refused.value.message
    assert _listing(data_dir) == []


def test_upload_size_limit(data_dir: Path) -> None:
    assert DEFAULT_MAX_UPLOAD_BYTES == 50 * 1024 * 1024
    clip = _clip(fmt="WAV")
    small = VoiceStore(data_dir, max_upload_bytes=len(clip) - 1)
    with pytest.raises(StoreError, match="larger than the limit") as refused:
        small.create(_draft(clip=clip))
    assert refused.value.field == "clip"
    with pytest.raises(StoreError) as refused_gpt:
        small.create(_draft(clip=_clip(fmt="OGG"), gpt=b"x" * len(clip)))
    assert refused_gpt.value.field == "gpt"
    assert _listing(data_dir) == []


def test_an_existing_voice_is_replaced_only_when_confirmed(store: VoiceStore, registry: VoiceRegistry) -> None:
    store.create(_draft(description="first"))
    with pytest.raises(StoreError, match="already exists") as refused:
        store.create(_draft(description="second"))
    assert refused.value.field == "id" and refused.value.code == "exists"
    assert registry.get("anna").description == "first"
    store.create(_draft(description="second"), overwrite=True)
    assert registry.get("anna").description == "second"


def test_two_concurrent_saves_of_one_id_exactly_one_wins(store: VoiceStore, data_dir: Path, registry: VoiceRegistry) -> None:
    for attempt in range(5):
        voice_id = f"race{attempt}"
        barrier = threading.Barrier(2)
        outcomes: list[object] = []
        drafts = [_draft(voice_id, description=f"writer {n}", clip=_clip(seed=n)) for n in range(2)]

        def save(draft: VoiceDraft) -> None:
            barrier.wait()
            try:
                outcomes.append(store.create(draft))
            except StoreError as err:
                outcomes.append(err)

        threads = [threading.Thread(target=save, args=(draft,)) for draft in drafts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        errors = [o for o in outcomes if isinstance(o, StoreError)]
        assert len(errors) == 1 and errors[0].field == "id" and errors[0].code == "exists", outcomes
        assert "already exists" in errors[0].message or "same moment" in errors[0].message
        voice = registry.get(voice_id)
        assert voice is not None and voice.description in ("writer 0", "writer 1")
    assert not [name for name in _listing(data_dir) if name.startswith(".")]


def test_update_rewrites_settings_atomically(store: VoiceStore, registry: VoiceRegistry, data_dir: Path) -> None:
    store.create(_draft(params={"top_k": 5}))
    assert registry.get("anna").params.top_k == 5
    store.update("anna", description="New", language="auto", params={"temperature": 0.7, "top_k": None, "seed": 3})
    voice = registry.get("anna")
    assert voice.description == "New" and voice.language == "auto" and voice.prompt_language == "auto"
    assert voice.params.top_k == 15 and voice.params.temperature == 0.7 and voice.params.seed == 3
    store.update("anna", transcript="A new transcript for the clip of twelve words in all, said.")
    assert registry.get("anna").transcript.startswith("A new transcript")
    with pytest.raises(StoreError) as refused:
        store.update("anna", params={"speed": 9.0})
    assert refused.value.field == "speed"
    assert registry.get("anna").params.speed == 1.0  # the refused change wrote nothing
    with pytest.raises(StoreError, match="no voice") as missing:
        store.update("nobody", description="x")
    assert missing.value.field == "id"
    assert sorted(p.name for p in (data_dir / "voices" / "anna").iterdir()) == ["ref.txt", "ref.wav", "voice.yaml"]


def test_rename_and_delete(store: VoiceStore, registry: VoiceRegistry, data_dir: Path) -> None:
    store.create(_draft())
    store.create(_draft("bob"))
    with pytest.raises(StoreError, match="already exists") as taken:
        store.rename("anna", "bob")
    assert taken.value.field == "new_id"
    store.rename("anna", "carla")
    assert [v.id for v in registry.scan()] == ["bob", "carla"]
    with pytest.raises(StoreError, match="'/'"):
        store.rename("carla", "x/y")
    store.delete("bob")
    assert [v.id for v in registry.scan()] == ["carla"]
    with pytest.raises(StoreError, match="no voice"):
        store.delete("bob")
    assert _listing(data_dir) and not [n for n in _listing(data_dir) if n.startswith(".")]


def test_deleting_a_voice_drops_its_bundles_only(store: VoiceStore, data_dir: Path) -> None:
    store.create(_draft())
    cache = data_dir / "cache"
    cache.mkdir()
    names = ["anna.abc.safetensors", "anna@happy.def.safetensors", "anna.v2.abc.safetensors", "annabel.abc.safetensors"]
    for name in names:
        (cache / name).write_bytes(b"x")
    store.delete("anna")
    assert sorted(p.name for p in cache.iterdir()) == ["anna.v2.abc.safetensors", "annabel.abc.safetensors"]


def test_styles(store: VoiceStore, registry: VoiceRegistry, data_dir: Path) -> None:
    store.create(_draft())
    store.add_style("anna", "cheerful", _clip(seed=1), WORDS)
    store.add_style("anna", "whisper", _clip(20.0, seed=2), WORDS, window=Window(1.0, 6.0))
    voice = registry.get("anna")
    assert voice.style_names() == ("cheerful", "whisper")
    styled = voice.with_style("whisper")
    assert styled.bundle_id == "anna@whisper" and styled.reference.seconds == pytest.approx(5.0)
    with pytest.raises(StoreError, match="already has a style") as taken:
        store.add_style("anna", "cheerful", _clip(), WORDS)
    assert taken.value.field == "style"
    with pytest.raises(StoreError, match="'..'") as bad:
        store.add_style("anna", "..", _clip(), WORDS)
    assert bad.value.field == "style"
    with pytest.raises(StoreError, match="below 16000 Hz") as low:
        store.add_style("anna", "phone", encode(speechlike(5.0, 8000), 8000, "WAV"), WORDS)
    assert low.value.field == "clip"
    store.delete_style("anna", "cheerful")
    assert registry.get("anna").style_names() == ("whisper",)
    with pytest.raises(StoreError, match="no style"):
        store.delete_style("anna", "cheerful")
    # A style added by hand with a refused clip is left out with its reason; the voice stays.
    bad_style = data_dir / "voices" / "anna" / "styles" / "bad"
    bad_style.mkdir()
    (bad_style / "ref.wav").write_bytes(encode(speechlike(5.0, 8000), 8000, "WAV"))
    (bad_style / "ref.txt").write_text(WORDS)
    voice = registry.get("anna")
    assert voice.style_names() == ("whisper",)
    assert voice.style_problems and voice.style_problems[0][0] == "bad" and "below 16000 Hz" in voice.style_problems[0][1]
    assert not [n for n in _listing(data_dir) if "/." in n or n.startswith(".")]


def test_model_files_uploaded_or_picked(unpacked_v2: dict[str, Path], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fake_model_files(data_dir)
    store = VoiceStore(data_dir)
    registry = VoiceRegistry(ModelPaths.resolve(data_dir))
    gpt_bytes, sovits_bytes = unpacked_v2["gpt"].read_bytes(), unpacked_v2["sovits"].read_bytes()

    with pytest.raises(StoreError, match="SoVITS") as swapped:
        store.create(_draft(gpt=sovits_bytes))
    assert swapped.value.field == "gpt"
    with pytest.raises(StoreError, match="GPT") as swapped_back:
        store.create(_draft(sovits=gpt_bytes))
    assert swapped_back.value.field == "sovits"
    assert _listing(data_dir) == []

    folder = store.create(_draft(gpt=gpt_bytes, sovits=sovits_bytes))
    config = yaml.safe_load((folder / "voice.yaml").read_text())
    assert config["gpt"] == "voices/anna/gpt.ckpt" and config["sovits"] == "voices/anna/sovits.pth"
    assert registry.get("anna").gpt == (folder / "gpt.ckpt").resolve()
    # Renaming moves the weights with the voice and points voice.yaml at them.
    store.rename("anna", "anna2")
    moved = registry.get("anna2")
    assert moved is not None and moved.sovits == (data_dir / "voices" / "anna2" / "sovits.pth").resolve()

    # Picking files already under the data dir; nothing outside it.
    (data_dir / "models" / "finetuned").mkdir()
    os.link(unpacked_v2["sovits"], data_dir / "models" / "finetuned" / "mine.pth")
    assert "models/finetuned/mine.pth" in store.model_files()
    assert "voices/anna2/gpt.ckpt" in store.model_files()
    store.create(_draft("bob", sovits="models/finetuned/mine.pth"))
    assert registry.get("bob").sovits == (data_dir / "models" / "finetuned" / "mine.pth").resolve()
    # A file the user linked into the data dir is listed and may be picked.
    (data_dir / "models" / "linked.ckpt").symlink_to(unpacked_v2["gpt"])
    assert "models/linked.ckpt" in store.model_files()
    store.create(_draft("dora", gpt="models/linked.ckpt"))
    assert yaml.safe_load((data_dir / "voices" / "dora" / "voice.yaml").read_text())["gpt"] == "models/linked.ckpt"
    for outside in ("../elsewhere.pth", str(unpacked_v2["sovits"]), "models/../../x.pth"):
        with pytest.raises(StoreError, match="outside the data dir") as refused:
            store.create(_draft("carl", sovits=outside))
        assert refused.value.field == "sovits"
    with pytest.raises(StoreError, match="not a file") as missing:
        store.create(_draft("carl", gpt="models/none.ckpt"))
    assert missing.value.field == "gpt"


def test_leftovers_of_a_crash_are_cleaned_and_never_listed(data_dir: Path, registry: VoiceRegistry) -> None:
    voices = data_dir / "voices"
    leftover = voices / ".staging-anna-123"
    leftover.mkdir(parents=True)
    (leftover / "ref.wav").write_bytes(_clip(fmt="WAV"))
    assert registry.scan() == [] and registry.problems() == {}
    old = 10_000.0
    os.utime(leftover, (old, old))
    VoiceStore(data_dir)
    assert not leftover.exists()


def test_a_folder_added_by_hand_gets_the_same_check(
    store: VoiceStore, registry: VoiceRegistry, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="wyoming_gsv.voices.registry")
    low_rate = encode(speechlike(5.0, 8000), 8000, "WAV")
    with pytest.raises(StoreError) as page:
        store.create(_draft("page", clip=low_rate))
    by_hand = data_dir / "voices" / "byhand"
    by_hand.mkdir(parents=True)
    (by_hand / "ref.wav").write_bytes(low_rate)
    (by_hand / "ref.txt").write_text(WORDS)
    registry.scan()
    assert page.value.message in registry.problems()["byhand"]  # refused with the reason the page shows

    noisy = data_dir / "voices" / "noisy"
    noisy.mkdir()
    (noisy / "ref.wav").write_bytes(encode(speechlike(5.0, noise_dbfs=-30.0), RATE, "WAV"))
    (noisy / "ref.txt").write_text(WORDS)
    registry.scan()
    registry.scan()
    verdicts = [r.getMessage() for r in caplog.records if "'noisy' reference check" in r.getMessage()]
    assert len(verdicts) == 1 and "usable" in verdicts[0] and "background noise" in verdicts[0]


def test_deleting_a_symlinked_voice_removes_the_link_not_its_target(
    store: VoiceStore, registry: VoiceRegistry, data_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "share" / "anna"
    elsewhere.mkdir(parents=True)
    (elsewhere / "ref.wav").write_bytes(_clip(fmt="WAV"))
    (elsewhere / "ref.txt").write_text(WORDS)
    (data_dir / "voices").mkdir()
    (data_dir / "voices" / "linked").symlink_to(elsewhere)
    assert registry.get("linked") is not None
    store.delete("linked")
    assert registry.get("linked") is None and not os.listdir(data_dir / "voices")
    assert sorted(p.name for p in elsewhere.iterdir()) == ["ref.txt", "ref.wav"]


def test_extra_clips_are_checked_and_counted(store: VoiceStore, registry: VoiceRegistry) -> None:
    store.create(_draft(aux_clips=(_clip(seed=1), _clip(fmt="OGG", seed=2))))
    assert [ref.path.name for ref in registry.get("anna").aux_references] == ["aux1.wav", "aux2.wav"]
    with pytest.raises(StoreError, match="at most") as too_many:
        store.create(_draft("bob", aux_clips=tuple(_clip(seed=n) for n in range(9))))
    assert too_many.value.field == "aux_clips"
    with pytest.raises(StoreError, match="2.00 s long") as short:
        store.create(_draft("bob", aux_clips=(_clip(2.0),)))
    assert short.value.field == "aux_clips"
