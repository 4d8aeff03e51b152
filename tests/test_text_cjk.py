"""Japanese, Korean and Cantonese frontends against the official v2 goldens (fixtures/text-v2).

Every ja/ko/yue segment of every sentence file is checked: normalize(text) == norm_text, and
g2p(norm_text) (after clean_text's unknown -> UNK mapping) == phones, phone ids and word2ph.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from text_golden import iter_segments
from wyoming_gsv.text import cantonese, japanese, korean
from wyoming_gsv.text.extras import MissingExtraError
from wyoming_gsv.text.symbols import UNK, cleaned_text_to_sequence, symbols


def _as_cleaned(phones: list[str]) -> list[str]:
    """What upstream ``clean_text`` does last: phones outside the v2 table become UNK."""
    table = set(symbols("v2"))
    return [phone if phone in table else UNK for phone in phones]


def _parity(segments: list[dict], frontend, check_normalize: bool = True) -> list[str]:
    """Mismatch descriptions (empty when every segment matches); prints the exact-match rate."""
    mismatches = []
    for segment in segments:
        norm_text = frontend.normalize(segment["text"]) if check_normalize else segment["norm_text"]
        phones, word2ph = frontend.g2p(segment["norm_text"])
        phones = _as_cleaned(phones)
        got = (norm_text, phones, cleaned_text_to_sequence(phones, "v2"), word2ph)
        want = (segment["norm_text"], segment["phones"], segment["phone_ids"], segment["word2ph"])
        if got != want:
            fields = [name for name, a, b in zip(("norm_text", "phones", "ids", "word2ph"), got, want) if a != b]
            mismatches.append(f"{segment['record_id']} {segment['text']!r}: {', '.join(fields)} differ: {got} != {want}")
    lang = segments[0]["lang"]
    matched = len(segments) - len(mismatches)
    print(f"\n{lang}: {matched}/{len(segments)} segments exact ({100 * matched / len(segments):.1f}%)")
    return mismatches


@pytest.fixture(scope="module")
def ja_g2p() -> japanese.JapaneseG2P:
    return japanese.JapaneseG2P()


@pytest.fixture(scope="module")
def ko_g2p() -> korean.KoreanG2P:
    return korean.KoreanG2P()


@pytest.fixture(scope="module")
def yue_g2p() -> cantonese.CantoneseG2P:
    return cantonese.CantoneseG2P()


# --- parity ------------------------------------------------------------------------------------


def test_japanese_parity(text_v2: Path, ja_g2p: japanese.JapaneseG2P) -> None:
    segments = iter_segments(text_v2, "ja")
    assert len(segments) > 40
    assert _parity(segments, ja_g2p) == []


def test_korean_parity(text_v2: Path, ko_g2p: korean.KoreanG2P) -> None:
    segments = iter_segments(text_v2, "ko")
    assert len(segments) >= 20
    assert _parity(segments, ko_g2p) == []


def test_cantonese_g2p_parity(text_v2: Path, yue_g2p: cantonese.CantoneseG2P) -> None:
    segments = iter_segments(text_v2, "yue")
    assert len(segments) > 60
    assert _parity(segments, yue_g2p, check_normalize=False) == []


def test_cantonese_normalize_parity(text_v2: Path, yue_g2p: cantonese.CantoneseG2P) -> None:
    segments = iter_segments(text_v2, "yue")
    assert _parity(segments, yue_g2p) == []


# --- behaviour ---------------------------------------------------------------------------------


def test_japanese_marks_accent_phrases_and_pitch(ja_g2p: japanese.JapaneseG2P) -> None:
    phones, word2ph = ja_g2p.g2p("今日はいい天気ですね。")
    assert word2ph is None
    assert phones[-1] == "."
    # Accent-phrase boundaries (not v2 symbols: UNK after cleaning) and pitch marks are there.
    assert "#" in phones and "UNK" not in phones
    assert {"[", "]"} & set(phones)
    assert "UNK" in _as_cleaned(phones)


def test_japanese_reads_percent_and_latin(ja_g2p: japanese.JapaneseG2P) -> None:
    percent, _ = ja_g2p.g2p("50％")
    spelled, _ = ja_g2p.g2p("50パーセント")
    assert percent == spelled
    # Upper-case Latin letters are read like lower-case ones.
    assert ja_g2p.g2p("ABCです")[0] == ja_g2p.g2p("abcです")[0]


def test_japanese_normalize_collapses_repeated_punctuation(ja_g2p: japanese.JapaneseG2P) -> None:
    assert ja_g2p.normalize("そうですか?!...") == "そうですか?"
    assert ja_g2p.normalize("いいえ。。。") == "いいえ。。。"  # full-width marks are not collapsed


def test_japanese_runs_without_phones(ja_g2p: japanese.JapaneseG2P) -> None:
    # Open JTalk makes no phones for a lone long-vowel mark; upstream then yields nothing for it.
    assert ja_g2p.g2p("ー")[0] == []
    assert ja_g2p.g2p("ー。")[0] == ["."]


def test_japanese_missing_dictionary_is_named(tmp_path: Path) -> None:
    frontend = japanese.JapaneseG2P(dict_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        frontend.g2p("こんにちは")


def test_korean_spaces_and_latin(ko_g2p: korean.KoreanG2P) -> None:
    phones, word2ph = ko_g2p.g2p("안녕 TV")
    assert word2ph is None
    assert korean.WORD_SPACE in phones
    # Latin letters are spelled in Hangul before g2pk2: "TV" -> 티브이.
    assert ko_g2p.g2p("티브이")[0] == phones[phones.index(korean.WORD_SPACE) + 1 :]
    # A text that ends on a jamo gets a final full stop.
    assert phones[-1] == "."
    # Compound vowels are split into simple ones (the v2 table has only those).
    assert set(ko_g2p.g2p("과자")[0]) <= set(symbols("v2"))


def test_korean_g2p_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    # g2pk2 prints "mecab installed" while loading; stdout may carry JSON (phonemize command).
    korean.KoreanG2P().g2p("안녕하세요")
    assert capsys.readouterr().out == ""


def test_korean_without_cmudict_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    monkeypatch.setattr(nltk, "download", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(FileNotFoundError, match="cmudict"):
        korean.KoreanG2P().g2p("안녕")


def test_cantonese_units_and_word2ph(yue_g2p: cantonese.CantoneseG2P) -> None:
    phones, word2ph = yue_g2p.g2p("今日,好")
    assert phones == ["Yg", "Yam1", "Yj", "Yat6", ",", "Yh", "You2"]
    assert word2ph == [2, 2, 1, 2]
    # Upstream's initial table splits "aai" as "aa" + "i"; "nga" keeps "ng" as initial.
    assert cantonese.syllable_phones("gaai1") == ["Yg", "Yaai1"]
    assert cantonese.syllable_phones("aai3") == ["Yaa", "Yi3"]
    assert cantonese.syllable_phones("ngaa4") == ["Yng", "Yaa4"]
    assert cantonese.syllable_phones("m4") == ["Ym", "Ym4"]


def test_cantonese_keeps_only_hanzi_and_punctuation() -> None:
    assert cantonese.replace_punctuation("佢话：「好呀！」OK～") == "佢话,好呀!-"


def test_cantonese_unknown_character_is_named(yue_g2p: cantonese.CantoneseG2P) -> None:
    with pytest.raises(ValueError, match="𠮷"):
        yue_g2p.g2p("𠮷")


@pytest.mark.parametrize(
    ("language_module", "blocked", "factory"),
    [
        (japanese, "pyopenjtalk", lambda: japanese.JapaneseG2P().g2p("テスト")),
        (korean, "mecab", lambda: korean.KoreanG2P().g2p("안녕")),
        (cantonese, "ToJyutping", lambda: cantonese.CantoneseG2P(lambda text: [text]).g2p("你好")),
    ],
)
def test_missing_extra_names_it(monkeypatch: pytest.MonkeyPatch, language_module, blocked: str, factory) -> None:
    # A module set to None in sys.modules cannot be imported, as if it were not installed.
    monkeypatch.setitem(sys.modules, blocked, None)
    with pytest.raises(MissingExtraError) as error:
        factory()
    assert "wyoming-gsv[" in str(error.value) and blocked in str(error.value)
