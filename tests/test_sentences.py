"""Incremental sentence splitter for streamed text."""

from __future__ import annotations

import random
import re

import pytest

from wyoming_gsv.text.sentences import SentenceSplitter, split_sentences

MIXED = (
    "Good evening. Everything is fine, e.g. the lights are on. Dr. Smith arrives at 7:30 and it "
    "costs $3.5 million! Is that so? Mr. and Mrs. Brown live in the U.S. now.\n"
    "你好。今天天气很好！气温是23.5度，对吧？ねえ、知ってる？最近、僕は「天文学」を勉強してるんだ。"
    'She said "it works." Then she left... Really?! 1. First step\n2. Second step\n'
    "오늘 날씨가 좋네요. 산책하러 갈까요?"
)


def _fragments(text: str, rng: random.Random) -> list[str]:
    pieces, start = [], 0
    while start < len(text):
        size = rng.choice([1, 1, 2, 3, 5, 8, 13])
        pieces.append(text[start : start + size])
        start += size
    return pieces


def _stream(pieces: list[str], max_chars: int = 200) -> list[str]:
    splitter = SentenceSplitter(max_chars)
    out = []
    for piece in pieces:
        out += splitter.feed(piece)
    return out + splitter.flush()


def test_whole_text_sentences() -> None:
    assert split_sentences(MIXED) == [
        "Good evening.",
        "Everything is fine, e.g. the lights are on.",
        "Dr. Smith arrives at 7:30 and it costs $3.5 million!",
        "Is that so?",
        "Mr. and Mrs. Brown live in the U.S. now.",
        "你好。",
        "今天天气很好！",
        "气温是23.5度，对吧？",
        "ねえ、知ってる？",
        "最近、僕は「天文学」を勉強してるんだ。",
        'She said "it works."',
        "Then she left...",
        "Really?!",
        "1. First step",
        "2. Second step",
        "오늘 날씨가 좋네요.",
        "산책하러 갈까요?",
    ]


@pytest.mark.parametrize("seed", range(40))
def test_any_fragmentation_gives_the_same_sentences(seed: int) -> None:
    rng = random.Random(seed)
    max_chars = rng.choice([25, 40, 200])
    assert _stream(_fragments(MIXED, rng), max_chars) == split_sentences(MIXED, max_chars)


_ATOMS = ["Dr", ". ", "3.5", "e.g.", " ", "word", "。", "」", "「", "好", "!", "?", "\n", ",", "7:30", "…", "'", "1. ", "Mr. X"]


@pytest.mark.parametrize("seed", range(60))
def test_random_texts_any_fragmentation(seed: int) -> None:
    rng = random.Random(1000 + seed)
    text = "".join(rng.choice(_ATOMS) for _ in range(rng.randint(1, 80)))
    max_chars = rng.choice([5, 12, 30, 200])
    whole = split_sentences(text, max_chars)
    assert _stream(_fragments(text, rng), max_chars) == whole
    assert all(len(s) <= max_chars for s in whole)
    # sentences appear in order and only whitespace or punctuation-only pieces are dropped
    compact = re.sub(r"\s", "", text)
    position = 0
    for sentence in whole:
        found = compact.find(re.sub(r"\s", "", sentence), position)
        assert found >= 0, sentence
        assert not re.search(r"\w", compact[position:found])
        position = found + len(re.sub(r"\s", "", sentence))
    assert not re.search(r"\w", compact[position:])


def test_character_by_character_equals_whole() -> None:
    assert _stream(list(MIXED)) == split_sentences(MIXED)


def test_emits_as_soon_as_complete() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("Good evening") == []
    assert splitter.feed(". Ever") == ["Good evening."]
    assert splitter.feed("y evening we") == []
    assert splitter.feed(" check the doors!") == []  # the "!" is decided by what follows
    assert splitter.feed(" Ok") == ["Every evening we check the doors!"]
    assert splitter.flush() == ["Ok"]
    assert splitter.flush() == []


def test_cjk_stop_waits_only_for_a_closing_quote() -> None:
    splitter = SentenceSplitter()
    assert splitter.feed("他说：「好。") == []
    assert splitter.feed("」然后") == ["他说：「好。」"]
    assert splitter.feed("走了。我") == ["然后走了。"]


@pytest.mark.parametrize(
    "text",
    [
        "It is 3.5 degrees and the time is 7:30 now.",
        "Use a tool, e.g. a hammer, i.e. something heavy.",
        "Dr. Who met Prof. X and St. Peter at No. 5.",
        "J. R. R. Tolkien wrote it.",
        "The price is 1,000.50 dollars.",
    ],
)
def test_never_splits_inside(text: str) -> None:
    assert split_sentences(text) == [text]


def test_long_sentence_is_cut_at_comma_then_space() -> None:
    text = "word " * 30 + "and then, " + "more words " * 30 + "end."
    sentences = split_sentences(text, max_chars=80)
    assert all(len(s) <= 80 for s in sentences)
    assert " ".join(sentences).split() == text.split()

    zh = "今天我们去公园散步，" * 20 + "然后回家。"
    sentences = split_sentences(zh, max_chars=50)
    assert all(len(s) <= 50 for s in sentences)
    assert all(s.endswith(("，", "。")) for s in sentences)
    assert "".join(sentences) == zh


def test_unbroken_text_is_hard_cut() -> None:
    text = "啊" * 130
    assert split_sentences(text, max_chars=50) == ["啊" * 50, "啊" * 50, "啊" * 30]


def test_numbers_with_comma_and_colon_are_not_soft_cuts() -> None:
    text = "x" * 30 + " 1,000 at 7:30 " + "y" * 30
    for sentence in split_sentences(text, max_chars=40):
        assert sentence not in ("1,", "7:")
    assert "".join(split_sentences(text, max_chars=40)).replace(" ", "") == text.replace(" ", "")


def test_punctuation_only_pieces_are_dropped() -> None:
    assert split_sentences("... !!! 。。。") == []
    assert split_sentences("Hi. ...\n\n   Bye.") == ["Hi.", "Bye."]


def test_invalid_limit() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        SentenceSplitter(max_chars=1)
