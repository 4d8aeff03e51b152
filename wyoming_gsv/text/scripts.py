"""Which writing systems a language mode speaks, and a request's text cut into spans by script.

GPT-SoVITS v2-family models speak zh, en, ja, ko and yue whatever the voice's language, but a
mode such as ``en`` only reads Latin letters (upstream drops the rest silently, or the whole answer
would have to be refused). A request therefore reads a span written in another supported script
in ``auto`` mode (the language segmenter decides zh/ja/ko for it), the voice's mode elsewhere, and
drops what no frontend can speak (Cyrillic or Arabic words, emoji).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

SUPPORTED_SCRIPTS = frozenset({"han", "kana", "hangul", "latin"})
# Scripts each language mode reads (digits, punctuation and symbols are read by every mode).
MODE_SCRIPTS: dict[str, frozenset[str]] = {
    "en": frozenset({"latin"}),
    "zh": frozenset({"han", "latin"}),
    "all_zh": frozenset({"han", "latin"}),
    "yue": frozenset({"han", "latin"}),
    "all_yue": frozenset({"han", "latin"}),
    "ja": frozenset({"han", "kana", "latin"}),
    "all_ja": frozenset({"han", "kana", "latin"}),
    "ko": frozenset({"hangul", "han", "latin"}),
    "all_ko": frozenset({"hangul", "han", "latin"}),
    "auto": SUPPORTED_SCRIPTS,
    "auto_yue": SUPPORTED_SCRIPTS,
}
# The mode a span in a script the voice's mode cannot read is spoken in.
OTHER_SCRIPT_MODE = "auto"

# Two or more letters in a row of an unsupported script: a word nobody can say. (A lone one is a
# symbol: Home Assistant writes "μg/m³" with a Greek mu, answers hold "π" or "Ω"; the frontends
# read or skip those.)
_UNSUPPORTED_WORD_MIN_LETTERS = 2


def char_script(char: str) -> str | None:
    """Coarse script of a letter; None for digits, punctuation, spaces and symbols."""
    if not char.isalpha():
        return None
    name = unicodedata.name(char, "")
    if name.startswith(("CJK UNIFIED", "CJK COMPATIBILITY IDEOGRAPH")):
        return "han"
    if name.startswith(("HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA")):
        return "kana"
    if name.startswith(("HANGUL", "HALFWIDTH HANGUL")):
        return "hangul"
    if "LATIN" in name:
        return "latin"
    return "other"


def _is_emoji_like(char: str) -> bool:
    """Pictographs, dingbats, arrows and the invisible characters emoji are built from (°, ℃, ™
    and the like come before U+2190 and stay)."""
    code = ord(char)
    if code in (0x200D, 0xFE0E, 0xFE0F) or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        return True  # zero-width joiner, variation selectors, skin tones, tag characters
    category = unicodedata.category(char)
    return (category in ("So", "Sk") and code >= 0x2190) or category in ("Cs", "Co")


@dataclass(frozen=True)
class SpeakableText:
    text: str  # what is left to speak
    dropped: str  # the characters taken out, in order


def drop_unspeakable(text: str) -> SpeakableText:
    """Take out emoji and words in scripts no frontend speaks (Cyrillic, Arabic, Greek words...),
    with the space before them when a mark or the end follows ("room 🎶." -> "room.": English
    normalisation would otherwise keep the space and lose the full stop)."""
    kept: list[str] = []
    dropped: list[str] = []
    index = 0
    while index < len(text):
        end = index
        if _is_emoji_like(text[index]):
            end = index + 1
        elif char_script(text[index]) == "other":
            while end < len(text) and char_script(text[end]) == "other":
                end += 1
            if end - index < _UNSUPPORTED_WORD_MIN_LETTERS:
                kept.append(text[index:end])
                index = end
                continue
        if end == index:
            kept.append(text[index])
            index += 1
            continue
        dropped.append(text[index:end])
        index = end
        if index == len(text) or not (text[index].isspace() or text[index].isalnum()):
            while kept and kept[-1] == " ":
                kept.pop()
    return SpeakableText("".join(kept), "".join(dropped))


@dataclass(frozen=True)
class ModeSpan:
    mode: str  # language mode to read this span in
    text: str


def spans_by_script(text: str, mode: str) -> list[ModeSpan]:
    """``text`` cut where it changes between what ``mode`` reads and another supported script.

    Runs of letters ``mode`` cannot read (with the spaces, digits and marks between them) become
    ``auto`` spans; everything else stays in ``mode``. "Playing 周杰伦 now" in ``en`` ->
    [en "Playing ", auto "周杰伦", en " now"].
    """
    readable = MODE_SCRIPTS.get(mode, SUPPORTED_SCRIPTS)
    foreign = "".join(
        sorted({char for char in text if char_script(char) in SUPPORTED_SCRIPTS - readable})
    )
    if not foreign:
        return [ModeSpan(mode, text)] if text else []
    letters = "[" + re.escape(foreign) + "]"
    # A foreign run: its letters and whatever neutral characters sit between two of them.
    run = re.compile(rf"{letters}(?:[^\w]*{letters}|\d*{letters})*")
    spans: list[ModeSpan] = []
    position = 0
    for match in run.finditer(text):
        if match.start() > position:
            spans.append(ModeSpan(mode, text[position : match.start()]))
        spans.append(ModeSpan(OTHER_SCRIPT_MODE, match.group(0)))
        position = match.end()
    if position < len(text):
        spans.append(ModeSpan(mode, text[position:]))
    return spans
