"""Request text checks done before any work is queued: nothing to say, wrong script for the voice."""

from __future__ import annotations

import unicodedata

from .speech import BadRequest

# Scripts each language mode can pronounce (digits and punctuation are always fine).
_MODE_SCRIPTS: dict[str, frozenset[str]] = {
    "en": frozenset({"latin"}),
    "zh": frozenset({"han", "latin"}),
    "all_zh": frozenset({"han", "latin"}),
    "yue": frozenset({"han", "latin"}),
    "all_yue": frozenset({"han", "latin"}),
    "ja": frozenset({"han", "kana", "latin"}),
    "all_ja": frozenset({"han", "kana", "latin"}),
    "ko": frozenset({"hangul", "han", "latin"}),
    "all_ko": frozenset({"hangul", "han", "latin"}),
    "auto": frozenset({"han", "kana", "hangul", "latin"}),
    "auto_yue": frozenset({"han", "kana", "hangul", "latin"}),
}
_SCRIPT_NAMES: dict[str, str] = {
    "han": "Chinese characters",
    "kana": "Japanese kana",
    "hangul": "Korean hangul",
    "latin": "Latin letters",
    "other": "an unsupported script",
}


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


def has_speakable(text: str) -> bool:
    """At least one letter or digit (punctuation alone has nothing to say)."""
    return any(char.isalnum() for char in text)


def check_script(text: str, mode: str) -> None:
    """Raise BadRequest if the text holds words the language mode cannot pronounce.

    A lone letter of another script is let through as a symbol: Home Assistant writes units as
    "μg/m³" (Greek mu), and answers hold "π" or "Ω"; the frontend reads or skips those, while
    refusing would silence the whole answer."""
    allowed = _MODE_SCRIPTS.get(mode, _MODE_SCRIPTS["auto"])
    previous: str | None = None
    for char in text:
        script = char_script(char)
        foreign = script is not None and script not in allowed
        if foreign and previous is not None:
            raise BadRequest(
                f"text contains {_SCRIPT_NAMES[script]} ({previous + char!r}), which a voice speaking {mode!r} "
                "cannot pronounce",
                code="unsupported-language",
            )
        previous = char if foreign else None
