"""Mandarin Chinese frontend: normalization and grapheme-to-phoneme, as the official GPT-SoVITS v2
``text/chinese2.py`` does it with g2pW off (pypinyin per jieba word, tone sandhi, erhua).

``ChineseG2P().normalize("今天3:45开会。")`` -> ``"今天三点四十五分开会."``;
``ChineseG2P().g2p("你好.")`` -> ``(["n", "i2", "h", "ao3", "."], [2, 2, 1])``.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import Any

from pypinyin import Style, lazy_pinyin

from .segmentation import replace_consecutive_punctuation
from .symbols import CJK_MARKS, PUNCTUATION
from .tone_sandhi import ToneSandhi
from .zh_normalization import TextNormalizer
from .zh_pinyin import build_pinyin_phones

# Chinese punctuation -> the symbol-set punctuation (upstream rep_map).
_PUNCTUATION_MAP = {
    **CJK_MARKS,
    "...": "…",
    "$": ".",
    "/": ",",
    "—": "-",
    "~": "…",
    "～": "…",
}
_PUNCTUATION_CLASS = "".join(re.escape(p) for p in PUNCTUATION)
_RE_PUNCTUATION_MAP = re.compile("|".join(re.escape(p) for p in _PUNCTUATION_MAP))
# Everything that is neither a common hanzi nor a kept punctuation mark is dropped.
_RE_NOT_SPOKEN = re.compile(rf"[^\u4e00-\u9fa5{_PUNCTUATION_CLASS}]+")
_RE_SENTENCE_BREAK = re.compile(rf"(?<=[{_PUNCTUATION_CLASS}])\s*")
_RE_LATIN = re.compile("[a-zA-Z]+")

# Erhua: 儿 after these words is always merged / never merged into the previous syllable.
MUST_ERHUA = frozenset("小院儿 胡同儿 范儿 老汉儿 撒欢儿 寻老礼儿 妥妥儿 媳妇儿".split())
NOT_ERHUA = frozenset(
    """
    虐儿 为儿 护儿 瞒儿 救儿 替儿 有儿 一儿 我儿 俺儿 妻儿 拐儿 聋儿 乞儿 患儿 幼儿 孤儿 婴儿 婴幼儿 连体儿
    脑瘫儿 流浪儿 体弱儿 混血儿 蜜雪儿 舫儿 祖儿 美儿 应采儿 可儿 侄儿 孙儿 侄孙儿 女儿 男儿 红孩儿 花儿
    虫儿 马儿 鸟儿 猪儿 猫儿 狗儿 少儿
    """.split()
)
# pypinyin's finals spelled out; the phone table uses the written short forms.
_FINAL_SHORT_FORMS = {"uei": "ui", "iou": "iu", "uen": "un"}
# Syllables without an initial, as pypinyin gives them -> written pinyin.
_BARE_SYLLABLES = {"ing": "ying", "i": "yi", "in": "yin", "u": "wu"}
_BARE_FIRST_LETTER = {"v": "yu", "e": "e", "i": "y", "u": "w"}


def replace_punctuation(text: str) -> str:
    """Map Chinese punctuation to the symbol set and drop everything else that is not hanzi."""
    text = text.replace("嗯", "恩").replace("呣", "母")
    text = _RE_PUNCTUATION_MAP.sub(lambda m: _PUNCTUATION_MAP[m.group(0)], text)
    return _RE_NOT_SPOKEN.sub("", text)


def merge_erhua(initials: list[str], finals: list[str], word: str, pos: str) -> tuple[list[str], list[str]]:
    """Read a word-final 儿 with the tone of the syllable before it (这儿 -> er4), except in the
    listed words and for adjectives, abbreviations and person names."""
    if finals and word[len(finals) - 1] == "儿" and finals[-1] == "er1":
        finals[-1] = "er2"
    if word not in MUST_ERHUA and (word in NOT_ERHUA or pos in {"a", "j", "nr"}):
        return initials, finals
    if len(finals) != len(word):  # "……" and other non-hanzi words
        return initials, finals
    last = len(finals) - 1
    if (
        last >= 1
        and word[last] == "儿"
        and finals[last] in {"er2", "er5"}
        and word[-2:] not in NOT_ERHUA
    ):
        finals = finals[:last] + ["er" + finals[last - 1][-1]]
    return initials, finals


class ChineseG2P:
    """Owns the Chinese frontend's heavy state: the jieba dictionary and POS tagger (loaded on
    first use, ~1 s) and the normalizer's character table.  Thread-safe."""

    def __init__(self) -> None:
        self._normalizer = TextNormalizer()
        self._pinyin_phones = build_pinyin_phones()
        self._lock = threading.Lock()
        self._tagger: Any = None
        self._sandhi: ToneSandhi | None = None
        # pypinyin is the slow part and sees the same words again and again.
        self._cached_pinyin = functools.lru_cache(maxsize=1 << 16)(_word_pinyin)

    def normalize(self, text: str) -> str:
        """Upstream ``chinese2.text_normalize``: verbalize, map punctuation, drop the rest."""
        spoken = "".join(replace_punctuation(s) for s in self._normalizer.normalize(text))
        return replace_consecutive_punctuation(spoken)

    def g2p(self, norm_text: str) -> tuple[list[str], list[int]]:
        """Phones and word2ph (phones per character of ``norm_text``: 2 per hanzi, 1 per mark)."""
        phones: list[str] = []
        word2ph: list[int] = []
        for sentence in _RE_SENTENCE_BREAK.split(norm_text):
            if sentence.strip():
                for initial, final in self._syllables(sentence):
                    syllable = self._syllable_phones(initial, final, sentence)
                    phones += syllable
                    word2ph.append(len(syllable))
        return phones, word2ph

    # --- internals ---------------------------------------------------------------------------

    def _load(self) -> tuple[Any, ToneSandhi]:
        if self._sandhi is None:
            with self._lock:
                if self._sandhi is None:
                    import jieba
                    import jieba.posseg

                    # jieba logs its dictionary load at DEBUG through its own stream handler,
                    # which also propagates to ours: say it once, only when something is wrong.
                    jieba.setLogLevel(logging.WARNING)
                    tokenizer = jieba.Tokenizer()
                    tokenizer.initialize()  # the ~1 s dictionary load, here rather than mid-request
                    self._tagger = jieba.posseg.POSTokenizer(tokenizer)
                    self._sandhi = ToneSandhi(tokenizer.cut_for_search, self._finals)
        return self._tagger, self._sandhi

    def _syllables(self, sentence: str) -> list[tuple[str, str]]:
        """(initial, toned final) per character after sandhi and erhua; punctuation gives (p, p)."""
        tagger, sandhi = self._load()
        words = [(pair.word, pair.flag) for pair in tagger.lcut(_RE_LATIN.sub("", sentence))]
        initials: list[str] = []
        finals: list[str] = []
        for word, pos in sandhi.pre_merge_for_modify(words):
            if pos == "eng":
                continue
            cached_initials, cached_finals = self._cached_pinyin(word)
            word_initials = list(cached_initials)
            word_finals = sandhi.modified_tone(word, pos, list(cached_finals))
            word_initials, word_finals = merge_erhua(word_initials, word_finals, word, pos)
            initials += word_initials
            finals += word_finals
        return list(zip(initials, finals))

    def _finals(self, word: str) -> list[str]:
        return list(self._cached_pinyin(word)[1])

    def _syllable_phones(self, initial: str, final: str, sentence: str) -> list[str]:
        if initial == final:  # punctuation passes through pypinyin unchanged
            if initial not in PUNCTUATION:
                raise ValueError(f"Chinese g2p: unexpected symbol {initial!r} in {sentence!r}")
            return [initial]
        tone = final[-1:]
        if tone not in ("1", "2", "3", "4", "5"):
            raise ValueError(f"Chinese g2p: no tone in pinyin {initial + final!r} of {sentence!r}")
        final = final[:-1]
        if initial:
            pinyin = initial + _FINAL_SHORT_FORMS.get(final, final)
        elif final in _BARE_SYLLABLES:
            pinyin = _BARE_SYLLABLES[final]
        elif final[:1] in _BARE_FIRST_LETTER:
            pinyin = _BARE_FIRST_LETTER[final[0]] + final[1:]
        else:
            pinyin = final
        phone_pair = self._pinyin_phones.get(pinyin)
        if phone_pair is None:
            raise ValueError(f"Chinese g2p: pinyin {pinyin!r} has no phones (in {sentence!r})")
        return [phone_pair[0], phone_pair[1] + tone]


def _word_pinyin(word: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """pypinyin initials and toned finals of a word (neutral tone as 5)."""
    initials = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.INITIALS)
    finals = lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)
    return tuple(initials), tuple(finals)
