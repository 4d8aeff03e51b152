"""Official text splitting (cut0..cut5, pre_seg_text) against split.jsonl and text_split_golden.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from text_golden import load_records

from wyoming_gsv.text.segmentation import (
    CUT_METHODS,
    EmptyTextError,
    OfficialSplitter,
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


def test_official_splitter_gives_preprocess_chunks(text_v2: Path) -> None:
    """A voice's text_split: the whole text, fed in fragments, comes out as upstream's
    preprocess() chunks (punctuation collapsed, then pre_seg_text); the error cases give none."""
    compared = 0
    for record in load_records(text_v2, "split.jsonl"):
        for cut, paths in record["cuts"].items():
            expected = paths["preprocess"].get("pre_seg_text", [])
            splitter = OfficialSplitter(record["lang"], cut, max_buffered=10_000)
            text = record["text"]
            chunks = [c for i in range(0, len(text), 7) for c in splitter.feed(text[i : i + 7])] + splitter.flush()
            assert chunks == expected, f"{record['id']} {cut}"
            compared += 1
    assert compared


def test_official_splitter_bounds_a_long_stream() -> None:
    """Past max_buffered characters a stream's text is split up to its last sentence mark."""
    splitter = OfficialSplitter("en", "cut5", max_buffered=100)
    sentence = "This is one sentence, with a comma. "
    chunks = []
    for _ in range(30):
        chunks += splitter.feed(sentence)
        assert len(splitter._buffer) <= 100 + len(sentence)
    chunks += splitter.flush()
    assert "".join(chunks).replace(" ", "") == (sentence * 30).replace(" ", "")


def test_official_splitter_refuses_an_unknown_cut() -> None:
    with pytest.raises(ValueError, match="cut9"):
        OfficialSplitter("en", "cut9")
