"""End-to-end parity of the text frontend with the official GPT-SoVITS v2 frontend.

For every record of ``fixtures/text-v2/<file>.jsonl`` we run ``TextFrontend.phonemize(text, mode)``
and compare segments (text, lang, norm_text, phones, phone_ids, word2ph), the concatenated
norm_text/phones/phone_ids/word2ph, ``retried_with_dot``, ``final_input``, and the
``preprocess(text, mode, "cut0")`` chunks with each chunk's norm_text and phones.
Each file's exact-match rate is printed (``pytest -s``) and written to
``build/text_parity_summary.json``. A mismatch fails unless it is listed in KNOWN_MISMATCHES
with its reason. A language whose module or optional extra is missing fails the file: it never
passes silently.

Our reading rules (``wyoming_gsv/text/reading_rules.py``: clock times, temperatures, money...)
change some records on purpose: with the rules off every record must match upstream; with them on
exactly the records of CHANGED_BY_READING_RULES differ, each for the reason given there.
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

# record id -> the reading rule that changes it on purpose, and why. A record listed here that
# matches upstream again fails the test too, so the list stays exact.
_CELSIUS_ZH = "temperature: °C/℃ read 摄氏度 (upstream: 度 in all_zh; in zh mode °C goes to English or is lost)"
CHANGED_BY_READING_RULES: dict[str, str] = {
    "zh-003-all_zh": _CELSIUS_ZH,
    "zh-003-zh": _CELSIUS_ZH,
    "zh-004-all_zh": _CELSIUS_ZH + "; -5℃ is 零下五",
    "zh-004-zh": _CELSIUS_ZH + "; upstream zh mode reads -5℃ as 负五 and drops ℃",
    "zh-016-all_zh": "currency: ¥256.80 read 二百五十六点八零元 (upstream drops ¥)",
    "zh-016-zh": "currency: ¥256.80 read in Chinese with 元 (upstream: English 'two hundred fifty-six point eight zero')",
    "zh-115-all_zh": _CELSIUS_ZH,
    "zh-115-zh": _CELSIUS_ZH + "; upstream zh mode reads 100 digit by digit (幺零零) and C in English",
    "zh-123-all_zh": "unit: 3kg/500g read 三千克/五百克 (upstream: 三kg, 五零零g)",
    "zh-123-zh": "unit: 3kg/500g read 三千克/五百克 (upstream: 三kg, 五零零g)",
    "en-003-en": "12-hour clock: 7:30 am -> seven thirty A M (upstream: seven thirty a.m. am)",
    "en-004-en": "12-hour clock: 6:45 a.m. -> six forty-five A M (upstream: a.m. a.m.)",
    "en-006-en": "12-hour clock: 11:59 PM -> eleven fifty-nine P M (upstream: a.m. P M)",
    "en-013-en": "24-hour clock: 2:15 -> two fifteen (upstream adds a.m. from the hour alone)",
    "en-015-en": "currency: $1,250.50 -> one thousand two hundred fifty dollars and fifty cents (upstream: twelve fifty dollars ...)",
    "en-016-en": "currency: €30 -> thirty euros (upstream drops the euro)",
    "en-018-en": "phone number: 555-123-4567 read digit by digit (upstream: five hundred fifty-five-one hundred twenty-three-...)",
    "en-028-en": "unit: 5 km -> five kilometers (upstream spells K M: its unit rule needs no space)",
    "en-034-en": "version: 2.0.1 -> two point zero point one (upstream: two point zero.one)",
    "en-144-en": "24-hour clock: 10:05 -> ten oh five, 13:40 -> thirteen forty (upstream: ten five a.m., one forty p.m.)",
    "mixed-049-auto": "unit: 200ms -> two hundred milliseconds (upstream: two hundredms, read 'M IH1 Z')",
    "mixed-049-zh": "unit: 200ms -> two hundred milliseconds (upstream: two hundredms, read 'M IH1 Z')",
    "mixed-049-auto_yue": "unit: 200ms -> two hundred milliseconds (upstream: two hundredms, read 'M IH1 Z')",
}


@pytest.fixture(scope="module")
def frontend() -> TextFrontend:
    return TextFrontend()


@pytest.fixture(scope="module")
def upstream_frontend() -> TextFrontend:
    """Without our reading rules: upstream's output, exactly."""
    return TextFrontend(reading_rules=False)


@pytest.fixture(scope="module")
def summary() -> dict:
    results: dict = {}
    yield results
    SUMMARY_PATH.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(SUMMARY_PATH.read_text()) if SUMMARY_PATH.exists() else {}
    previous.update(results)
    SUMMARY_PATH.write_text(json.dumps(previous, indent=1, ensure_ascii=False))


# The texts handed to each stage: our reading rules rewrite them (e.g. "60%" -> 百分之六十 before the
# language split) even where the spoken result is upstream's, so with the rules on only the
# results are compared.
INPUT_FIELDS = ("text", "final_input")


def _phonemized_fields(result: PhonemizedText, skip: tuple[str, ...] = ()) -> dict:
    return {
        "segments": [{f: getattr(s, f) for f in SEGMENT_FIELDS if f not in skip} for s in result.segments],
        **{f: getattr(result, f) for f in RESULT_FIELDS if f not in skip},
    }


def _golden_fields(golden: dict, skip: tuple[str, ...] = ()) -> dict:
    return {
        "segments": [{f: s[f] for f in SEGMENT_FIELDS if f not in skip} for s in golden["segments"]],
        **{f: golden[f] for f in RESULT_FIELDS if f not in skip},
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
    skip = () if not frontend.reading_rules else INPUT_FIELDS
    ours = _phonemized_fields(phonemize(record["text"]), skip)
    expected = _golden_fields(golden, skip)
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
def test_parity(file: str, text_v2: Path, upstream_frontend: TextFrontend, summary: dict) -> None:
    _check_parity(file, text_v2, upstream_frontend, summary, expected_changes={})


@pytest.mark.parametrize("file", FILES)
def test_parity_with_reading_rules(file: str, text_v2: Path, frontend: TextFrontend) -> None:
    """The frontend as the server runs it: upstream's output except the listed records."""
    _check_parity(file, text_v2, frontend, {}, expected_changes=CHANGED_BY_READING_RULES)


def _check_parity(
    file: str, text_v2: Path, frontend: TextFrontend, summary: dict, expected_changes: dict[str, str]
) -> None:
    expected = {**KNOWN_MISMATCHES, **expected_changes}
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
    unexplained = {rid: f for rid, f in mismatches.items() if rid not in expected}
    stale = [rid for rid in expected if rid.startswith(f"{file}-") and rid not in mismatches]
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
    changed_on_purpose = [rid for rid in expected_changes if rid.startswith(f"{file}-")]
    assert not [rid for rid in stale if rid in changed_on_purpose], f"listed as changed but matching upstream: {stale}"
