"""Chinese text normalization (numbers, dates, times, money, percentages, units, phone numbers,
symbols), matching the official GPT-SoVITS v2 frontend's ``text/zh_normalization``."""

from .normalizer import TextNormalizer
from .numbers import num2str, verbalize_cardinal, verbalize_digits

__all__ = ["TextNormalizer", "num2str", "verbalize_cardinal", "verbalize_digits"]
