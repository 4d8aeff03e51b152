"""Symbol tables and phone -> id mapping against the official tables in gsv-v2-tiny/symbols.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from wyoming_gsv.text.symbols import cleaned_text_to_sequence, symbol_to_id, symbols


@pytest.fixture(scope="module")
def official(v2_tiny: Path) -> dict:
    return json.loads((v2_tiny / "symbols.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_tables_match_official_order(official: dict, version: str) -> None:
    table = symbols(version)
    assert len(table) == official[f"{version}_len"]
    assert list(table) == official[version]
    assert len(set(table)) == len(table)


def test_later_versions_share_the_v2_table() -> None:
    assert symbols("v2Pro") == symbols("v2") == symbols("v4")


def test_example_sequence(official: dict) -> None:
    example = official["example_v2"]
    assert cleaned_text_to_sequence(example["phones"], "v2") == example["ids"]


def test_ids_are_positions() -> None:
    table = symbols("v2")
    ids = symbol_to_id("v2")
    assert all(table[ids[s]] == s for s in table)
    with pytest.raises(TypeError):  # the one cached table is shared: callers cannot change it
        ids["new"] = len(table)  # type: ignore[index]


def test_unknown_phone_names_the_symbol() -> None:
    with pytest.raises(ValueError, match="'#'"):
        cleaned_text_to_sequence(["a", "#"], "v2")
    # Korean jamo are v2 only
    with pytest.raises(ValueError, match="v1"):
        cleaned_text_to_sequence(["ㄱ"], "v1")
