"""Japanese frontend of GPT-SoVITS v2 (upstream ``text/japanese.py``).

Open JTalk (plain ``pyopenjtalk`` 0.4.x) turns each run of Japanese characters into full-context
labels; from those we read the phones plus the prosody marks of the espnet/r9y9 scheme:
``[`` pitch rise, ``]`` pitch fall, ``#`` accent-phrase boundary. ``#`` is not a v2 symbol, so
``clean_text`` turns it into ``UNK`` (that is what the released models were trained on).
Punctuation between the runs is kept, mapped to the shared punctuation symbols.

The Open JTalk dictionary must already be on disk: it is never downloaded here.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from .extras import import_extra
from .segmentation import replace_consecutive_punctuation
from .symbols import CJK_MARKS

DICT_DIR_ENV = "OPEN_JTALK_DICT_DIR"

# Characters Open JTalk reads: Latin letters and digits, 々, kana, CJK ideographs, full-width
# digits 1-9 (not 0) and letters, half-width katakana. Everything else separates the runs.
_JA_CHAR_CLASS = r"A-Za-z\d\u3005\u3040-\u30ff\u4e00-\u9fff\uff11-\uff19\uff21-\uff3a\uff41-\uff5a\uff66-\uff9d"
_JA_CHARACTER = re.compile(f"[{_JA_CHAR_CLASS}]")
_NON_JA_CHARACTER = re.compile(f"[^{_JA_CHAR_CLASS}]")

_SYMBOL_WORDS = (("％", "パーセント"),)

_MARK_TO_PHONE = {**CJK_MARKS, "...": "…"}

# Phones after which an accent-phrase boundary may be marked (vowels, moraic nasal, geminate).
_MORA_FINAL_PHONES = frozenset({"a", "i", "u", "e", "o", "A", "I", "U", "E", "O", "N", "cl"})
_UNVOICED_VOWELS = frozenset("AEIOU")

# Fields of an HTS full-context label (see the Open JTalk label format).
_CURRENT_PHONE = re.compile(r"-(.*?)\+")
_ACCENT_DISTANCE = re.compile(r"/A:([0-9\-]+)\+")  # a1: mora position relative to the accent nucleus
_MORA_FORWARD = re.compile(r"\+(\d+)\+")  # a2: mora position in the accent phrase, from the start
_MORA_BACKWARD = re.compile(r"\+(\d+)/")  # a3: the same, from the end
_PHRASE_MORAS = re.compile(r"/F:(\d+)_")  # f1: moras in the accent phrase
_IS_QUESTION = re.compile(r"!(\d+)_")  # e3: 1 when the phrase is interrogative

_MISSING = -50  # the value upstream uses for a field marked "xx"


def _label_number(pattern: re.Pattern[str], label: str) -> int:
    match = pattern.search(label)
    return int(match.group(1)) if match else _MISSING


def prosody_phones(labels: list[str]) -> list[str]:
    """Phones with ``^``/``$``/``?`` ends, ``_`` pauses and ``[``/``]``/``#`` prosody marks.

    Same reading of the labels as espnet's ``pyopenjtalk_g2p_prosody`` with unvoiced vowels
    folded into voiced ones, which is what GPT-SoVITS uses.
    """
    phones: list[str] = []
    last = len(labels) - 1
    for index, label in enumerate(labels):
        phone = _CURRENT_PHONE.search(label).group(1)
        if phone in _UNVOICED_VOWELS:
            phone = phone.lower()

        if phone == "sil":
            if index == 0:
                phones.append("^")
            elif index == last:
                question = _label_number(_IS_QUESTION, label)
                if question == 0:
                    phones.append("$")
                elif question == 1:
                    phones.append("?")
            continue
        if phone == "pau":
            phones.append("_")
            continue
        phones.append(phone)

        accent_distance = _label_number(_ACCENT_DISTANCE, label)
        mora_forward = _label_number(_MORA_FORWARD, label)
        mora_backward = _label_number(_MORA_BACKWARD, label)
        phrase_moras = _label_number(_PHRASE_MORAS, label)
        next_mora_forward = _label_number(_MORA_FORWARD, labels[index + 1])

        if mora_backward == 1 and next_mora_forward == 1 and phone in _MORA_FINAL_PHONES:
            phones.append("#")
        elif accent_distance == 0 and next_mora_forward == mora_forward + 1 and mora_forward != phrase_moras:
            phones.append("]")
        elif mora_forward == 1 and next_mora_forward == 2:
            phones.append("[")
    return phones


def find_dictionary(dict_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Open JTalk dictionary folder: ``dict_dir``, else ``$OPEN_JTALK_DICT_DIR``, else the one
    pyopenjtalk keeps in its package. Raises ``FileNotFoundError`` saying how to get one."""
    candidates: list[tuple[str, Path]] = []
    if dict_dir is not None:
        candidates.append(("dict_dir", Path(dict_dir)))
    elif os.environ.get(DICT_DIR_ENV):
        candidates.append((DICT_DIR_ENV, Path(os.environ[DICT_DIR_ENV])))
    else:
        pyopenjtalk = import_extra("pyopenjtalk", language="Japanese", extra="ja")
        candidates.append(("pyopenjtalk's package folder", Path(os.fsdecode(pyopenjtalk.OPEN_JTALK_DICT_DIR))))

    source, path = candidates[0]
    if (path / "sys.dic").is_file():
        return path
    raise FileNotFoundError(
        f"Open JTalk dictionary not found at {path} (from {source}): the folder must hold sys.dic. "
        f"Set {DICT_DIR_ENV} to a dictionary folder (Debian/Ubuntu: apt install open-jtalk-mecab-naist-jdic, "
        "then /var/lib/mecab/dic/open-jtalk/naist-jdic), or, where a network exists and the variable is unset, "
        "let pyopenjtalk fetch its own once: python -c \"import pyopenjtalk; pyopenjtalk.g2p('あ')\"."
    )


class JapaneseG2P:
    """Japanese normalization and g2p; owns one Open JTalk instance, created on first use."""

    def __init__(self, dict_dir: str | os.PathLike[str] | None = None) -> None:
        self._dict_dir = dict_dir
        self._jtalk: Any = None
        self._load_lock = threading.Lock()

    def _open_jtalk(self) -> Any:
        if self._jtalk is None:
            with self._load_lock:
                if self._jtalk is None:
                    import_extra("pyopenjtalk", language="Japanese", extra="ja")
                    from pyopenjtalk.openjtalk import OpenJTalk

                    dictionary = find_dictionary(self._dict_dir)
                    self._jtalk = OpenJTalk(dn_mecab=os.fsencode(dictionary))
        return self._jtalk

    def normalize(self, text: str) -> str:
        """Upstream ``text_normalize``: only collapses runs of punctuation to their first mark."""
        return replace_consecutive_punctuation(text)

    def g2p(self, norm_text: str) -> tuple[list[str], None]:
        """Phones of ``norm_text`` (no word2ph for Japanese)."""
        text = norm_text
        for symbol, word in _SYMBOL_WORDS:
            text = text.replace(symbol, word)
        # Open JTalk spells lower-case Latin letters; the lowering does not touch Japanese.
        text = text.lower()

        runs = _NON_JA_CHARACTER.split(text)
        marks = _NON_JA_CHARACTER.findall(text)
        phones: list[str] = []
        for index, run in enumerate(runs):
            if _JA_CHARACTER.match(run):
                phones.extend(self._run_phones(run))
            if index < len(marks) and marks[index] != " ":
                phones.append(marks[index])
        return [_MARK_TO_PHONE.get(phone, phone) for phone in phones], None

    def _run_phones(self, run: str) -> list[str]:
        jtalk = self._open_jtalk()
        labels = jtalk.make_label(jtalk.run_frontend(run))
        # Drop the "^" start and the "$"/"?" end marks of the run.
        return prosody_phones(labels)[1:-1]
