"""Incremental sentence splitting for streamed text (LLM answers arrive in fragments).

``SentenceSplitter.feed("d. Ever")`` returns every sentence completed by that fragment; the rest
waits for more text or ``flush()``. A boundary is only decided once the characters that decide
it have arrived, so any fragmentation of the same text yields the same sentences.

Boundaries:
* Chinese/Japanese full stops ``。！？｡`` end a sentence right away (closing quotes and further
  marks that follow stay with it);
* ``. ! ? …`` end a sentence when followed by whitespace or a CJK character, but a "." never
  ends one inside a number ("3.5"), after a dotted abbreviation ("e.g.", "U.S."), a title
  ("Dr.", "Mr."), a single initial ("J.") or a list number at the start ("1. ");
* a newline ends a sentence. ``:`` never does ("7:30").
A sentence longer than ``max_chars`` is cut at its last comma-like mark, else at a space, else
hard. Pieces without any letter or digit (stray punctuation) are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CJK_STOPS = frozenset("。！？｡")
LATIN_STOPS = frozenset(".!?…")
CLOSERS = frozenset("\"'”’」』）)]】》〉")
# Marks a too long sentence may be cut after ("," and ":" only before a space, see _soft_cut).
SOFT_MARKS = frozenset("，、；;：,:—")
ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs mt no fig figs approx dept est inc ltd co corp gen gov sgt "
    "capt lt col rev hon jan feb mar apr jun jul aug sep sept oct nov dec".split()
)
_WORD = re.compile(r"\w")
_OPENERS = "\"'“‘「『（(【《〈["


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x9FFF  # CJK ideographs
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x3134F
    )


def _period_continues(before: str) -> bool:
    """Whether a "." after ``before`` (the sentence so far) is not a sentence end."""
    words = before.split()
    if not words:
        return True  # nothing said yet
    token = words[-1].lstrip(_OPENERS)
    if not token:
        return False
    if token.lower() in ABBREVIATIONS:
        return True
    if len(token) == 1 and token.isalpha():
        return True  # an initial: "J. R. R. Tolkien"
    if "." in token and any(ch.isalpha() for ch in token):
        return True  # dotted abbreviation: e.g. / i.e. / U.S.
    return len(words) == 1 and token.isdigit()  # list numbering: "1. First step"


@dataclass(frozen=True)
class _Scan:
    cut: int | None  # end of the first decided sentence, if any
    pending: int  # start of the first boundary that needs more text (len(text) if none)


def _scan(text: str, final: bool) -> _Scan:
    """Find the first sentence end in ``text``. ``final``: no more text will follow."""
    size = len(text)
    i = 0
    while i < size:
        char = text[i]
        if char == "\n":
            return _Scan(i + 1, size)
        if char in CJK_STOPS or char in LATIN_STOPS:
            end = i + 1
            while end < size and (text[end] in CJK_STOPS or text[end] in LATIN_STOPS or text[end] in CLOSERS):
                end += 1
            if end == size:
                return _Scan(end, size) if final else _Scan(None, i)
            if char in CJK_STOPS or any(c in CJK_STOPS for c in text[i:end]):
                return _Scan(end, size)
            following = text[end]
            if following.isspace() or _is_cjk(following):
                single_period = char == "." and all(c in CLOSERS for c in text[i + 1 : end])
                if not (single_period and _period_continues(text[:i])):
                    return _Scan(end, size)
            i = end
            continue
        i += 1
    return _Scan(None, size)


def _soft_cut(text: str, limit: int) -> int:
    """Where to cut a sentence that has no end within ``limit`` characters."""
    head = text[:limit]

    def marks() -> list[int]:
        cuts = []
        for i, char in enumerate(head):
            if char in SOFT_MARKS:
                # an ASCII "," or ":" only counts before a space (not in "1,000" or "7:30")
                if char in ",:" and not (i + 1 < len(text) and text[i + 1].isspace()):
                    continue
                cuts.append(i + 1)
        return cuts

    spaces = [i for i, char in enumerate(head) if char.isspace() and i > 0]
    for candidates in (marks(), spaces):
        good = [c for c in candidates if c >= limit // 2]
        if good:
            return good[-1]
    for candidates in (marks(), spaces):
        if candidates:
            return candidates[-1]
    return limit


class SentenceSplitter:
    """Turns a stream of text fragments into sentences, each as soon as it is complete."""

    def __init__(self, max_chars: int = 200) -> None:
        if max_chars < 2:
            raise ValueError(f"max_chars must be at least 2, got {max_chars}")
        self.max_chars = max_chars
        self._buffer = ""

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buffer

    def feed(self, fragment: str) -> list[str]:
        """Add a fragment; return the sentences it completed (possibly none)."""
        self._buffer += fragment
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the stream: return whatever remains as sentences and reset."""
        sentences = self._drain(final=True)
        self._buffer = ""
        return sentences

    def _drain(self, final: bool) -> list[str]:
        sentences: list[str] = []
        while True:
            self._buffer = self._buffer.lstrip()
            if not self._buffer:
                break
            scan = _scan(self._buffer, final)
            if scan.cut is not None and scan.cut <= self.max_chars:
                cut = scan.cut
            elif len(self._buffer) > self.max_chars and scan.pending > self.max_chars:
                cut = _soft_cut(self._buffer, self.max_chars)
            elif final:
                cut = len(self._buffer)
            else:
                break
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if _WORD.search(piece):
                sentences.append(piece)
        return sentences


def split_sentences(text: str, max_chars: int = 200) -> list[str]:
    """All sentences of a complete text (the same as feeding it in any fragments, then flushing)."""
    splitter = SentenceSplitter(max_chars)
    return splitter.feed(text) + splitter.flush()
