"""Temperatures and metric unit abbreviations."""

from __future__ import annotations

import re

from .numbers import num2str

RE_TEMPERATURE = re.compile(r"(-?)(\d+(?:\.\d+)?)(°C|℃|度|摄氏度)")

# Replaced as plain substrings in this order (so "mm" has already lost its first "m" to 米 by the
# time its own entry comes: upstream behaviour, kept).
MEASURE_UNITS: dict[str, str] = {
    "cm2": "平方厘米",
    "cm²": "平方厘米",
    "cm3": "立方厘米",
    "cm³": "立方厘米",
    "cm": "厘米",
    "db": "分贝",
    "ds": "毫秒",
    "kg": "千克",
    "km": "千米",
    "m2": "平方米",
    "m²": "平方米",
    "m³": "立方米",
    "m3": "立方米",
    "ml": "毫升",
    "m": "米",
    "mm": "毫米",
    "s": "秒",
}


def replace_temperature(match: re.Match) -> str:
    minus, value, unit = match.groups()
    return f"{'零下' if minus else ''}{num2str(value)}{'摄氏度' if unit == '摄氏度' else '度'}"


def replace_measure(sentence: str) -> str:
    for abbreviation, words in MEASURE_UNITS.items():
        sentence = sentence.replace(abbreviation, words)
    return sentence
