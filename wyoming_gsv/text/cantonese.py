"""Cantonese frontend of GPT-SoVITS v2 (upstream ``text/cantonese.py``).

Normalization reuses the Chinese text normalizer (numbers, dates, units...) and then keeps only
CJK ideographs and the shared punctuation. ToJyutping reads each character; every syllable is
split into an "initial" and a toned "final", both prefixed with ``Y`` so they never collide with
the Mandarin symbols. word2ph is 2 per character and 1 per punctuation mark.
"""

from __future__ import annotations

import re
from typing import Callable

from .extras import import_extra
from .symbols import CJK_MARKS, PUNCTUATION

# A sentence normalizer: text -> its normalized sentences (upstream ``TextNormalizer.normalize``).
SentenceNormalizer = Callable[[str], list[str]]

_LANGUAGE = "Cantonese"
_EXTRA = "yue"

# Upstream's split of a Jyutping syllable, tried in this order; the first prefix that matches is
# the "initial" even where it eats part of the rime ("aai" -> "aa" + "i"). Kept as is: the
# released v2 models were trained on exactly these units.
_INITIALS = (
    "aa aai aak aap aat aau ai au ap at ak a p b e ts t dz d kw k gw g f h l m ng n s y w c z j "
    "ong on ou oi ok o uk ung sp spl spn sil"
).split()

_MARK_TO_PUNCTUATION = {
    **CJK_MARKS,
    "...": "…",
    "$": ".",
    "“": "'",
    "”": "'",
    '"': "'",
    "‘": "'",
    "’": "'",
    "（": "'",
    "）": "'",
    "(": "'",
    ")": "'",
    "《": "'",
    "》": "'",
    "【": "'",
    "】": "'",
    "[": "'",
    "]": "'",
    "—": "-",
    "～": "-",
    "~": "-",
    "「": "'",
    "」": "'",
}
_MARKS = re.compile("|".join(re.escape(mark) for mark in _MARK_TO_PUNCTUATION))
# Everything but CJK ideographs and the shared punctuation is dropped.
_NOT_KEPT = re.compile("[^\u4e00-\u9fa5" + "".join(PUNCTUATION) + "]+")
_PUNCTUATION = frozenset(PUNCTUATION)
_JYUTPING = re.compile(r"^([a-z]+[1-6]+[ ]?)+$")


def replace_punctuation(text: str) -> str:
    """Map marks to the shared punctuation, then drop every character that is not kept."""
    text = _MARKS.sub(lambda match: _MARK_TO_PUNCTUATION[match.group()], text)
    return _NOT_KEPT.sub("", text)


def syllable_phones(syllable: str) -> list[str]:
    """``"gam1"`` -> ``["Yg", "Yam1"]``: the Y-prefixed initial and toned final."""
    if syllable[-1].isdigit():
        tone, toneless = syllable[-1], syllable[:-1]
    else:
        tone, toneless = "", syllable
    for initial in _INITIALS:
        if toneless.startswith(initial):
            if toneless.startswith("nga"):
                initial = toneless[:2]
            # A syllable that is all "initial" (m, ng, aa...) repeats its last letter as final.
            final = toneless[len(initial) :] or initial[-1]
            # Tone 0 counts as no tone (upstream drops it).
            toned_final = final + tone if tone not in ("", "0") else final
            return [_y(initial), _y(toned_final)]
    return []


def _y(unit: str) -> str:
    return unit if unit in _PUNCTUATION else "Y" + unit


def _default_sentence_normalizer() -> SentenceNormalizer:
    from .zh_normalization import TextNormalizer

    return TextNormalizer().normalize


class CantoneseG2P:
    """Cantonese normalization and g2p.

    ``sentence_normalizer`` is the Chinese normalizer to reuse (text -> normalized sentences);
    by default the one of ``text.zh_normalization``, created on first use.
    """

    def __init__(self, sentence_normalizer: SentenceNormalizer | None = None) -> None:
        self._sentence_normalizer = sentence_normalizer
        self._jyutping: Callable[[str], list[tuple[str, str | None]]] | None = None

    def normalize(self, text: str) -> str:
        if self._sentence_normalizer is None:
            self._sentence_normalizer = _default_sentence_normalizer()
        return "".join(replace_punctuation(sentence) for sentence in self._sentence_normalizer(text))

    def g2p(self, norm_text: str) -> tuple[list[str], list[int]]:
        """Phones and word2ph (phones per character of ``norm_text``)."""
        phones: list[str] = []
        word2ph: list[int] = []
        for char, jyutping in self._read(norm_text):
            if char in _PUNCTUATION:
                phones.append(char)
                word2ph.append(1)
                continue
            if jyutping is None or not _JYUTPING.match(jyutping):
                raise ValueError(f"no Cantonese reading (Jyutping) for {char!r} in {norm_text!r}: {jyutping!r}")
            char_phones = syllable_phones(jyutping)
            phones.extend(char_phones)
            if char_phones:
                word2ph.append(len(char_phones))
        return phones, word2ph

    def _read(self, text: str) -> list[tuple[str, str | None]]:
        if self._jyutping is None:
            self._jyutping = import_extra("ToJyutping", language=_LANGUAGE, extra=_EXTRA).get_jyutping_list
        return self._jyutping(text)
