"""English number words, as the ``inflect`` calls of upstream's English normalization produce them.

Upstream reads numbers with ``inflect.engine().number_to_words`` and ``ordinal``. Importing inflect
takes seconds (typeguard instruments it), so the handful of forms the normalizer needs are written
out here; ``tests/test_text_en_numbers.py`` checks them against inflect itself:
- ``cardinal(1250, andword="")`` -> "one thousand, two hundred fifty"
- ``year(1945)`` -> "nineteen forty-five" (upstream: ``group=2, zero="oh"``, ", " -> " ")
- ``ordinal_suffix("21")`` -> "21st"; ``ordinal_of_words("twenty-three")`` -> "twenty-third"
- ``spoken_ordinal("101st")`` -> "one hundred and first"
Numbers of more than 36 digits are beyond inflect's scale words; ``NumberTooLarge`` is raised.
"""

from __future__ import annotations

import re

_UNITS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ("", " thousand", " million", " billion", " trillion", " quadrillion", " quintillion", " sextillion",
           " septillion", " octillion", " nonillion", " decillion")  # fmt: skip
MAX_DIGITS = 3 * len(_SCALES)

# Last word of a cardinal -> its ordinal ending (anything else just takes "th").
_ORDINAL_ENDINGS = {"ty": "tieth", "one": "first", "two": "second", "three": "third", "five": "fifth",
                    "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}  # fmt: skip
_ORDINAL_ENDING_RE = re.compile(rf"({'|'.join(_ORDINAL_ENDINGS)})\Z")
_ORDINAL_SUFFIXES = ("st", "nd", "rd", "th")


class NumberTooLarge(ValueError):
    """More digits than English scale words cover (inflect's NumOutOfRangeError)."""


def _tens(tens: int, units: int) -> str:
    if tens == 1:
        return _TEENS[units]
    return _TENS[tens] + ("-" if tens and units else "") + _UNITS[units]


def cardinal(number: int | str, andword: str = "and") -> str:
    """A whole number (digits) in words, with inflect's commas between scale groups."""
    digits = str(number).lstrip("0")
    if not digits:
        return "zero"
    if digits == "1":
        return "one"
    if len(digits) > MAX_DIGITS:
        raise NumberTooLarge(f"{len(digits)}-digit number")
    groups = []  # (words, scale index), most significant first
    for scale in range((len(digits) + 2) // 3):
        end = len(digits) - 3 * scale
        value = digits[max(0, end - 3) : end].rjust(3, "0")
        hundreds, tens, units = (int(d) for d in value)
        if hundreds:
            joiner = f" {andword} " if tens or units else ""
            groups.append((f"{_UNITS[hundreds]} hundred{joiner}{_tens(tens, units)}", scale))
        elif tens or units:
            groups.append((_tens(tens, units), scale))
    groups.reverse()
    parts = [words + _SCALES[scale] for words, scale in groups]
    # A last group that is a single word after a comma gets the andword ("one thousand and five").
    if len(parts) > 1 and groups[-1][1] == 0 and " " not in parts[-1]:
        text = ", ".join(parts[:-1]) + f" {andword} " + parts[-1]
    else:
        text = ", ".join(parts)
    return " ".join(text.split())


def year(number: int) -> str:
    """A four-digit number read in pairs, "oh" for a zero ten: 1945 -> "nineteen forty-five",
    1905 -> "nineteen oh five", 1900 -> "nineteen oh oh" (upstream says "nineteen hundred")."""
    if not 1000 <= number <= 9999:
        raise ValueError(f"not a four-digit number: {number}")
    high, low = divmod(number, 100)
    if low >= 10:
        low_words = _tens(low // 10, low % 10)
    else:
        low_words = f"oh {_UNITS[low]}" if low else "oh oh"
    return f"{_tens(high // 10, high % 10)} {low_words}"


def ordinal_of_words(words: str) -> str:
    """"twenty-three" -> "twenty-third", "eleven" -> "eleventh" (only the last word changes)."""
    changed = _ORDINAL_ENDING_RE.sub(lambda m: _ORDINAL_ENDINGS[m.group(1)], words)
    return changed if changed != words else words + "th"


def ordinal_suffix(digits: str) -> str:
    """"21" -> "21st", "12" -> "12th", "103" -> "103rd"."""
    value = int(digits)
    last_two = value % 100
    suffix = "th" if 11 <= last_two <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(value % 10, "th")
    return digits + suffix


def spoken_ordinal(token: str) -> str:
    """Digits with an ordinal suffix ("21st", "3th") in words: the suffix only says "ordinal"."""
    if token[-2:] not in _ORDINAL_SUFFIXES:
        return cardinal(token)
    words = cardinal(token[:-2])
    head, _, last = words.rpartition(", ")
    return (head + ", " if head else "") + ordinal_of_words(last)
