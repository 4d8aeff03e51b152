"""Text -> phones orchestration of GPT-SoVITS (upstream ``TextPreprocessor.get_phones_and_bert``
without the BERT model, and ``text/cleaner.py``'s ``clean_text``).

A language *mode* (``all_zh``, ``zh``, ``en``, ``auto``, ...) decides how text is split into
language segments; each segment is normalized and converted to phones by its language module,
then mapped to symbol ids. The per-language modules (``chinese``, ``english``, ``japanese``,
``korean``, ``cantonese``) each provide a class with ``normalize(text)`` and ``g2p(norm_text)``;
the frontend owns one instance of each, created on first use.
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .reading_rules import before_language_split, before_normalizer
from .langsegment import LangSegmenter, LangSpan
from .scripts import ModeSpan, spans_by_script
from .segmentation import EmptyTextError, pre_seg_text, replace_consecutive_punctuation
from .symbols import UNK, cleaned_text_to_sequence, symbol_to_id

LANGUAGE_MODES = ("all_zh", "zh", "en", "all_ja", "ja", "all_ko", "ko", "all_yue", "yue", "auto", "auto_yue")
# Fewer phones than this and the official code re-runs with a leading "." (the model needs a
# little context to start speaking).
MIN_PHONES = 6
# English segments shorter than this get a leading "," phone.
MIN_ENGLISH_PHONES = 4
# Special characters that become silence symbols inside Chinese text (every "," phone of the
# segment turns into that symbol, as upstream ``clean_special`` does).
_SPECIAL_SILENCES = (("￥", "SP2"), ("^", "SP3"))

# language -> (module in wyoming_gsv.text, class owning that language's state)
_LANGUAGE_MODULES = {
    "zh": ("chinese", "ChineseG2P"),
    "en": ("english", "EnglishG2P"),
    "ja": ("japanese", "JapaneseG2P"),
    "ko": ("korean", "KoreanG2P"),
    "yue": ("cantonese", "CantoneseG2P"),
}
# v1 models only know these languages; others are read as an empty English segment (upstream).
_V1_LANGUAGES = ("zh", "ja", "en")


class LanguageG2P(Protocol):
    def normalize(self, text: str) -> str: ...

    def g2p(self, norm_text: str) -> tuple[list[str], list[int] | None]: ...


@dataclass
class TextSegment:
    """One language segment as passed to ``clean_text``.

    BERT features: the synthesis engine computes them only for segments whose ``lang`` is "zh"
    (from ``norm_text`` and ``word2ph``: one BERT vector per character, repeated word2ph times);
    every other segment (yue included) gets zeros of shape (1024, len(phones)).
    """

    text: str
    # zh, en, ja, ko or yue; any other label the splitter gave (e.g. "punctuation") is kept as
    # upstream records it, and such a segment is read as an empty English text
    lang: str
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None  # phones per norm_text character; zh and yue only


@dataclass
class PhonemizedText:
    """What the official ``get_phones_and_bert`` produces for one text (without BERT)."""

    segments: list[TextSegment]
    norm_text: str
    phones: list[str]
    phone_ids: list[int]
    word2ph: list[int] | None  # concatenation when every segment has one
    retried_with_dot: bool  # the first pass gave < 6 phones, so "." + text was used
    final_input: str  # the text of the pass that produced this result

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view for ``wyoming-gsv phonemize``."""
        return {
            "segments": [asdict(segment) for segment in self.segments],
            "norm_text": self.norm_text,
            "phones": list(self.phones),
            "phone_ids": list(self.phone_ids),
            "word2ph": None if self.word2ph is None else list(self.word2ph),
            "retried_with_dot": self.retried_with_dot,
            "final_input": self.final_input,
        }


class TextFrontend:
    """The text frontend of one process: language segmentation plus per-language g2p objects.

    Thread-safe; heavy state (dictionaries, taggers, detectors) loads on first use and once.
    """

    def __init__(self, languages: dict[str, LanguageG2P] | None = None, reading_rules: bool = True) -> None:
        """``languages`` replaces the built-in g2p object of some languages (tests, experiments);
        ``reading_rules=False`` leaves out our readings of times, units, money... (``reading_rules``)
        and gives upstream's output exactly."""
        self.segmenter = LangSegmenter()
        self.reading_rules = reading_rules
        self._languages: dict[str, LanguageG2P] = dict(languages or {})
        self._lock = threading.Lock()

    # --- languages -------------------------------------------------------------------------
    def language(self, lang: str) -> LanguageG2P:
        """The g2p object for zh/en/ja/ko/yue (imports its module on first use; a missing
        optional extra raises ``MissingExtraError`` naming it)."""
        g2p = self._languages.get(lang)
        if g2p is None:
            with self._lock:
                g2p = self._languages.get(lang)
                if g2p is None:
                    g2p = self._languages[lang] = _load_language(lang)
        return g2p

    # --- clean_text ------------------------------------------------------------------------
    def clean_text(self, text: str, lang: str, version: str = "v2") -> TextSegment:
        """Normalize one language segment and convert it to phones (upstream ``clean_text``
        followed by ``cleaned_text_to_sequence``)."""
        lang = lang.replace("all_", "")
        if lang not in _LANGUAGE_MODULES or (version == "v1" and lang not in _V1_LANGUAGES):
            lang_used, text_used = "en", " "  # upstream: unknown language -> an empty English text
        else:
            lang_used, text_used = lang, text
        silence = None
        if lang_used == "zh":
            for char, symbol in _SPECIAL_SILENCES:
                if char in text_used:
                    text_used, silence = text_used.replace(char, ","), symbol
                    break
        if self.reading_rules:
            text_used = before_normalizer(text_used, lang_used)
        module = self.language(lang_used)
        norm_text = module.normalize(text_used)
        phones, word2ph = module.g2p(norm_text)
        phones = list(phones)
        if lang_used in ("zh", "yue"):
            if word2ph is None or len(phones) != sum(word2ph) or len(norm_text) != len(word2ph):
                # a bug in the language module, not bad input
                raise RuntimeError(f"{lang_used} g2p gave inconsistent word2ph for {norm_text!r}")
        else:
            word2ph = None
        if silence is not None:
            phones = [silence if phone == "," else phone for phone in phones]
        elif lang_used == "en" and len(phones) < MIN_ENGLISH_PHONES:
            phones = [",", *phones]
        known = symbol_to_id(version)
        phones = [phone if phone in known else UNK for phone in phones]
        return TextSegment(
            text=text,
            lang=lang,
            norm_text=norm_text,
            phones=phones,
            phone_ids=cleaned_text_to_sequence(phones, version),
            word2ph=None if word2ph is None else list(word2ph),
        )

    # --- language modes --------------------------------------------------------------------
    def split_languages(self, text: str, mode: str) -> list[LangSpan]:
        """The (language, text) segments the official code hands to ``clean_text`` for ``mode``."""
        if mode not in LANGUAGE_MODES:
            raise ValueError(f"unknown language mode {mode!r}; choose one of {', '.join(LANGUAGE_MODES)}")
        if mode == "en":
            return [LangSpan("en", _collapse_runs_of_spaces(text))]
        if mode in ("all_zh", "all_yue"):
            spans = self.segmenter.split(text, "zh")
        elif mode in ("all_ja", "all_ko"):
            spans = self.segmenter.split(text, mode[4:])
        elif mode in ("auto", "auto_yue"):
            spans = self.segmenter.split(text)
        else:
            # zh/ja/ko/yue: hanzi cannot tell these apart, so every non-English part is read in
            # the user's language; neighbouring non-English parts merge.
            spans = []
            for span in self.segmenter.split(text):
                lang = "en" if span.lang == "en" else mode
                if spans and spans[-1].lang == lang:
                    spans[-1].text += span.text
                else:
                    spans.append(LangSpan(lang, span.text))
        if mode in ("all_yue", "auto_yue"):
            spans = [LangSpan("yue" if s.lang == "zh" else s.lang, s.text) for s in spans]
        return spans

    def phonemize(
        self, text: str, mode: str, version: str = "v2", *, other_scripts: bool = False
    ) -> PhonemizedText:
        """Segments, normalized text, phones, ids and word2ph of ``text`` read in ``mode``.

        ``other_scripts`` (the request path): a span written in a script ``mode`` does not read
        (hanzi for ``en``, kana for ``zh``...) is read in ``auto`` mode instead of being lost.
        Raises ``ValueError`` for an unknown mode and ``EmptyTextError`` for blank text (or when
        no phones are left even after the retry).
        """
        if not text.strip():
            raise EmptyTextError()
        result = self._phonemize_once(text, mode, version, other_scripts)
        if len(result.phones) < MIN_PHONES:
            result = self._phonemize_once("." + _collapse_runs_of_spaces(text), mode, version, other_scripts)
            result.retried_with_dot = True
        if not result.phones:
            raise EmptyTextError()
        return result

    def _phonemize_once(self, text: str, mode: str, version: str, other_scripts: bool) -> PhonemizedText:
        text = _collapse_runs_of_spaces(text)
        parts = spans_by_script(text, mode) if other_scripts else [ModeSpan(mode, text)]
        spans: list[LangSpan] = []
        for part in parts:
            if len(parts) > 1 and not part.text.strip():
                continue  # the space between two spans of other scripts
            part_text = before_language_split(part.text, part.mode) if self.reading_rules else part.text
            spans += self.split_languages(part_text, part.mode)
        segments = [self.clean_text(span.text, span.lang, version) for span in spans]
        word2ph: list[int] | None = []
        for segment in segments:
            if segment.word2ph is None or word2ph is None:
                word2ph = None
            else:
                word2ph.extend(segment.word2ph)
        return PhonemizedText(
            segments=segments,
            norm_text="".join(s.norm_text for s in segments),
            phones=[p for s in segments for p in s.phones],
            phone_ids=[i for s in segments for i in s.phone_ids],
            word2ph=word2ph if segments else None,
            retried_with_dot=False,
            final_input=text,
        )

    def preprocess(self, text: str, mode: str, cut: str = "cut5") -> list[str]:
        """The chunks the official non-streaming path synthesizes one by one
        (``replace_consecutive_punctuation`` then ``pre_seg_text``)."""
        return pre_seg_text(replace_consecutive_punctuation(text), mode, cut)


def _collapse_runs_of_spaces(text: str) -> str:
    return re.sub(r" {2,}", " ", text)


def _load_language(lang: str) -> LanguageG2P:
    module_name, class_name = _LANGUAGE_MODULES[lang]
    module = importlib.import_module(f"{__package__}.{module_name}")
    return getattr(module, class_name)()
