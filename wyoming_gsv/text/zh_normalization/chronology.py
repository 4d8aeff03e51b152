"""Dates ("2024年3月15日", "2025-01-01") and clock times ("7:30", "8:30-12:30") read in Chinese."""

from __future__ import annotations

import re

from .numbers import num2str, verbalize_cardinal, verbalize_digits

_HOUR = r"([0-1]?[0-9]|2[0-3])"
_CLOCK = _HOUR + r":([0-5][0-9])(?::([0-5][0-9]))?"
RE_TIME = re.compile(_CLOCK)
RE_TIME_RANGE = re.compile(_CLOCK + r"[~-]" + _CLOCK)

RE_DATE = re.compile(
    r"(\d{4}|\d{2})年"
    r"(?:(0?[1-9]|1[0-2])月)?"
    r"(?:(0?[1-9]|[12][0-9]|30|31)([日号]))?"
)
RE_DATE2 = re.compile(r"(\d{4})([- /.])(0[1-9]|1[012])\2(0[1-9]|[12][0-9]|3[01])")

DIGIT_ZERO = "零"


def _clock_number(digits: str) -> str:
    """Minutes and seconds keep a spoken leading zero: "05" -> 零五."""
    spoken = num2str(digits.lstrip("0"))
    return DIGIT_ZERO + spoken if digits.startswith("0") else spoken


def _clock(hour: str, minute: str, second: str | None, half_hour: bool) -> str:
    spoken = f"{num2str(hour)}点"
    if minute.lstrip("0"):
        spoken += "半" if half_hour else f"{_clock_number(minute)}分"
    if second and second.lstrip("0"):
        spoken += f"{_clock_number(second)}秒"
    return spoken


def replace_time(match: re.Match) -> str:
    groups = match.groups()
    hour, minute, second = groups[:3]
    spoken = _clock(hour, minute, second, half_hour=int(minute) == 30)
    if len(groups) > 3:
        # Upstream decides "半" for the end time from the START minute; kept for parity.
        spoken += "至" + _clock(*groups[3:6], half_hour=int(minute) == 30)
    return spoken


def replace_date(match: re.Match) -> str:
    year, month, day, day_word = match.groups()
    spoken = f"{verbalize_digits(year)}年"
    if month:
        spoken += f"{verbalize_cardinal(month)}月"
    if day:
        spoken += f"{verbalize_cardinal(day)}{day_word}"
    return spoken


def replace_date2(match: re.Match) -> str:
    year, _separator, month, day = match.groups()
    return f"{verbalize_digits(year)}年{verbalize_cardinal(month)}月{verbalize_cardinal(day)}日"
