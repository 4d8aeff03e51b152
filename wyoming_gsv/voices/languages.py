"""Text language modes a voice may declare, and the codes Home Assistant sees for them."""

from __future__ import annotations

from ..text import frontend

# Language modes of the GPT-SoVITS frontend. "zh"/"yue"/"ja"/"ko" allow English mixed in,
# "all_*" are single-language, "auto*" detect per segment.
LANGUAGE_MODES: frozenset[str] = frozenset(frontend.LANGUAGE_MODES)

# HA matches languages by exact key, so each voice lists the bare code and the region form.
_ADVERTISED: dict[str, tuple[str, ...]] = {
    "zh": ("zh", "zh_CN"),
    "en": ("en", "en_US"),
    "ja": ("ja", "ja_JP"),
    "ko": ("ko", "ko_KR"),
    "yue": ("yue", "zh_HK"),
}

# The base language of each mode (what the text mostly is).
_MODE_BASES: dict[str, tuple[str, ...]] = {
    "zh": ("zh",),
    "all_zh": ("zh",),
    "en": ("en",),
    "ja": ("ja",),
    "all_ja": ("ja",),
    "ko": ("ko",),
    "all_ko": ("ko",),
    "yue": ("yue",),
    "all_yue": ("yue",),
    "auto": ("zh", "en", "ja", "ko"),
    "auto_yue": ("yue", "en", "ja", "ko"),
}


def advertised_languages(mode: str) -> list[str]:
    """Language codes a voice of this mode is listed under in `info` (bare and region forms)."""
    codes: list[str] = []
    for base in _MODE_BASES[mode]:
        codes.extend(_ADVERTISED[base])
    return codes


def mode_for_language_code(code: str) -> str | None:
    """The mode for a code a client might send (`en`, `en_US`, `en-US`, `zh_CN`...), if any."""
    normalized = code.replace("-", "_")
    if normalized in LANGUAGE_MODES:
        return normalized
    for base, codes in _ADVERTISED.items():
        if normalized in codes:
            return base
    bare = normalized.split("_")[0].lower()
    return bare if bare in _ADVERTISED else None
