"""Sentence splitting and non-standard-word verbalization for Chinese text (TextNormalizer)."""

from __future__ import annotations

import re
import string

from . import chronology, numbers, phonecode, quantifier
from .char_convert import load_traditional_table

# Full-width ASCII letters and digits -> half-width.  (Upstream's full-width-space table is keyed
# by a str, which str.translate ignores, so U+3000 is left alone: kept for parity.)
_FULL_TO_HALF = {ord(c) + 0xFEE0: c for c in string.ascii_letters + string.digits}

_SENTENCE_END = re.compile(r"([：、，；。？！,;?!][”’]?)")
# Dropped before splitting, then again (plus "-" and "=") after verbalization.
_DROP_BEFORE_SPLIT = re.compile(r"[—《》【】<>{}()（）#&@“”^_|\\]")
_DROP_AFTER = re.compile(r"[-—《》【】<=>{}()（）#&@“”^_|\\]")

# Symbols read out after the numbers are done (upstream _post_replace), in this order.
_SYMBOL_WORDS: tuple[tuple[str, str], ...] = (
    ("/", "每"),
    *zip("①②③④⑤⑥⑦⑧⑨⑩", "一二三四五六七八九十"),
    ("α", "阿尔法"), ("β", "贝塔"), ("γ", "伽玛"), ("Γ", "伽玛"), ("δ", "德尔塔"), ("Δ", "德尔塔"),
    ("ε", "艾普西龙"), ("ζ", "捷塔"), ("η", "依塔"), ("θ", "西塔"), ("Θ", "西塔"), ("ι", "艾欧塔"),
    ("κ", "喀帕"), ("λ", "拉姆达"), ("Λ", "拉姆达"), ("μ", "缪"), ("ν", "拗"), ("ξ", "克西"),
    ("Ξ", "克西"), ("ο", "欧米克伦"), ("π", "派"), ("Π", "派"), ("ρ", "肉"), ("ς", "西格玛"),
    ("Σ", "西格玛"), ("σ", "西格玛"), ("τ", "套"), ("υ", "宇普西龙"), ("φ", "服艾"), ("Φ", "服艾"),
    ("χ", "器"), ("ψ", "普赛"), ("Ψ", "普赛"), ("ω", "欧米伽"), ("Ω", "欧米伽"),
    # Operators left over from the arithmetic rule (note "=" is 等 here, 等于 there).
    ("+", "加"), ("-", "减"), ("×", "乘"), ("÷", "除"), ("=", "等"),
)


class TextNormalizer:
    """Splits Chinese text into sentences and verbalizes numbers, dates, units and symbols.

    ``normalize("今天3:45开会，共15人。")`` -> ``["今天三点四十五分开会，", "共十五人。"]``.
    """

    def __init__(self) -> None:
        self._traditional = load_traditional_table()

    def split(self, text: str) -> list[str]:
        text = _DROP_BEFORE_SPLIT.sub("", text.replace(" ", ""))
        text = _SENTENCE_END.sub("\\1\n", text).strip()
        return [sentence.strip() for sentence in re.split(r"\n+", text)]

    def normalize_sentence(self, sentence: str) -> str:
        sentence = sentence.translate(self._traditional).translate(_FULL_TO_HALF)

        sentence = chronology.RE_DATE.sub(chronology.replace_date, sentence)
        sentence = chronology.RE_DATE2.sub(chronology.replace_date2, sentence)
        sentence = chronology.RE_TIME_RANGE.sub(chronology.replace_time, sentence)
        sentence = chronology.RE_TIME.sub(chronology.replace_time, sentence)

        sentence = numbers.RE_UNIT_RANGE.sub(numbers.replace_unit_range, sentence)
        sentence = quantifier.RE_TEMPERATURE.sub(quantifier.replace_temperature, sentence)
        sentence = quantifier.replace_measure(sentence)

        # Each pass reads one operator per operand pair; "3+5=8" needs two.
        while numbers.RE_ARITHMETIC.search(sentence):
            sentence = numbers.RE_ARITHMETIC.sub(numbers.replace_arithmetic, sentence)
        sentence = numbers.RE_POWER.sub(numbers.replace_power, sentence)

        sentence = numbers.RE_FRACTION.sub(numbers.replace_fraction, sentence)
        sentence = numbers.RE_PERCENTAGE.sub(numbers.replace_percentage, sentence)
        sentence = phonecode.RE_MOBILE_PHONE.sub(phonecode.replace_mobile, sentence)
        sentence = phonecode.RE_TELEPHONE.sub(phonecode.replace_phone, sentence)
        sentence = phonecode.RE_NATIONAL_UNIFORM_NUMBER.sub(phonecode.replace_phone, sentence)

        sentence = numbers.RE_RANGE.sub(numbers.replace_range, sentence)
        sentence = numbers.RE_NEGATIVE_INTEGER.sub(numbers.replace_negative_integer, sentence)
        sentence = numbers.RE_VERSION.sub(numbers.replace_version, sentence)
        sentence = numbers.RE_DECIMAL.sub(numbers.replace_number, sentence)
        sentence = numbers.RE_COUNTED.sub(numbers.replace_counted, sentence)
        sentence = numbers.RE_DIGIT_STRING.sub(numbers.replace_digit_string, sentence)
        sentence = numbers.RE_NUMBER.sub(numbers.replace_number, sentence)
        return self._read_symbols(sentence)

    @staticmethod
    def _read_symbols(sentence: str) -> str:
        for symbol, words in _SYMBOL_WORDS:
            sentence = sentence.replace(symbol, words)
        return _DROP_AFTER.sub("", sentence)

    def normalize(self, text: str) -> list[str]:
        return [self.normalize_sentence(sentence) for sentence in self.split(text)]
