"""Official GPT-SoVITS text splitting: the ``cut0``..``cut5`` methods and ``pre_seg_text``.

Behaviour follows upstream ``TTS_infer_pack/text_segmentation_method.py`` and
``TextPreprocessor.pre_seg_text`` / ``replace_consecutive_punctuation`` (checked against
``fixtures/text-v2/split.jsonl``), quirks included: the chunks decide what the model sees, so they
must be the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .symbols import PUNCTUATION

# Characters the official splitter cuts after (also what counts as "ends with punctuation").
SPLITS = frozenset("，。？！,.?!~:：—…")
# Punctuation of the phone set; runs of it collapse to the first character.
PHONE_PUNCTUATION = frozenset(PUNCTUATION)
# A chunk made only of these says nothing and is dropped by the cut methods.
_SILENT_CHARS = PHONE_PUNCTUATION | {" "}
_CUT5_MARKS = frozenset(",.;?!、，。？！;：…")
MAX_CHUNK_CHARS = 510  # BERT's input limit
MIN_CHUNK_CHARS = 5

_CONSECUTIVE_PUNCTUATION = re.compile(
    "([{p}])([{p}])+".format(p="".join(re.escape(c) for c in sorted(PHONE_PUNCTUATION)))
)
_SPLIT_CHARS_PATTERN = "[" + "".join(re.escape(c) for c in sorted(SPLITS)) + "]"
_PERIOD_NOT_IN_NUMBER = re.compile(r"(?<!\d)\.(?!\d)")
_NON_WORD = re.compile(r"\W+")


class EmptyTextError(ValueError):
    """The text holds nothing to speak (the official code raises "Please enter valid text.")."""

    def __init__(self) -> None:
        super().__init__("Please enter valid text.")


def replace_consecutive_punctuation(text: str) -> str:
    """Collapse runs of phone punctuation ("!?", "...") to their first character."""
    return _CONSECUTIVE_PUNCTUATION.sub(r"\1", text)


def _is_silent(chunk: str) -> bool:
    return set(chunk) <= _SILENT_CHARS


def split_sentences(text: str) -> list[str]:
    """Pieces ending right after each split character (upstream ``split``); adds a final "。"."""
    text = text.replace("……", "。").replace("——", "，")
    if text[-1] not in SPLITS:
        text += "。"
    pieces, start = [], 0
    for index, char in enumerate(text):
        if char in SPLITS:
            pieces.append(text[start : index + 1])
            start = index + 1
    return pieces


def split_big_text(text: str, max_len: int = MAX_CHUNK_CHARS) -> list[str]:
    """Split a too long chunk at split characters into pieces of at most ``max_len`` chars
    (a single run without punctuation longer than that stays whole)."""
    result, current = [], ""
    for piece in re.split(f"({_SPLIT_CHARS_PATTERN})", text):
        if len(current + piece) > max_len:
            result.append(current)
            current = piece
        else:
            current += piece
    if current:
        result.append(current)
    return result


def cut0(text: str) -> str:
    """No split. (Upstream returns the literal "/n" for punctuation-only input.)"""
    return "/n" if _is_silent(text) else text


def cut1(text: str) -> str:
    """Groups of four sentences."""
    text = text.strip("\n")
    pieces = split_sentences(text)
    starts = list(range(0, len(pieces), 4))
    if len(starts) > 1:
        # The last group absorbs whatever follows the last full group of four.
        bounds = [*starts[:-1], None]
        chunks = ["".join(pieces[a:b]) for a, b in zip(bounds, bounds[1:])]
    else:
        chunks = [text]
    return "\n".join(c for c in chunks if not _is_silent(c))


def cut2(text: str, max_chars: int = 50) -> str:
    """Sentences packed into chunks just over ``max_chars`` characters."""
    text = text.strip("\n")
    pieces = split_sentences(text)
    if len(pieces) < 2:
        return text
    chunks, current = [], ""
    for piece in pieces:
        current += piece
        if len(current) > max_chars:
            chunks.append(current)
            current = ""
    if current:
        chunks.append(current)
    if len(chunks) > 1 and len(chunks[-1]) < max_chars:
        tail = chunks.pop()
        chunks[-1] += tail
    return "\n".join(c for c in chunks if not _is_silent(c))


def cut3(text: str) -> str:
    """At each Chinese full stop "。" (which is removed)."""
    chunks = text.strip("\n").strip("。").split("。")
    return "\n".join(c for c in chunks if not _is_silent(c))


def cut4(text: str) -> str:
    """At each "." that is not a decimal point (the "." is removed)."""
    chunks = _PERIOD_NOT_IN_NUMBER.split(text.strip("\n").strip("."))
    return "\n".join(c for c in chunks if not _is_silent(c))


def cut5(text: str) -> str:
    """After every punctuation mark, except a "." between two digits."""
    text = text.strip("\n")
    chunks, current = [], []
    last = len(text) - 1
    for index, char in enumerate(text):
        current.append(char)
        decimal_point = char == "." and 0 < index < last and text[index - 1].isdigit() and text[index + 1].isdigit()
        if char in _CUT5_MARKS and not decimal_point:
            chunks.append("".join(current))
            current = []
    if current:
        chunks.append("".join(current))
    return "\n".join(c for c in chunks if not set(c) <= _CUT5_MARKS)


CUT_METHODS: dict[str, Callable[[str], str]] = {
    "cut0": cut0,
    "cut1": cut1,
    "cut2": cut2,
    "cut3": cut3,
    "cut4": cut4,
    "cut5": cut5,
}


def get_cut_method(name: str) -> Callable[[str], str]:
    try:
        return CUT_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown text split method {name!r}; choose one of {', '.join(CUT_METHODS)}") from None


def merge_short_text_in_array(texts: list[str], threshold: int) -> list[str]:
    """Join consecutive texts until each reaches ``threshold`` chars; a short tail joins the last."""
    if len(texts) < 2:
        return texts
    result, current = [], ""
    for text in texts:
        current += text
        if len(current) >= threshold:
            result.append(current)
            current = ""
    if current:
        if result:
            result[-1] += current
        else:
            result.append(current)
    return result


def _first_clause(text: str) -> str:
    return re.split(_SPLIT_CHARS_PATTERN, text)[0].strip()


def _drop_blank(texts: list[str]) -> list[str]:
    if all(t in ("", " ", "\n") for t in texts):
        raise EmptyTextError()
    return [t for t in texts if t not in ("", " ")]


def prepare_cut_input(text: str, lang: str) -> str:
    """The text handed to the cut method: a short first clause gets a leading "。" ("." for en)."""
    if text[0] not in SPLITS and len(_first_clause(text)) < 4:
        text = ("." if lang == "en" else "。") + text
    return text


class OfficialSplitter:
    """A voice's ``text_split``: the text goes through upstream's ``replace_consecutive_punctuation``
    and ``pre_seg_text`` with one of ``cut0``..``cut5`` as a whole, as the official tools do, so
    the chunks (and the 0.3 s after each) are theirs.

    Same interface as the sentence splitter, but a cut needs the whole text: a stream's chunks come
    at its end, or (to keep memory bounded) each time ``max_buffered`` characters are waiting, cut
    after the last sentence mark.
    """

    def __init__(self, mode: str, cut: str, max_buffered: int = 4 * MAX_CHUNK_CHARS) -> None:
        get_cut_method(cut)  # an unknown name fails here, not at the end of the text
        self.mode = mode
        self.cut = cut
        self.max_buffered = max_buffered
        self._buffer = ""

    def feed(self, fragment: str) -> list[str]:
        self._buffer += fragment
        if len(self._buffer) <= self.max_buffered:
            return []
        marks = [i for i, char in enumerate(self._buffer) if char in SPLITS]
        end = marks[-1] + 1 if marks else len(self._buffer)
        head, self._buffer = self._buffer[:end], self._buffer[end:]
        return self._chunks(head)

    def flush(self) -> list[str]:
        text, self._buffer = self._buffer, ""
        return self._chunks(text)

    def _chunks(self, text: str) -> list[str]:
        if not text.strip():
            return []
        try:
            return pre_seg_text(replace_consecutive_punctuation(text), self.mode, self.cut)
        except EmptyTextError:
            return []


def pre_seg_text(text: str, lang: str, cut: str) -> list[str]:
    """Split text into the chunks the official preprocessor synthesizes one by one.

    ``lang`` only matters as "en" or not (which full stop to add). Raises ``EmptyTextError`` when the
    cut leaves nothing, ``ValueError`` for an unknown ``cut``.
    """
    method = get_cut_method(cut)
    text = text.strip("\n")
    if not text:
        return []
    text = method(prepare_cut_input(text, lang))
    while "\n\n" in text:
        text = text.replace("\n\n", "\n")
    pieces = merge_short_text_in_array(_drop_blank(text.split("\n")), MIN_CHUNK_CHARS)
    full_stop = "." if lang == "en" else "。"
    chunks = []
    for piece in pieces:
        if not piece.strip() or not _NON_WORD.sub("", piece):
            continue  # blank or punctuation only
        if piece[-1] not in SPLITS:
            piece += full_stop
        if len(piece) > MAX_CHUNK_CHARS:
            chunks.extend(split_big_text(piece))
        else:
            chunks.append(piece)
    return chunks
