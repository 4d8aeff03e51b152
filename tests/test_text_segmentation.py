"""Official text splitting (cut0..cut5, pre_seg_text) against split.jsonl and text_split_golden.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from text_golden import load_records

from wyoming_gsv.text.segmentation import (
    CUT_METHODS,
    EmptyTextError,
    get_cut_method,
    merge_short_text_in_array,
    pre_seg_text,
    prepare_cut_input,
    replace_consecutive_punctuation,
    split_big_text,
)


def _run(text: str, lang: str, cut: str) -> dict:
    """The same fields the golden records hold, computed by our code."""
    try:
        chunks = pre_seg_text(text, lang, cut)
    except ValueError as exc:
        return {"error": f"ValueError: {exc}"}
    method_input = prepare_cut_input(text.strip("\n"), lang)
    return {
        "method_input": method_input,
        "method_output": get_cut_method(cut)(method_input),
        "pre_seg_text": chunks,
    }


def test_split_jsonl_all_cuts_both_paths(text_v2: Path) -> None:
    records = load_records(text_v2, "split.jsonl")
    assert records
    compared, mismatches = 0, []
    for record in records:
        collapsed = replace_consecutive_punctuation(record["text"])
        assert collapsed == record["after_replace_consecutive_punctuation"], record["id"]
        for cut, paths in record["cuts"].items():
            # preprocess() collapses punctuation first; the streaming path does not.
            for path, text in (("preprocess", collapsed), ("streaming", record["text"])):
                compared += 1
                if _run(text, record["lang"], cut) != paths[path]:
                    mismatches.append(f"{record['id']} {cut} {path}")
    print(f"split.jsonl: {compared - len(mismatches)}/{compared} exact")
    assert not mismatches


def test_error_cases_are_ours(text_v2: Path) -> None:
    errors = [
        (record, cut)
        for record in load_records(text_v2, "split.jsonl")
        for cut, paths in record["cuts"].items()
        if "error" in paths["preprocess"]
    ]
    assert errors, "split.jsonl should hold the punctuation-only error cases"
    for record, cut in errors:
        with pytest.raises(EmptyTextError, match="valid text"):
            pre_seg_text(record["text"], record["lang"], cut)


def test_cut_methods_on_samples(v2_tiny: Path) -> None:
    golden = json.loads((v2_tiny / "text_split_golden.json").read_text(encoding="utf-8"))
    assert set(golden["methods"]) == set(CUT_METHODS)
    for name, outputs in golden["methods"].items():
        assert [CUT_METHODS[name](s) for s in golden["samples"]] == outputs, name


def test_split_big_text(v2_tiny: Path) -> None:
    golden = json.loads((v2_tiny / "text_split_golden.json").read_text(encoding="utf-8"))
    pieces = golden["split_big_text"]
    assert split_big_text("".join(pieces)) == pieces
    assert all(len(p) <= 510 for p in pieces)


def test_long_chunks_are_split_at_punctuation() -> None:
    text = "，".join(["这是一个很长的句子"] * 80) + "。"
    chunks = pre_seg_text(text, "zh", "cut0")
    assert len(chunks) > 1 and all(len(c) <= 510 for c in chunks)
    assert "".join(chunks) == text


def test_merge_short_text() -> None:
    assert merge_short_text_in_array(["ab", "cd", "efghij", "k"], 5) == ["abcdefghijk"]
    assert merge_short_text_in_array(["abcde", "fg"], 5) == ["abcdefg"]
    assert merge_short_text_in_array(["a"], 5) == ["a"]


def test_unknown_cut_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="cut9"):
        pre_seg_text("你好。", "zh", "cut9")


def test_empty_text_gives_no_chunks() -> None:
    assert pre_seg_text("\n\n", "zh", "cut5") == []
