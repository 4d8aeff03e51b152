"""Readers for the golden text frontend records in ``fixtures/text-v2`` (see its README.md).

Shared by the per-language tests and the end-to-end parity test: the records are read from the
fixture files every time, never copied into tests.
"""

from __future__ import annotations

import json
from pathlib import Path

# The sentence files (one record per sentence x mode); split.jsonl has another shape.
SENTENCE_FILES = ("zh.jsonl", "en.jsonl", "ja.jsonl", "ko.jsonl", "yue.jsonl", "mixed.jsonl")


def load_records(text_v2: Path, file: str) -> list[dict]:
    """All JSON records of one fixture file (``"zh.jsonl"``, ``"split.jsonl"``, ...), in file order."""
    path = Path(text_v2) / file
    records = []
    with open(path, encoding="utf-8") as stream:
        for line_no, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_no}: not a JSON record ({exc})") from exc
    return records


def iter_segments(text_v2: Path, lang: str) -> list[dict]:
    """Every segment record ``{text, lang, norm_text, phones, phone_ids, word2ph}`` of language
    ``lang`` (zh/en/ja/ko/yue) from all sentence files, deduplicated by (text, lang), in first-seen
    order. Each segment also carries ``record_id``: the id of the first record it came from."""
    seen: set[tuple[str, str]] = set()
    segments = []
    for file in SENTENCE_FILES:
        for record in load_records(text_v2, file):
            result = record.get("get_phones_and_bert") or {}
            for segment in result.get("segments", []):
                key = (segment["text"], segment["lang"])
                if segment["lang"] != lang or key in seen:
                    continue
                seen.add(key)
                segments.append({**segment, "record_id": record["id"]})
    return segments
