"""Phone symbol tables of GPT-SoVITS (v1: 322 symbols, v2 and later: 732) and phone -> id mapping.

The tables are rebuilt the way upstream ``text/symbols.py`` and ``text/symbols2.py`` build them:
the v1 core (pad, pinyin initials, toned finals, Japanese, punctuation, ARPAbet) is sorted as a set;
v2 appends the Japanese pitch marks, the sorted Korean jamo and the sorted Cantonese ("Y"-prefixed
Jyutping) symbols. Ids are positions in these lists, so the order is part of the model contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from types import MappingProxyType

PAD = "_"
UNK = "UNK"
PUNCTUATION = ("!", "?", "…", ",", ".", "-")
SILENCE_SYMBOLS = ("SP", "SP2", "SP3", UNK)
# Full-width and CJK marks -> PUNCTUATION: the head that upstream's per-language ``rep_map`` tables
# (zh, yue, ja, ko) share; each frontend appends its own marks after these, in this order.
CJK_MARKS = MappingProxyType(
    {"：": ",", "；": ",", "，": ",", "。": ".", "！": "!", "？": "?", "\n": ".", "·": ",", "、": ","}
)

# Pinyin initials ("AA"/"EE"/"OO" stand in for zero initials before a/e/o).
_ZH_INITIALS = (
    "AA EE OO b c ch d f g h j k l m n p q r s sh t w x y z zh"
).split()
# Pinyin finals; each one appears with tones 1..5 (5 = neutral).
_ZH_FINALS = (
    "E En a ai an ang ao e ei en eng er i i0 ia ian iang iao ie in ing iong ir iu "
    "o ong ou u ua uai uan uang ui un uo v van ve vn"
).split()
_JA_PHONES = (
    "I N U a b by ch cl d dy e f g gy h hy i j k ky m my n ny o p py r ry s sh t ts u v w y z"
).split()
_ARPABET = (
    "AA0 AA1 AA2 AE0 AE1 AE2 AH0 AH1 AH2 AO0 AO1 AO2 AW0 AW1 AW2 AY0 AY1 AY2 B CH D DH "
    "EH0 EH1 EH2 ER ER0 ER1 ER2 EY0 EY1 EY2 F G HH IH IH0 IH1 IH2 IY0 IY1 IY2 JH K L M N NG "
    "OW0 OW1 OW2 OY0 OY1 OY2 P R S SH T TH UH0 UH1 UH2 UW0 UW1 UW2 V W Y Z ZH"
).split()
# Rising / falling pitch marks of the Japanese v2 frontend.
_JA_PITCH_MARKS = ("[", "]")
# "空" is a word space, "停" a pause.
_KO_JAMO = "ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋㅌㅍㅎㄲㄸㅃㅆㅉㅏㅓㅗㅜㅡㅣㅐㅔ空停"

# Cantonese: Jyutping units prefixed with "Y", grouped by the tones they occur with
# ("" = without a tone digit).
_YUE_UNITS_BY_TONES = {
    ("",): "b c d f gw h j kw l ng s w z",
    ("1", "2", "3", "4", "5", "6"): (
        "aai aak aam aan aang aap aat aau am an ang ap at ei ek eng eoi eon eot i ik im in ing ip it iu "
        "oe oek oeng ong ot u ui un ung ut yu yun yut"
    ),
    ("", "1", "2", "3", "4", "5", "6"): "a aa ai ak au e g k m n o oi ok on ou p t uk",
}


def _yue_symbols() -> list[str]:
    units = []
    for tones, names in _YUE_UNITS_BY_TONES.items():
        units.extend(f"Y{name}{tone}" for name in names.split() for tone in tones)
    return units


def _v1_core() -> list[str]:
    toned_finals = [f"{final}{tone}" for tone in range(1, 6) for final in _ZH_FINALS]
    core = [PAD, *_ZH_INITIALS, *toned_finals, *_JA_PHONES, *PUNCTUATION, *SILENCE_SYMBOLS, *_ARPABET]
    return sorted(set(core))


@cache
def symbols(version: str = "v2") -> tuple[str, ...]:
    """The symbol table of a model version, in id order ("v1" or any later version)."""
    table = _v1_core()
    if version != "v1":
        table += [*_JA_PITCH_MARKS, *sorted(_KO_JAMO), *sorted(_yue_symbols())]
    return tuple(table)


@cache
def symbol_to_id(version: str = "v2") -> Mapping[str, int]:
    """Symbol -> id of a version's table (read-only: one table is shared by every caller)."""
    return MappingProxyType({symbol: index for index, symbol in enumerate(symbols(version))})


def cleaned_text_to_sequence(phones: list[str], version: str = "v2") -> list[int]:
    """Phone symbols -> ids of the given version's table (upstream ``cleaned_text_to_sequence``).

    Raises ``ValueError`` naming the symbol when a phone is not in the table; ``clean_text`` maps
    unknown phones to ``UNK`` first, so this only fails on phones that skipped cleaning.
    """
    table = symbol_to_id(version)
    try:
        return [table[phone] for phone in phones]
    except KeyError as exc:
        raise ValueError(f"phone {exc.args[0]!r} is not a {version} symbol") from None
