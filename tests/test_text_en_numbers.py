"""english_numbers against inflect itself (what upstream's English normalization calls)."""

from __future__ import annotations

import random

import inflect
import pytest

from wyoming_gsv.text.english_numbers import (
    MAX_DIGITS,
    NumberTooLarge,
    cardinal,
    ordinal_of_words,
    ordinal_suffix,
    spoken_ordinal,
    year,
)


@pytest.fixture(scope="module")
def engine() -> inflect.engine:
    return inflect.engine()


def _numbers() -> list[int]:
    rng = random.Random(2024)
    numbers = list(range(0, 3100)) + [10**k for k in range(3, MAX_DIGITS)] + [10**k + 1 for k in range(3, MAX_DIGITS)]
    numbers += [rng.randrange(10 ** rng.randint(4, MAX_DIGITS)) for _ in range(1500)]
    numbers += [rng.randrange(1000) * 10 ** (3 * rng.randint(1, 8)) + rng.randrange(100) for _ in range(300)]
    return numbers


def test_cardinal_matches_inflect(engine: inflect.engine) -> None:
    for number in _numbers():
        for andword in ("and", ""):
            assert cardinal(number, andword=andword) == engine.number_to_words(number, andword=andword), number
        assert cardinal(str(number)) == engine.number_to_words(number)


def test_year_matches_inflect_pairs(engine: inflect.engine) -> None:
    for number in range(1000, 10000):
        expected = engine.number_to_words(number, andword="", zero="oh", group=2).replace(", ", " ")
        assert year(number) == expected, number


def test_ordinals_match_inflect(engine: inflect.engine) -> None:
    for number in _numbers()[:4000]:
        digits = str(number)
        assert ordinal_suffix(digits) == engine.ordinal(digits), number
        assert ordinal_of_words(cardinal(number)) == engine.ordinal(engine.number_to_words(number)), number
        for suffix in ("st", "nd", "rd", "th"):
            assert spoken_ordinal(digits + suffix) == engine.number_to_words(digits + suffix), digits + suffix
    assert ordinal_suffix("007") == engine.ordinal("007")


def test_too_many_digits_raise_like_inflect(engine: inflect.engine) -> None:
    too_big = "1" + "0" * MAX_DIGITS
    with pytest.raises(inflect.NumOutOfRangeError):
        engine.number_to_words(too_big)
    with pytest.raises(NumberTooLarge):
        cardinal(too_big)
    assert cardinal("9" * MAX_DIGITS) == engine.number_to_words("9" * MAX_DIGITS)
