"""English frontend: parity with the official v2 goldens, the neural OOV model against g2p_en,
the dictionary data, and clear failures (missing NLTK data, odd input)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from text_golden import iter_segments

from wyoming_gsv.text import english
from wyoming_gsv.text.english import EnglishG2P, MissingNltkDataError
from wyoming_gsv.text.symbols import cleaned_text_to_sequence

# clean_text (frontend.py) prefixes English segments shorter than this with a "," phone.
MIN_ENGLISH_PHONES = 4


@pytest.fixture(scope="module")
def en(text_v2: Path) -> EnglishG2P:
    # text_v2: the NLTK data (tagger) comes from ../shared like the goldens, so skip together.
    return EnglishG2P()


def _clean_text_phones(en: EnglishG2P, norm_text: str) -> list[str]:
    phones, word2ph = en.g2p(norm_text)
    assert word2ph is None
    return [","] + phones if len(phones) < MIN_ENGLISH_PHONES else phones


def test_every_golden_en_segment_matches(text_v2: Path, en: EnglishG2P) -> None:
    """en.jsonl and the English segments of mixed.jsonl: norm_text, phones and ids."""
    segments = iter_segments(text_v2, "en")
    assert len(segments) > 100
    mismatches = []
    for seg in segments:
        norm = en.normalize(seg["text"])
        phones = _clean_text_phones(en, seg["norm_text"])
        if norm != seg["norm_text"] or phones != seg["phones"] or cleaned_text_to_sequence(phones) != seg["phone_ids"]:
            mismatches.append((seg["record_id"], seg["text"], norm, " ".join(phones), " ".join(seg["phones"])))
    rate = 1 - len(mismatches) / len(segments)
    print(f"en segments: {len(segments) - len(mismatches)}/{len(segments)} exact ({rate:.1%})")
    assert not mismatches, "\n".join(map(repr, mismatches))


def test_neural_model_matches_g2p_en(monkeypatch: pytest.MonkeyPatch, en: EnglishG2P) -> None:
    """Our numpy port of g2p_en's GRU predicts exactly what g2p_en itself predicts."""
    import nltk

    def no_download(*args: object, **kwargs: object) -> bool:
        raise AssertionError("g2p_en tried to download NLTK data")

    monkeypatch.setattr(nltk, "download", no_download)
    from g2p_en import G2p

    reference = G2p()
    resources = en._loaded()
    by_frequency = sorted(resources.compounds.segmenter.unigrams.items(), key=lambda kv: -kv[1])
    frequent_oov = [word for word, _ in by_frequency if word not in resources.words][:140]
    rng = random.Random(1234)
    letters = "abcdefghijklmnopqrstuvwxyz'-"
    made_up = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 16))) for _ in range(60)]
    differing = [
        (word, reference.predict(word), resources.neural(word))
        for word in frequent_oov + made_up
        if reference.predict(word) != resources.neural(word)
    ]
    assert not differing


def test_dictionary_data() -> None:
    words = english.load_engdict()
    assert len(words) > 120_000
    assert all(letter in words for letter in "abcdefghijklmnopqrstuvwxyz")  # acronyms are spelled with these
    assert all(word not in words for word in english.DROPPED_WORDS)
    assert words["chatgpt"] == english.HOT_WORDS["chatgpt"]
    assert not [w for w in words if "(" in w or w != w.lower()]
    names = english.load_names()
    assert len(names) > 10_000


def test_unknown_short_words_are_spelled_and_possessives_follow_the_stem(en: EnglishG2P) -> None:
    words = en._loaded().words
    # <= 3 letters and not a word: letter names ("a" is read EY1)
    assert en.word_phones("xqz") == words["x"] + words["q"] + words["z"]
    assert en.word_phones("qxa") == words["q"] + words["x"] + ["EY1"]
    # "'s" of an unknown word: S after voiceless consonants, AH0 Z after sibilants, Z otherwise.
    endings = dict.fromkeys(("P", "T", "K", "F", "TH", "HH"), ["S"])
    endings.update(dict.fromkeys(("S", "Z", "SH", "ZH", "CH", "JH"), ["AH0", "Z"]))
    for stem_word in ("zorblaxian", "blorft", "glorbash"):
        assert stem_word not in words
        stem = en.word_phones(stem_word)
        assert en.word_phones(stem_word + "'s") == stem + endings.get(stem[-1], ["Z"])
    # A capitalised "A" alone is the letter, a lower-case "a" the article.
    assert en.g2p("A")[0] == ["EY1"]
    assert en.g2p("a")[0] == words["a"]


def test_homographs_follow_the_part_of_speech(en: EnglishG2P) -> None:
    homographs = en._loaded().homographs
    present, past, _ = homographs["read"]
    start = len(en.g2p("I will")[0])
    assert en.g2p("I will read it tomorrow.")[0][start : start + 3] == present
    start = len(en.g2p("Yesterday I")[0])
    assert en.g2p("Yesterday I read it.")[0][start : start + 3] == past


def test_apostrophe_becomes_the_dash_symbol_and_unknown_symbols_drop(en: EnglishG2P) -> None:
    phones, _ = en.g2p(en.normalize("The Smiths' car"))
    assert "-" in phones and "'" not in phones


@pytest.mark.parametrize("text", ["$,5", "9" * 45, "9" * 45 + "th", "1/" + "9" * 45, "", "   ", "!!!", "€@#%&*"])
def test_odd_input_never_crashes(en: EnglishG2P, text: str) -> None:
    norm = en.normalize(text)
    phones, _ = en.g2p(norm)
    assert all(isinstance(p, str) and p for p in phones)


def test_missing_nltk_data_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    assert english.missing_nltk_packages() == ["averaged_perceptron_tagger_eng"]
    with pytest.raises(MissingNltkDataError, match="wyoming-gsv download") as info:
        EnglishG2P().g2p("hello")
    assert info.value.packages == ["averaged_perceptron_tagger_eng"]
    # Normalization needs no NLTK data.
    assert EnglishG2P().normalize("It is 5 km.") == "It is five km."
