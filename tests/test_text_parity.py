"""End-to-end parity of the text frontend with the official GPT-SoVITS v2 frontend.

For every record of ``fixtures/text-v2/<file>.jsonl`` we run ``TextFrontend.phonemize(text, mode)``
and compare segments (text, lang, norm_text, phones, phone_ids, word2ph), the concatenated
norm_text/phones/phone_ids/word2ph, ``retried_with_dot``, ``final_input``, and the
``preprocess(text, mode, "cut0")`` chunks with each chunk's norm_text and phones.
Each file's exact-match rate is printed (``pytest -s``) and written to
``build/text_parity_summary.json``. A mismatch fails unless it is listed in KNOWN_MISMATCHES
with its reason. A language whose module or optional extra is missing fails the file: it never
passes silently.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from text_golden import load_records

from wyoming_gsv.text.frontend import PhonemizedText, TextFrontend

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SUMMARY_PATH = PROJECT_ROOT / "build" / "text_parity_summary.json"
FILES = ("zh", "en", "ja", "ko", "yue", "mixed")
SEGMENT_FIELDS = ("text", "lang", "norm_text", "phones", "phone_ids", "word2ph")
RESULT_FIELDS = ("norm_text", "phones", "phone_ids", "word2ph", "retried_with_dot", "final_input")

# record id -> why the official output cannot be reproduced. Keep this list short and explained.
KNOWN_MISMATCHES: dict[str, str] = {}


@pytest.fixture(scope="module")
def frontend() -> TextFrontend:
    return TextFrontend()


@pytest.fixture(scope="module")
def summary() -> dict:
    results: dict = {}
    yield results
    SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(SUMMARY_PATH.read_text()) if SUMMARY_PATH.exists() else {}
    previous.update(results)
    SUMMARY_PATH.write_text(json.dumps(previous, indent=1, ensure_ascii=False))


def _phonemized_fields(result: PhonemizedText) -> dict:
    return {
        "segments": [{f: getattr(s, f) for f in SEGMENT_FIELDS} for s in result.segments],
        **{f: getattr(result, f) for f in RESULT_FIELDS},
    }


def _golden_fields(golden: dict) -> dict:
    return {
        "segments": [{f: s[f] for f in SEGMENT_FIELDS} for s in golden["segments"]],
        **{f: golden[f] for f in RESULT_FIELDS},
    }


def _compare(frontend: TextFrontend, record: dict, cache: dict) -> list[str]:
    """Names of the fields that differ from the golden record (empty: exact match)."""

    def phonemize(text: str) -> PhonemizedText:
        key = (text, record["mode"])
        if key not in cache:
            cache[key] = frontend.phonemize(text, record["mode"], record["version"])
        return cache[key]

    golden = record["get_phones_and_bert"]
    assert "error" not in golden, f"{record['id']}: golden records an error"
    ours = _phonemized_fields(phonemize(record["text"]))
    expected = _golden_fields(golden)
    differing = [field for field in expected if ours[field] != expected[field]]

    cut0 = record["preprocess_cut0"]
    chunks = frontend.preprocess(record["text"], record["mode"], "cut0")
    if chunks != cut0["chunks_in"]:
        differing.append("preprocess_cut0.chunks_in")
    else:
        out = []
        for chunk in chunks:
            result = phonemize(chunk)
            if result.norm_text:  # the official loop skips chunks without normalized text
                out.append({"norm_text": result.norm_text, "phones": result.phones})
        if out != cut0["out"]:
            differing.append("preprocess_cut0.out")
    return differing


def _describe(record: dict, frontend: TextFrontend, fields: list[str]) -> str:
    golden = record["get_phones_and_bert"]
    try:
        ours = frontend.phonemize(record["text"], record["mode"]).to_dict()
    except Exception as exc:  # noqa: BLE001 - shown in the failure message only
        ours = {"error": repr(exc)}
    lines = [f"{record['id']} [{record['mode']}] {record['text']!r} differs in {fields}"]
    for field in ("norm_text", "phones"):
        lines.append(f"   golden {field}: {golden[field]}")
        lines.append(f"   ours   {field}: {ours.get(field, ours.get('error'))}")
    return "\n".join(lines)


@pytest.mark.parametrize("file", FILES)
def test_language_split(file: str, text_v2: Path, frontend: TextFrontend) -> None:
    """The (text, lang) segments alone: needs only the splitter, not the language modules."""
    records = load_records(text_v2, f"{file}.jsonl")
    wrong = []
    for record in records:
        golden = record["get_phones_and_bert"]
        spans = frontend.split_languages(golden["final_input"], record["mode"])
        if [(s.text, s.lang) for s in spans] != [(s["text"], s["lang"]) for s in golden["segments"]]:
            wrong.append(record["id"])
    print(f"\nlanguage split {file}: {len(records) - len(wrong)}/{len(records)} exact")
    assert not wrong


@pytest.mark.parametrize("file", FILES)
def test_parity(file: str, text_v2: Path, frontend: TextFrontend, summary: dict) -> None:
    records = load_records(text_v2, f"{file}.jsonl")
    assert records, f"{file}.jsonl has no records"
    cache: dict = {}
    mismatches: dict[str, list[str]] = {}
    for record in records:
        try:
            differing = _compare(frontend, record, cache)
        except ImportError as exc:
            # a language module or its optional extra is missing: that is a failure, never a skip
            pytest.fail(f"{file}: cannot phonemize {record['id']}: {exc}")
        if differing:
            mismatches[record["id"]] = differing

    exact = len(records) - len(mismatches)
    rate = exact / len(records)
    unexplained = {rid: f for rid, f in mismatches.items() if rid not in KNOWN_MISMATCHES}
    stale = [rid for rid in KNOWN_MISMATCHES if rid.startswith(f"{file}-") and rid not in mismatches]
    summary[file] = {
        "records": len(records),
        "exact": exact,
        "rate": round(rate, 4),
        "mismatches": mismatches,
    }
    print(f"\ntext parity {file}: {exact}/{len(records)} exact ({rate:.1%})")
    if stale:
        print(f"  known mismatches that now match (remove them from KNOWN_MISMATCHES): {stale}")
    by_id = {r["id"]: r for r in records}
    details = "\n".join(_describe(by_id[rid], frontend, f) for rid, f in list(unexplained.items())[:8])
    assert not unexplained, f"{file}: {len(unexplained)} unexplained mismatches, e.g.\n{details}"
