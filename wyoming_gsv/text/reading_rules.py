"""How what Home Assistant says is read: the one place where our text output departs from upstream.

Upstream GPT-SoVITS normalises text for a phonetics corpus, not for a house: it reads "7:30 pm" as
"seven thirty a.m. pm", "2026-11-29" as "twenty twenty-six-eleven-twenty-nine", and in ``zh`` mode
hands "21.5°C" to the English frontend. The rules below rewrite such spans into words *before*
upstream's normalisers run, so everything they do not match keeps upstream's exact output.

- English rules run on every English segment, just before the English normaliser.
- Chinese rules run on a ``zh``/``all_zh`` text before it is split into languages (so "21.5°C"
  stays one Chinese span) and again on every Chinese segment (a no-op the second time: their
  output holds no digits or unit symbols any more).

Each rule is a named regular expression with a function writing its reading; ``tests/
test_reading_rules.py`` holds at least one phrase per rule, and ``tests/test_text_parity.py``
lists the shared-corpus records a rule changes on purpose. ``TextFrontend(reading_rules=False)``
gives upstream's output unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from .english_numbers import cardinal, ordinal_of_words, year
from .zh_normalization.numbers import num2str


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern[str]
    read: Callable[[re.Match[str]], str]

    def apply(self, text: str) -> str:
        return self.pattern.sub(self.read, text)


# --------------------------------------------------------------------------------------------
# English: number words
# --------------------------------------------------------------------------------------------

_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_MINUS = "[-\u2212]"  # ASCII hyphen-minus or the minus sign
# A number, with or without thousands separators: "21.5", "1,013", "1,250.50".
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"


def say_digits(digits: str) -> str:
    """Digit by digit: "0800" -> "zero eight zero zero"."""
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits if d.isdigit())


def say_number(number: str) -> str:
    """A quantity: "1500" -> "one thousand five hundred", "21.5" -> "twenty-one point five",
    "-3" -> "minus three" (decimals digit by digit, as people read them)."""
    sign = "minus " if number[:1] in "-\u2212" else ""
    integer, _, decimals = number.lstrip("-\u2212").replace(",", "").partition(".")
    words = cardinal(integer or "0", andword="").replace(",", "")
    if decimals:
        words += " point " + say_digits(decimals)
    return sign + words


def _count(number: str, singular: str, plural: str) -> str:
    """Number and noun; only exactly one takes the singular ("1.5 liters", "1 liter")."""
    return f"{say_number(number)} {singular if number.lstrip('+') == '1' else plural}"


def _say_year(value: int) -> str:
    if 2000 <= value < 2010:
        return "two thousand" + (f" {cardinal(value - 2000)}" if value > 2000 else "")
    return year(value)


# --------------------------------------------------------------------------------------------
# English: calendar and clock
# --------------------------------------------------------------------------------------------

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")  # fmt: skip
_MONTH_ABBREVIATIONS = {"Jan": "January", "Feb": "February", "Mar": "March", "Apr": "April", "Jun": "June",
                        "Jul": "July", "Aug": "August", "Sep": "September", "Sept": "September",
                        "Oct": "October", "Nov": "November", "Dec": "December"}  # fmt: skip
# Abbreviations that are also English words ("Mar", "Sat", "Sun", "Wed") or names ("Jan") are only
# expanded where a date makes the meaning clear (followed by "." "," or a number).
_AMBIGUOUS_ABBREVIATIONS = frozenset({"Jan", "Mar", "Jun", "Jul", "Wed", "Sat", "Sun"})
_WEEKDAY_ABBREVIATIONS = {"Mon": "Monday", "Tue": "Tuesday", "Tues": "Tuesday", "Wed": "Wednesday",
                          "Thu": "Thursday", "Thur": "Thursday", "Thurs": "Thursday", "Fri": "Friday",
                          "Sat": "Saturday", "Sun": "Sunday"}  # fmt: skip
_ABBREVIATIONS = {**_MONTH_ABBREVIATIONS, **_WEEKDAY_ABBREVIATIONS}
_MONTH_NAME = "|".join([*MONTHS, *sorted(_MONTH_ABBREVIATIONS, key=len, reverse=True)])


def _day_ordinal(day: str) -> str:
    return ordinal_of_words(cardinal(int(day)))


def _iso_date(m: re.Match[str]) -> str:
    year_value, month, day = int(m.group(1)), int(m.group(2)), m.group(3)
    return f"{MONTHS[month - 1]} {_day_ordinal(day)}, {_say_year(year_value)}"


def _month_day(m: re.Match[str]) -> str:
    month = _MONTH_ABBREVIATIONS.get(m.group(1), m.group(1))
    return f"{month} {_day_ordinal(m.group(2))}"


def _day_month(m: re.Match[str]) -> str:
    month = _MONTH_ABBREVIATIONS.get(m.group(2), m.group(2))
    article = "" if re.search(r"\bthe\s+$", m.string[: m.start()], re.IGNORECASE) else "the "
    return f"{article}{_day_ordinal(m.group(1))} of {month}"


def _abbreviation(m: re.Match[str]) -> str:
    return _ABBREVIATIONS[m.group(1) or m.group(2)]


def _minutes(minutes: str) -> str:
    value = int(minutes)
    return f"oh {cardinal(value)}" if value < 10 else cardinal(value)


def _clock_12h(m: re.Match[str]) -> str:
    hour, minutes, period, tail = m.group(1), m.group(2), m.group(3).upper(), m.group(4)
    words = cardinal(int(hour))
    if minutes and int(minutes):
        words += " " + _minutes(minutes)
    # A sentence-final "p.m." keeps its full stop.
    return f"{words} {period} M" + ("." if tail and m.end() == len(m.string.rstrip()) else "")


def _clock_24h(m: re.Match[str]) -> str:
    hour, minutes, seconds = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if hour == 0 and minutes == 0:
        words = "midnight"
    elif minutes == 0:
        words = f"{cardinal(hour)} o'clock" if hour <= 12 else f"{cardinal(hour)} hundred"
    else:
        words = f"{'zero' if hour == 0 else cardinal(hour)} {_minutes(m.group(2))}"
    if seconds:
        words += f" and {cardinal(seconds)} second{'s' if seconds > 1 else ''}"
    return words


# --------------------------------------------------------------------------------------------
# English: measures and money
# --------------------------------------------------------------------------------------------

# Units Home Assistant writes after a number: symbol -> (singular, plural). Longest first in the
# pattern, so "km/h" wins over "km" and "mA" over "m".
_ENGLISH_UNITS = {
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "mph": ("mile per hour", "miles per hour"),
    "m/s": ("meter per second", "meters per second"),
    "kWh": ("kilowatt hour", "kilowatt hours"),
    "Wh": ("watt hour", "watt hours"),
    "kW": ("kilowatt", "kilowatts"),
    "W": ("watt", "watts"),
    "V": ("volt", "volts"),
    "mA": ("milliamp", "milliamps"),
    "A": ("amp", "amps"),
    "hPa": ("hectopascal", "hectopascals"),
    "mbar": ("millibar", "millibars"),
    "lx": ("lux", "lux"),
    "dB": ("decibel", "decibels"),
    "dBm": ("decibel milliwatt", "decibel milliwatts"),
    "ppm": ("part per million", "parts per million"),
    "µg/m³": ("microgram per cubic meter", "micrograms per cubic meter"),
    "μg/m³": ("microgram per cubic meter", "micrograms per cubic meter"),
    "m³": ("cubic meter", "cubic meters"),
    "mm": ("millimeter", "millimeters"),
    "cm": ("centimeter", "centimeters"),
    "km": ("kilometer", "kilometers"),
    "m": ("meter", "meters"),
    "kg": ("kilogram", "kilograms"),
    "g": ("gram", "grams"),
    "mL": ("milliliter", "milliliters"),
    "ml": ("milliliter", "milliliters"),
    "L": ("liter", "liters"),
    "Hz": ("hertz", "hertz"),
    "min": ("minute", "minutes"),
    "ms": ("millisecond", "milliseconds"),
    "h": ("hour", "hours"),
    "s": ("second", "seconds"),
}
_UNIT_ALTERNATION = "|".join(re.escape(u) for u in sorted(_ENGLISH_UNITS, key=len, reverse=True))

# symbol -> (unit, units, subunit, subunits); yen has no subunit in use.
_CURRENCIES = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "€": ("euro", "euros", "cent", "cents"),
    "£": ("pound", "pounds", "penny", "pence"),
    "¥": ("yen", "yen", "", ""),
}


def _money(symbol: str, whole: str, fraction: str | None) -> str:
    unit, units, subunit, subunits = _CURRENCIES[symbol]
    whole = whole.replace(",", "")
    cents = int(fraction.ljust(2, "0")) if fraction and subunit else 0
    if fraction and not subunit:  # "¥12.5": a plain decimal amount
        return f"{say_number(whole + '.' + fraction)} {units}"
    parts = []
    if int(whole) or not cents:
        parts.append(_count(whole, unit, units))
    if cents:
        parts.append(_count(str(cents), subunit, subunits))
    return " and ".join(parts)


def _temperature(m: re.Match[str]) -> str:
    sign, number, scale = m.group(1), m.group(2), m.group(3)
    scale_name = "fahrenheit" if scale[-1] in "F℉" else "celsius"  # upstream's spelling
    return f"{_count(('-' if sign else '') + number, 'degree', 'degrees')} {scale_name}"


def _phone_number(m: re.Match[str]) -> str:
    text = m.group(0)
    if sum(c.isdigit() for c in text) < 7:
        return text  # too short to be a phone number: left to the other rules
    groups = re.findall(r"\d+", text)
    return ("plus " if text.startswith("+") else "") + ", ".join(say_digits(g) for g in groups)


def _version(m: re.Match[str]) -> str:
    prefix = "version " if m.group(1) else ""
    number = m.group(2) or m.group(3)
    return prefix + " point ".join(say_digits(part) for part in number.split("."))


# Not after a word character, "." or another number part (so "1.2.3" and "x-19" are left alone).
_START = r"(?<![\w.,:/\-])"
_END = r"(?![\w/]|[.,:]\d)"

ENGLISH_RULES: tuple[Rule, ...] = (
    # ISO dates: "2026-11-29" -> "November twenty-ninth, twenty twenty-six".
    Rule(
        "iso date",
        re.compile(rf"{_START}(\d{{4}})-(0?[1-9]|1[0-2])-(0?[1-9]|[12]\d|3[01]){_END}"),
        _iso_date,
    ),
    # Day/month/year order is unknowable ("29/11/2026" vs "11/29/2026"), so the digits are read
    # as plain numbers instead of upstream's fraction ("twenty-nine elevenths").
    Rule(
        "numeric date",
        re.compile(rf"{_START}(\d{{1,2}})/(\d{{1,2}})/(\d{{4}}|\d{{2}}){_END}"),
        lambda m: f"{m.group(1)} {m.group(2)} {m.group(3)}",
    ),
    # Phone numbers: groups of digits joined by spaces, dots or dashes, 7+ digits in all,
    # optional "+" and area code in brackets -> digit by digit, a pause between groups.
    Rule(
        "phone number",
        re.compile(
            rf"{_START}(?:\+\d{{1,3}}(?:[ .\-]?\(?\d{{1,4}}\)?)(?:[ .\-]\d{{2,4}}){{1,4}}"  # +49 30 1234 5678
            rf"|(?:\(\d{{2,4}}\)\s?)?\d{{1,4}}(?:-\d{{2,4}}){{1,4}}"  # (555) 123-4567, 1-800-555-0199
            rf"|\d{{3}}\.\d{{3}}\.\d{{4}}){_END}"  # 555.123.4567
        ),
        _phone_number,
    ),
    # Version numbers (three or more parts, or "v" and two) are read part by part, digit by digit.
    Rule(
        "version",
        re.compile(rf"{_START}(?:([vV])(\d+(?:\.\d+)+)|(\d+(?:\.\d+){{2,}})){_END}"),
        _version,
    ),
    # A run of 8+ digits, or of 3+ starting with 0, is a code or phone number, not a quantity.
    Rule(
        "digit run",
        re.compile(rf"{_START}(?:\d{{8,}}|0\d{{2,}}){_END}"),
        lambda m: say_digits(m.group(0)),
    ),
    # "Nov 29", "November 29th", "Sept. 3" -> month name and ordinal day.
    Rule(
        "month and day",
        re.compile(rf"\b({_MONTH_NAME})\.?\s+([12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?(?![\w:]|[.,]\d)"),
        _month_day,
    ),
    # Weekday and month abbreviations; the ambiguous ones only before ".", "," or a number.
    Rule(
        "weekday or month abbreviation",
        re.compile(
            r"\b("
            + "|".join(sorted((a for a in _ABBREVIATIONS if a not in _AMBIGUOUS_ABBREVIATIONS), key=len, reverse=True))
            + r")\b|\b("
            + "|".join(sorted(_AMBIGUOUS_ABBREVIATIONS, key=len, reverse=True))
            + r")(?=[.,]|\s+\d)"
        ),
        _abbreviation,
    ),
    # "3 March", "29th Nov." -> "the third of March", "the twenty-ninth of November".
    Rule(
        "day and month",
        re.compile(rf"(?<![\w.,:])([12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?\s+({_MONTH_NAME})\b"),
        _day_month,
    ),
    # 12-hour clock: "7:30 pm", "7:30pm", "7.30pm", "7 PM", "12:00 a.m." -> "seven thirty P M" (upstream
    # reads "seven thirty a.m. pm").
    Rule(
        "12-hour clock",
        re.compile(r"(?<![\w.:])(1[0-2]|0?[1-9])(?:[:.]([0-5]\d))?\s*([AaPp])\.?\s?[Mm](\.)?(?!\w)"),
        _clock_12h,
    ),
    # 24-hour clock: "19:45" -> "nineteen forty-five", "07:05" -> "seven oh five", "19:00" ->
    # "nineteen hundred", "7:00" -> "seven o'clock", "00:00" -> "midnight", "10:02:45" -> "ten oh
    # two and forty-five seconds" (upstream adds a.m./p.m. from the hour alone and reads 13:40 as
    # "one forty p.m.").
    Rule(
        "24-hour clock",
        re.compile(r"(?<![\w.:])([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?(?![\w:]|\.\d)"),
        _clock_24h,
    ),
    # "21.5 °C", "70°F", "-3 ℃" -> "twenty-one point five degrees celsius", "minus three ...".
    Rule(
        "temperature",
        re.compile(rf"(?<![\w.,])({_MINUS})?({_NUMBER})\s*(°\s*[CF]|℃|℉)(?![A-Za-z])"),
        _temperature,
    ),
    # A bare degree sign (angles, wind bearing): "270°" -> "two hundred seventy degrees".
    Rule(
        "degrees",
        re.compile(rf"(?<![\w.,])({_MINUS}?{_NUMBER})\s*°"),
        lambda m: _count(m.group(1), "degree", "degrees"),
    ),
    # "45%", "12.5 %" -> "forty-five percent", "twelve point five percent".
    Rule(
        "percent",
        re.compile(rf"(?<![\w.,])({_MINUS}?{_NUMBER})\s*%"),
        lambda m: f"{say_number(m.group(1))} percent",
    ),
    # "$12.50", "€3", "£1.20", "12,50 €" -> "twelve dollars and fifty cents", "three euros",
    # "one pound and twenty pence" (upstream: "twelve fifty dollars and fifty cents", euro dropped).
    Rule(
        "currency",
        re.compile(r"([$€£¥])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?!\d|[.,]\d)"),
        lambda m: _money(m.group(1), m.group(2), m.group(3)),
    ),
    Rule(
        "currency after the number",
        re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:[.,](\d{1,2}))?\s?([€£$])"),
        lambda m: _money(m.group(3), m.group(1), m.group(2)),
    ),
    # Ranges: "3-5 minutes", "10–12" -> "3 to 5", "10 to 12" (upstream: "three-five"); a spaced
    # ASCII "3 - 5" stays upstream's arithmetic "three minus five".
    Rule(
        "range",
        re.compile(rf"{_START}({_NUMBER})(?:-|\s?[–—]\s?)({_NUMBER}){_END}"),
        lambda m: f"{m.group(1)} to {m.group(2)}",
    ),
    # Units after a number: "12 km/h", "3.5kWh", "35 µg/m³" -> "twelve kilometers per hour", ...
    Rule(
        "unit",
        re.compile(rf"(?<![\w.,])({_MINUS}?{_NUMBER})\s?({_UNIT_ALTERNATION})(?![\w/³])"),
        lambda m: _count(m.group(1), *_ENGLISH_UNITS[m.group(2)]),
    ),
    # Numbers written with thousands separators are quantities: "1,234" -> "one thousand two
    # hundred thirty-four" (upstream drops the commas and reads 1000-2999 like a year: "twelve thirty-four").
    Rule(
        "grouped number",
        re.compile(rf"(?<![\w.,])\d{{1,3}}(?:,\d{{3}})+(?:\.\d+)?(?![\d]|[.,]\d)"),
        lambda m: say_number(m.group(0)),
    ),
    # Negative numbers: "-3" -> "minus 3" (upstream glues "negative" to the word before: "isnegative").
    Rule(
        "negative number",
        re.compile(rf"(?<![\w.])({_MINUS})(?=\d)"),
        lambda m: "minus ",
    ),
)


# --------------------------------------------------------------------------------------------
# Chinese
# --------------------------------------------------------------------------------------------

# Units Home Assistant writes after a number, in the spoken Chinese form. Upstream's normaliser
# reads km, kg, cm, mm, m, ml, m³ and dB itself (when the text stays Chinese, which in `zh` mode it
# often does not); the words here are the same as upstream's for those.
_CHINESE_UNITS = {
    "km/h": "千米每小时",
    "mph": "英里每小时",
    "m/s": "米每秒",
    "kWh": "千瓦时",
    "Wh": "瓦时",
    "kW": "千瓦",
    "W": "瓦",
    "V": "伏",
    "mA": "毫安",
    "A": "安",
    "hPa": "百帕",
    "mbar": "毫巴",
    "lx": "勒克斯",
    "dB": "分贝",
    "µg/m³": "微克每立方米",
    "μg/m³": "微克每立方米",
    "m³": "立方米",
    "mm": "毫米",
    "cm": "厘米",
    "km": "千米",
    "m": "米",
    "kg": "千克",
    "g": "克",
    "mL": "毫升",
    "ml": "毫升",
    "L": "升",
    "Hz": "赫兹",
}
# Currency symbol -> the currency's name after the amount (¥ is the yuan for a Chinese reader).
_CHINESE_CURRENCIES = {"¥": "元", "￥": "元", "$": "美元", "€": "欧元", "£": "英镑"}
_CHINESE_UNIT_ALTERNATION = "|".join(re.escape(u) for u in sorted(_CHINESE_UNITS, key=len, reverse=True))


def _zh_number(sign: str | None, number: str) -> str:
    return ("负" if sign else "") + num2str(number)


def _zh_temperature(m: re.Match[str]) -> str:
    sign, number, scale = m.group(1), m.group(2), m.group(3)
    before = m.string[: m.start()]
    below_zero = "零下" if sign and not before.endswith("零下") else ""  # "零下-3℃" says it once
    if scale[-1] in "F℉":
        return f"{'' if before.endswith('华氏') else '华氏'}{below_zero}{num2str(number)}度"
    return f"{below_zero}{num2str(number)}摄氏度"


CHINESE_RULES: tuple[Rule, ...] = (
    # "21.5°C", "-3 ℃", "70°F" -> 二十一点五摄氏度, 零下三摄氏度, 华氏七十度 (upstream `zh` mode
    # hands "°C" to the English frontend: "二十一点五, S IY1").
    Rule(
        "temperature",
        re.compile(rf"({_MINUS})?({_NUMBER})\s*(°\s*[CF]|℃|℉)"),
        _zh_temperature,
    ),
    # "¥256.80", "￥12", "$5", "€3.5" -> 二百五十六点八零元, 十二元, 五美元, 三点五欧元 (upstream drops
    # the symbol, or in `zh` mode reads the amount in English).
    Rule(
        "currency",
        re.compile(r"([¥￥$€£])\s?(\d+(?:\.\d+)?)"),
        lambda m: num2str(m.group(2)) + _CHINESE_CURRENCIES[m.group(1)],
    ),
    # A bare degree sign: "270°" -> 二百七十度.
    Rule(
        "degrees",
        re.compile(rf"({_MINUS})?({_NUMBER})\s*°"),
        lambda m: _zh_number(m.group(1), m.group(2)) + "度",
    ),
    # "45%", "12.5 %" -> 百分之四十五, 百分之十二点五 (also when `zh` mode's language split would
    # hand the number to English).
    Rule(
        "percent",
        re.compile(rf"({_MINUS})?({_NUMBER})\s*[%％]"),
        lambda m: ("负" if m.group(1) else "") + "百分之" + num2str(m.group(2)),
    ),
    # Units after a number: "12km/h", "1500 W", "35µg/m³" -> 十二千米每小时, 一千五百瓦,
    # 三十五微克每立方米 (upstream reads "1500" digit by digit and the unit in English).
    Rule(
        "unit",
        re.compile(rf"({_MINUS})?({_NUMBER})\s?({_CHINESE_UNIT_ALTERNATION})(?![A-Za-z/³])"),
        lambda m: _zh_number(m.group(1), m.group(2)) + _CHINESE_UNITS[m.group(3)],
    ),
)

# Modes whose text is Chinese as a whole: the Chinese rules run before the language split.
_CHINESE_MODES = frozenset({"zh", "all_zh"})


def rule_count() -> int:
    return len(ENGLISH_RULES) + len(CHINESE_RULES)


def read_english(text: str) -> str:
    """English text with Home Assistant's times, dates, units, money... written as words."""
    for rule in ENGLISH_RULES:
        text = rule.apply(text)
    return text


def read_chinese(text: str) -> str:
    """Chinese text with temperatures, percentages and units written in hanzi."""
    for rule in CHINESE_RULES:
        text = rule.apply(text)
    return text


def before_language_split(text: str, mode: str) -> str:
    """The text of a whole request in ``mode``, before the language split."""
    return read_chinese(text) if mode in _CHINESE_MODES else text


def before_normalizer(text: str, lang: str) -> str:
    """One language segment's text, before that language's normaliser."""
    if lang == "en":
        return read_english(text)
    if lang == "zh":
        return read_chinese(text)
    return text
