"""Korean frontend of GPT-SoVITS v2 (upstream ``text/korean.py``).

Latin letters are spelled in Hangul, g2pk2 (with python-mecab-ko) applies the pronunciation
rules, and the result is split into compatibility jamo, one phone per jamo; compound vowels are
split into two simple ones. A word space becomes the symbol ``空``, anything else outside the v2
table the pause symbol ``停``. Upstream has no Korean text normalization.

g2pk2 wants NLTK's ``cmudict`` at import time and would download it otherwise: we look for it
first (``$NLTK_DATA``) and never let it reach the network.
"""

from __future__ import annotations

import contextlib
import io
import re
import threading
from typing import Any, Callable

from .extras import MissingExtraError, has_module, import_extra
from .symbols import CJK_MARKS, symbols

_LANGUAGE = "Korean"
_EXTRA = "ko"

# Letter names, as upstream spells Latin letters inside Korean text.
_LETTER_NAMES = {
    "a": "에이", "b": "비", "c": "시", "d": "디", "e": "이", "f": "에프", "g": "지",
    "h": "에이치", "i": "아이", "j": "제이", "k": "케이", "l": "엘", "m": "엠", "n": "엔",
    "o": "오", "p": "피", "q": "큐", "r": "아르", "s": "에스", "t": "티", "u": "유",
    "v": "브이", "w": "더블유", "x": "엑스", "y": "와이", "z": "제트",
}  # fmt: skip
# Upstream matches the letters with re.IGNORECASE, which also catches these case-fold relatives.
_LETTER_FOLD_RELATIVES = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
_SPELL_LETTERS = str.maketrans(
    {
        **_LETTER_NAMES,
        **{letter.upper(): name for letter, name in _LETTER_NAMES.items()},
        **{char: _LETTER_NAMES[letter] for char, letter in _LETTER_FOLD_RELATIVES.items()},
    }
)

# Compound vowels -> their two simple vowels (consonant clusters stay whole, as upstream).
_SPLIT_VOWELS = str.maketrans(
    {
        "ㅘ": "ㅗㅏ", "ㅙ": "ㅗㅐ", "ㅚ": "ㅗㅣ", "ㅝ": "ㅜㅓ", "ㅞ": "ㅜㅔ", "ㅟ": "ㅜㅣ", "ㅢ": "ㅡㅣ",
        "ㅑ": "ㅣㅏ", "ㅒ": "ㅣㅐ", "ㅕ": "ㅣㅓ", "ㅖ": "ㅣㅔ", "ㅛ": "ㅣㅗ", "ㅠ": "ㅣㅜ",
    }
)  # fmt: skip

# g2pk2 leaves "을 r..." / "를 r..." with an initial ㄹ where Korean says ㄴ.
_G2PK2_RIEUL_SLIP = re.compile("([ㅇㄹ]ㅡㄹ) ㄹ")
# A text that ends on a jamo gets a final full stop.
_ENDS_ON_JAMO = re.compile(r"([\u3131-\u3163])$")

_MARK_TO_PHONE = {**CJK_MARKS, " ": "空"}
WORD_SPACE = "空"
PAUSE = "停"


def spell_latin_letters(text: str) -> str:
    return text.translate(_SPELL_LETTERS)


@contextlib.contextmanager
def _nltk_never_downloads() -> Any:
    """While importing g2pk2, make its ``nltk.download('cmudict')`` fallback a no-op."""
    import nltk

    original = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = original


def _check_cmudict() -> None:
    import nltk

    for resource in ("corpora/cmudict.zip", "corpora/cmudict"):  # zipped or unpacked
        try:
            nltk.data.find(resource)
            return
        except LookupError:
            pass
    raise FileNotFoundError(
        "the Korean text frontend (g2pk2) needs NLTK's 'cmudict' corpus, which was not found in "
        f"the NLTK data path {nltk.data.path}; set NLTK_DATA to a folder holding "
        "corpora/cmudict.zip or fetch it with `wyoming-gsv download`"
    )


def _load_g2pk2() -> Callable[[str], str]:
    for module in ("jamo", "g2pk2", "mecab"):
        # g2pk2 runs `pip install python-mecab-ko` when mecab is missing: refuse before that.
        if not has_module(module):
            raise MissingExtraError(_LANGUAGE, _EXTRA, module)
    import_extra("nltk", language=_LANGUAGE, extra=_EXTRA)
    _check_cmudict()
    with _nltk_never_downloads():
        g2pk2 = import_extra("g2pk2", language=_LANGUAGE, extra=_EXTRA)
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter):  # it prints "mecab installed"; stdout may carry JSON
        converter = g2pk2.G2p()
    if getattr(converter, "mecab", None) is None:
        raise RuntimeError(f"g2pk2 could not open python-mecab-ko: {chatter.getvalue().strip()}")
    # g2pk2 applies ~400 rule patterns given as strings, plus ~150 more, on every call: more than
    # the `re` module caches (512), so each call recompiled them all (~80% of its time).
    # Compiled once here, they give the same substitutions.
    converter.table = [(re.compile(pattern), replacement, rules) for pattern, replacement, rules in converter.table]
    return converter


class KoreanG2P:
    """Korean g2p; owns one g2pk2 converter (MeCab + cmudict), created on first use."""

    def __init__(self) -> None:
        self._converter: Callable[[str], str] | None = None
        self._lock = threading.Lock()  # MeCab taggers are not documented as thread-safe
        self._symbols = frozenset(symbols("v2"))

    def normalize(self, text: str) -> str:
        """Upstream has no Korean normalization: the text is used as is."""
        return text

    def g2p(self, norm_text: str) -> tuple[list[str], None]:
        """One phone per compatibility jamo of the pronounced text (no word2ph for Korean)."""
        jamo = import_extra("jamo", language=_LANGUAGE, extra=_EXTRA)
        with self._lock:
            if self._converter is None:
                self._converter = _load_g2pk2()
            pronounced = self._converter(spell_latin_letters(norm_text))
        letters = jamo.j2hcj(jamo.h2j(pronounced)).translate(_SPLIT_VOWELS)
        letters = _G2PK2_RIEUL_SLIP.sub(r"\1 ㄴ", letters)
        letters = _ENDS_ON_JAMO.sub(r"\1.", letters)
        return [self._phone(char) for char in letters], None

    def _phone(self, char: str) -> str:
        phone = _MARK_TO_PHONE.get(char, char)
        return phone if phone in self._symbols else PAUSE
