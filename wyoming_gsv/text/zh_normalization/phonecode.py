"""Phone numbers, read digit by digit with 幺 for 1 and a pause (，) between number groups."""

from __future__ import annotations

import re

from .numbers import verbalize_digits

# Mainland mobile numbers (optional +86), landlines with area code, and 400 service numbers.
RE_MOBILE_PHONE = re.compile(r"(?<!\d)((\+?86 ?)?1([38]\d|5[0-35-9]|7[678]|9[89])\d{8})(?!\d)")
RE_TELEPHONE = re.compile(r"(?<!\d)((0(10|2[1-3]|[3-9]\d{2})-?)?[1-9]\d{6,7})(?!\d)")
RE_NATIONAL_UNIFORM_NUMBER = re.compile(r"(400)(-)?\d{3}(-)?\d{4}")


def _read_groups(groups: list[str]) -> str:
    return "，".join(verbalize_digits(group, alt_one=True) for group in groups)


def replace_mobile(match: re.Match) -> str:
    return _read_groups(match.group(0).strip("+").split())


def replace_phone(match: re.Match) -> str:
    return _read_groups(match.group(0).split("-"))
