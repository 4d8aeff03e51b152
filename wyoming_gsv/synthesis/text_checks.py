"""Request text checks done before any work is queued: empty, too long, wrong script for the voice."""

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


def check_text(text: str, mode: str, max_chars: int) -> str:
    """The text to speak (stripped); raises BadRequest with a code a client can act on."""
    text = text.strip()
    if not any(char.isalnum() for char in text):
        raise BadRequest("text is empty (nothing to speak)", code="empty-text")
    if len(text) > max_chars:
        raise BadRequest(f"text is {len(text)} characters; the limit is {max_chars}", code="text-too-long")
    check_script(text, mode)
    return text


def check_script(text: str, mode: str) -> None:
    allowed = _MODE_SCRIPTS.get(mode, _MODE_SCRIPTS["auto"])
    for char in text:
        script = char_script(char)
        if script is not None and script not in allowed:
            raise BadRequest(
                f"text contains {_SCRIPT_NAMES[script]} ({char!r}), which a voice speaking {mode!r} cannot pronounce",
                code="unsupported-language",
            )
