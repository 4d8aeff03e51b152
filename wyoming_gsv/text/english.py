"""English frontend of GPT-SoVITS v2: text normalization and ARPAbet g2p.

Behaves like upstream ``GPT_SoVITS/text/english.py`` with ``en_normalization/expend.py``:
- ``normalize`` spells out numbers, times, money, units, fractions and ordinals (in the words
  upstream gets from inflect, see ``english_numbers``), strips accents and unsupported
  characters, and splits words at inner capitals ("iPhone" -> "i Phone").
  Upstream's quirks are kept on purpose, e.g. "7:30 am" -> "seven thirty a.m. am", "80s" ->
  "eighty seconds", "$1,250.50" -> "twelve fifty dollars and fifty cents".
- ``g2p`` tokenizes with nltk's TweetTokenizer, tags parts of speech with nltk's averaged
  perceptron (homographs such as read/record/live), looks words up in upstream's dictionary
  (CMUdict 0.7b, then the CMUdict GitHub release for words 0.7b lacks: ``data/engdict.txt.gz``,
  built by ``data/build_engdict.py``), reads unknown Title-case words from upstream's name list,
  spells unknown words of <= 3 letters, handles "'s", splits compounds with wordsegment and
  predicts the rest with g2p_en's neural model.

Offline by construction: g2p_en is never imported (its import calls ``nltk.download``); we read
its bundled checkpoint and homograph list ourselves. The POS tagger comes from NLTK data
(``$NLTK_DATA``); when it is missing, ``MissingNltkDataError`` says to run ``wyoming-gsv download``.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .english_numbers import NumberTooLarge, cardinal, ordinal_of_words, ordinal_suffix, spoken_ordinal, year
from .symbols import symbol_to_id

DATA_DIR = Path(__file__).with_name("data")
ENGDICT_PATH = DATA_DIR / "engdict.txt.gz"
NAMEDICT_PATH = DATA_DIR / "namedict.txt.gz"

# NLTK data the English frontend reads: package name -> resource path inside an NLTK data folder.
NLTK_PACKAGES = {"averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng/"}

# Upstream engdict-hot.rep: pronunciations that override the dictionary (the current file; its
# first version had only "chatgpt").
HOT_WORDS = {
    "chatgpt": ["CH", "AE1", "T", "JH", "IY1", "P", "IY1", "T", "IY1"],
    "json": ["JH", "EY1", "S", "AH0", "N"],
    "conda": ["K", "AA1", "N", "D", "AH0"],
}
# Abbreviations upstream removes from the dictionary (spelled out instead of read as a word).
DROPPED_WORDS = ("ae", "ai", "ar", "ios", "hud", "os")
# Upstream corrects two of g2p_en's homographs: (reading for the POS, other reading, POS prefix).
HOMOGRAPH_FIXES = {
    "read": (["R", "IY1", "D"], ["R", "EH1", "D"], "VBP"),
    "complex": (["K", "AH0", "M", "P", "L", "EH1", "K", "S"], ["K", "AA1", "M", "P", "L", "EH0", "K", "S"], "JJ"),
}
# Phones the neural model can emit that GPT-SoVITS filters out ("UW" without stress is not a symbol).
_DROPPED_PHONES = frozenset({" ", "<pad>", "UW", "</s>", "<s>"})
# The only non-symbol upstream maps instead of dropping.
_PHONE_REPLACEMENTS = {"'": "-"}


class MissingNltkDataError(LookupError):
    """NLTK data the English frontend needs is not installed."""

    def __init__(self, packages: list[str]) -> None:
        import nltk

        self.packages = packages
        super().__init__(
            f"the English text frontend needs the NLTK data package(s) {', '.join(packages)}, which were "
            f"not found in the NLTK data path {nltk.data.path}; run `wyoming-gsv download` "
            "(or set NLTK_DATA to a folder that holds them)"
        )


def missing_nltk_packages() -> list[str]:
    """NLTK data packages the English frontend needs that are not installed (names for nltk.download)."""
    import nltk

    missing = []
    for package, resource in NLTK_PACKAGES.items():
        try:
            nltk.data.find(resource)
        except LookupError:
            missing.append(package)
    return missing


# --------------------------------------------------------------------------------------------
# Normalization (upstream en_normalization/expend.py + english.text_normalize)
# --------------------------------------------------------------------------------------------

# Upstream escapes its character-class keys, so the first two only match those literal strings.
_FULLWIDTH_REPLACEMENTS = {"[;:：，；]": ",", '["’]': "'", "。": ".", "！": "!", "？": "?"}
_FULLWIDTH_RE = re.compile("|".join(re.escape(key) for key in _FULLWIDTH_REPLACEMENTS))
_REPEATED_PUNCTUATION_RE = re.compile(r"([!?…,.\-\s])([!?…,.\-])+")

_UNITS = {
    "m": ("meter", "meters"),
    "km": ("kilometer", "kilometers"),
    "km/h": ("kilometer per hour", "kilometers per hour"),
    "ft": ("feet", "feet"),
    "L": ("liter", "liters"),
    "tbsp": ("tablespoon", "tablespoons"),
    "tsp": ("teaspoon", "teaspoons"),
    "h": ("hour", "hours"),
    "min": ("minute", "minutes"),
    "s": ("second", "seconds"),
    "°C": ("degree celsius", "degrees celsius"),
    "°F": ("degree fahrenheit", "degrees fahrenheit"),
}

_NUMBERED_LIST_RE = re.compile(r"\b([0-9]+)\. ")
_NUMBER_WITH_COMMAS_RE = re.compile(r"([0-9][0-9\,]+[0-9])")
_TIME_RE = re.compile(r"\b([01]?[0-9]|2[0-3]):([0-5][0-9])\b")
_MEASUREMENT_RE = re.compile(r"\b([0-9]+(\.[0-9]+)?(m|km|km/h|ft|L|tbsp|tsp|h|min|s|°C|°F))\b")
_POUNDS_BEFORE_RE = re.compile(r"£([0-9\.\,]*[0-9]+)")
_POUNDS_AFTER_RE = re.compile(r"([0-9\.\,]*[0-9]+)£")
_DOLLARS_BEFORE_RE = re.compile(r"\$([0-9\.\,]*[0-9]+)")
_DOLLARS_AFTER_RE = re.compile(r"([(0-9\.\,]*[0-9]+)\$")
_DECIMAL_RE = re.compile(r"([0-9]+\.\s*[0-9]+)")
_FRACTION_RE = re.compile(r"([0-9]+/[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")

# "a + b", "x = 3", ... (operands: signed decimals with superscripts, or a single letter).
_SUPERSCRIPTS = "[⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ]*"
_OPERAND = rf"((-?)((\d+)(\.\d+)?{_SUPERSCRIPTS})|(\.\d+{_SUPERSCRIPTS})|([A-Za-z]{_SUPERSCRIPTS}))"
_ARITHMETIC_RE = re.compile(_OPERAND + r"\s+([\+\-\×÷=])\s+" + _OPERAND)
_OPERATOR_WORDS = {"+": " plus ", "-": " minus ", "×": " times ", "÷": " divided by ", "=": " Equals "}
_NEGATIVE_RE = re.compile(r"(?:^|\s+)(-)(\d+)")

_UNSUPPORTED_CHARS_RE = re.compile(r"[^ A-Za-z'.,?!\-]")
_THAT_IS_RE = re.compile(r"(?i)i\.e\.")
_FOR_EXAMPLE_RE = re.compile(r"(?i)e\.g\.")
_INNER_CAPITAL_RE = re.compile(r"(?<!^)(?<![\s])([A-Z])")


def normalize(text: str) -> str:
    """Upstream ``english.text_normalize``: expand numbers and symbols, keep only the characters the
    g2p reads, collapse runs of punctuation."""
    text = _FULLWIDTH_RE.sub(lambda m: _FULLWIDTH_REPLACEMENTS[m.group()], text)
    text = _expand(text)
    # Runs of punctuation keep only their first mark (avoids reference leakage upstream).
    return _REPEATED_PUNCTUATION_RE.sub(r"\1", text)


def _expand(text: str) -> str:
    text = _NUMBERED_LIST_RE.sub(lambda m: ordinal_suffix(m.group(1)) + ", ", text)
    while _ARITHMETIC_RE.search(text):
        text = _ARITHMETIC_RE.sub(lambda m: m.group(1) + _OPERATOR_WORDS[m.group(8)] + m.group(9), text)
    text = _NEGATIVE_RE.sub(lambda m: f"negative {m.group(2)}", text)

    text = _NUMBER_WITH_COMMAS_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _TIME_RE.sub(_time, text)
    text = _MEASUREMENT_RE.sub(_measurement, text)
    text = _POUNDS_BEFORE_RE.sub(lambda m: _money(m.group(1), "pound", "pounds", "penny", "pence"), text)
    text = _POUNDS_AFTER_RE.sub(lambda m: _money(m.group(1), "pound", "pounds", "penny", "pence"), text)
    text = _DOLLARS_BEFORE_RE.sub(lambda m: _money(m.group(1), "dollar", "dollars", "cent", "cents"), text)
    text = _DOLLARS_AFTER_RE.sub(lambda m: _money(m.group(1), "dollar", "dollars", "cent", "cents"), text)
    text = _DECIMAL_RE.sub(_decimal, text)
    text = _FRACTION_RE.sub(_fraction, text)
    text = _ORDINAL_RE.sub(lambda m: _guarded(spoken_ordinal, m.group(0)), text)
    text = _NUMBER_RE.sub(lambda m: _number(m.group(0)), text)

    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    text = text.replace("%", " percent")
    text = _UNSUPPORTED_CHARS_RE.sub("", text)
    text = _THAT_IS_RE.sub("that is", text)
    text = _FOR_EXAMPLE_RE.sub("for example", text)
    return _INNER_CAPITAL_RE.sub(r" \1", text)


def _guarded(say: Callable[[str], str], digits: str) -> str:
    """Numbers beyond the scale words are read digit by digit (upstream fails on them)."""
    try:
        return say(digits)
    except NumberTooLarge:
        return " ".join(cardinal(digit) for digit in re.sub(r"\D", "", digits))


def _time(m: re.Match[str]) -> str:
    # Upstream reads any hour below 12 as a.m. (also "7:30 pm" -> "seven thirty a.m. pm").
    hours, minutes = int(m.group(1)), int(m.group(2))
    period = "a.m." if hours < 12 else "p.m."
    if hours > 12:
        hours -= 12
    if minutes == 0:
        return f"{cardinal(hours)} o'clock {period}"
    return f"{cardinal(hours)} {cardinal(minutes)} {period}"


def _measurement(m: re.Match[str]) -> str:
    unit = m.group(3)
    # Upstream drops the "." to get a count, so only a bare "1" takes the singular.
    count = int(m.group(1).replace(unit, "").replace(".", ""))
    singular = m.group(2) is None and count == 1
    return m.group(1).replace(unit, " " + _UNITS[unit][0 if singular else 1])


def _fraction(m: re.Match[str]) -> str:
    numerator_digits, denominator_digits = m.group(0).split("/")
    numerator, denominator = int(numerator_digits), int(denominator_digits)
    numerator_words = _guarded(cardinal, numerator_digits)
    if denominator == 1:
        return numerator_words
    if denominator == 2:
        return f"{numerator_words} {'half' if numerator == 1 else 'halves'}"
    denominator_words = ordinal_of_words(_guarded(cardinal, denominator_digits))
    if numerator > 1:
        denominator_words += "s"
    return f"{numerator_words} {denominator_words}"


def _number(digits: str) -> str:
    number = int(digits)
    if 1000 < number < 3000:  # read like a year
        if number == 2000:
            return "two thousand"
        if 2000 < number < 2010:
            return "two thousand " + cardinal(number % 100)
        if number % 100 == 0:
            return cardinal(number // 100) + " hundred"
        return year(number)
    return _guarded(lambda d: cardinal(d, andword=""), digits)


def _money(amount: str, unit: str, units: str, subunit: str, subunits: str) -> str:
    parts = amount.split(".")
    if len(parts) > 2 or not all(part.isdigit() for part in parts if part):
        # Not a price ("1.2.3", ",5"): left as upstream leaves it (upstream fails on ",5").
        return amount + " " + units
    whole = int(parts[0]) if parts[0] else 0
    cents = int(parts[1].ljust(2, "0")) if len(parts) > 1 and parts[1] else 0
    whole_text = f"{whole} {unit if whole == 1 else units}"
    cents_text = f"{cents} {subunit if cents == 1 else subunits}"
    if whole and cents:
        return f"{whole_text} and {cents_text}"
    if whole:
        return whole_text
    if cents:
        return cents_text
    return f"zero {units}"


def _decimal(m: re.Match[str]) -> str:
    integer, fraction = m.group(1).split(".")[:2]
    return integer + " point " + " ".join(fraction)


# --------------------------------------------------------------------------------------------
# Neural g2p for out-of-vocabulary words (g2p_en's GRU encoder-decoder, run with numpy)
# --------------------------------------------------------------------------------------------

_GRAPHEMES = ("<pad>", "<unk>", "</s>", *"abcdefghijklmnopqrstuvwxyz")
# The model's output vocabulary: 4 specials, then ARPAbet (with an unstressed "UW") in sorted order.
_PHONEMES = ("<pad>", "<unk>", "<s>", "</s>", *sorted(
    [f"{vowel}{stress}" for vowel in "AA AE AH AO AW AY EH ER EY IH IY OW OY UH UW".split() for stress in "012"]
    + "B CH D DH F G HH JH K L M N NG P R S SH T TH UW V W Y Z ZH".split()
))
_START, _END = _PHONEMES.index("<s>"), _PHONEMES.index("</s>")
_MAX_PREDICTED_PHONES = 20


def _g2p_en_dir() -> Path:
    """g2p_en's package folder, found without importing it (its import calls nltk.download)."""
    spec = importlib.util.find_spec("g2p_en")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the English text frontend needs the package g2p_en (pip install g2p_en)")
    return Path(next(iter(spec.submodule_search_locations)))


class NeuralG2P:
    """Predicts ARPAbet for one lower-case word with g2p_en's checkpoint (GRU, greedy decoding)."""

    def __init__(self, checkpoint: Path) -> None:
        with np.load(checkpoint) as weights:
            self._w = {name: weights[name] for name in weights.files}
        self._grapheme_ids = {g: i for i, g in enumerate(_GRAPHEMES)}

    def __call__(self, word: str) -> list[str]:
        w = self._w
        unknown = self._grapheme_ids["<unk>"]
        ids = [self._grapheme_ids.get(c, unknown) for c in word] + [self._grapheme_ids["</s>"]]
        # Same float32 operations, shapes and order as g2p_en, so argmax ties break the same way.
        h = np.zeros((1, w["enc_w_hh"].shape[1]), np.float32)
        for i in ids:
            h = _gru_cell(w["enc_emb"][i : i + 1], h, w["enc_w_ih"], w["enc_w_hh"], w["enc_b_ih"], w["enc_b_hh"])
        previous = w["dec_emb"][_START : _START + 1]
        phones = []
        for _ in range(_MAX_PREDICTED_PHONES):
            h = _gru_cell(previous, h, w["dec_w_ih"], w["dec_w_hh"], w["dec_b_ih"], w["dec_b_hh"])
            best = int((np.matmul(h, w["fc_w"].T) + w["fc_b"]).argmax())
            if best == _END:
                break
            phones.append(_PHONEMES[best] if best < len(_PHONEMES) else "<unk>")
            previous = w["dec_emb"][best : best + 1]
        return phones


def _gru_cell(
    x: np.ndarray, h: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray, b_ih: np.ndarray, b_hh: np.ndarray
) -> np.ndarray:
    gates_x = np.matmul(x, w_ih.T) + b_ih
    gates_h = np.matmul(h, w_hh.T) + b_hh
    split = gates_x.shape[-1] * 2 // 3
    reset_update = 1 / (1 + np.exp(-(gates_x[:, :split] + gates_h[:, :split])))
    reset, update = np.split(reset_update, 2, -1)
    candidate = np.tanh(gates_x[:, split:] + reset * gates_h[:, split:])
    return (1 - update) * candidate + update * h


# --------------------------------------------------------------------------------------------
# Dictionary g2p
# --------------------------------------------------------------------------------------------


class Pronunciations(Mapping[str, list[str]]):
    """word -> phones; phones stay one string until looked up (loading 126k lists is slow)."""

    def __init__(self, entries: dict[str, str]) -> None:
        self._entries = entries

    def __getitem__(self, word: str) -> list[str]:
        return self._entries[word].split(" ")

    def __contains__(self, word: object) -> bool:
        return word in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def read_pronunciations(path: Path) -> dict[str, str]:
    """A ``word PHONE PHONE ...`` per line (gzip) -> {word: "PHONE PHONE ..."}."""
    with gzip.open(path, "rt", encoding="utf-8") as stream:
        text = stream.read()
    entries = dict(line.split(" ", 1) for line in text.splitlines() if line)
    empty = [word for word, phones in entries.items() if not phones.strip()]
    if empty:
        raise ValueError(f"{path}: no phones for {empty[0]!r}")
    return entries


def load_engdict(path: Path = ENGDICT_PATH) -> Pronunciations:
    """word -> phones, with upstream's hot words and removals applied."""
    entries = read_pronunciations(path)
    entries.update((word, " ".join(phones)) for word, phones in HOT_WORDS.items())
    for word in DROPPED_WORDS:
        entries.pop(word, None)
    return Pronunciations(entries)


def load_names(path: Path = NAMEDICT_PATH) -> Pronunciations:
    return Pronunciations(read_pronunciations(path))


def load_homographs(path: Path) -> dict[str, tuple[list[str], list[str], str]]:
    """g2p_en's homograph list: word -> (reading for the POS, other reading, POS prefix)."""
    homographs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        word, first, second, pos = line.strip().split("|")
        homographs[word.lower()] = (first.split(), second.split(), pos)
    homographs.update(HOMOGRAPH_FIXES)
    return homographs


class CompoundSplitter:
    """wordsegment's word-frequency model (splits "woodchuck" -> wood chuck); loads on the first
    unknown word, since most text never needs it and loading takes about a second."""

    def __init__(self) -> None:
        self._segmenter: Any = None
        self._lock = threading.Lock()

    @property
    def segmenter(self) -> Any:
        if self._segmenter is None:
            with self._lock:
                if self._segmenter is None:
                    import wordsegment

                    segmenter = wordsegment.Segmenter()
                    segmenter.load()
                    self._segmenter = segmenter
        return self._segmenter

    def split(self, word: str) -> list[str]:
        return self.segmenter.segment(word)


@dataclass
class _Resources:
    """Everything g2p loads once: dictionary, homographs, tagger, segmenter, neural model."""

    words: Pronunciations
    names: Pronunciations
    homographs: dict[str, tuple[list[str], list[str], str]]
    tagger: Any
    compounds: CompoundSplitter
    neural: NeuralG2P
    tokenize: Any


def _load_resources() -> _Resources:
    missing = missing_nltk_packages()
    if missing:
        raise MissingNltkDataError(missing)
    from nltk.tag.perceptron import PerceptronTagger
    from nltk.tokenize import TweetTokenizer

    g2p_en_dir = _g2p_en_dir()
    return _Resources(
        words=load_engdict(),
        names=load_names(),
        homographs=load_homographs(g2p_en_dir / "homographs.en"),
        tagger=PerceptronTagger(),
        compounds=CompoundSplitter(),
        neural=NeuralG2P(g2p_en_dir / "checkpoint20.npz"),
        tokenize=TweetTokenizer().tokenize,
    )


class EnglishG2P:
    """English normalization and g2p; loads its dictionaries and models on first use."""

    def __init__(self) -> None:
        self._resources: _Resources | None = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> _Resources:
        if self._resources is None:
            with self._load_lock:
                if self._resources is None:
                    self._resources = _load_resources()
        return self._resources

    def normalize(self, text: str) -> str:
        return normalize(text)

    def g2p(self, norm_text: str) -> tuple[list[str], None]:
        """ARPAbet phones and punctuation of normalized text (no word2ph for English)."""
        res = self._loaded()
        tokens = res.tokenize(norm_text)
        phones: list[str] = []
        for token, pos in res.tagger.tag(tokens):
            phones.extend(self._token_phones(res, token, pos))
        known = symbol_to_id("v2")
        result = []
        for phone in phones:
            if phone in _DROPPED_PHONES:
                continue
            phone = "UNK" if phone == "<unk>" else phone
            if phone in known:
                result.append(phone)
            elif phone in _PHONE_REPLACEMENTS:
                result.append(_PHONE_REPLACEMENTS[phone])
            # anything else is dropped, as upstream does
        return result, None

    def word_phones(self, word: str) -> list[str]:
        """Phones of one word, without POS context (dictionary, spelling, compounds, neural model)."""
        return self._lookup(self._loaded(), word)

    def _token_phones(self, res: _Resources, token: str, pos: str) -> list[str]:
        word = token.lower()
        if re.search("[a-z]", word) is None:
            return [word]  # punctuation passes through
        if len(word) == 1:
            return ["EY1"] if token == "A" else list(res.words.get(word) or res.neural(word))
        if word in res.homographs:
            first, second, pos_prefix = res.homographs[word]
            # A tag that is a prefix of the wanted one also counts (upstream: only "VB" for "read").
            if pos.startswith(pos_prefix) or (len(pos) < len(pos_prefix) and pos == pos_prefix[: len(pos)]):
                return list(first)
            return list(second)
        return self._lookup(res, token)

    def _lookup(self, res: _Resources, token: str) -> list[str]:
        word = token.lower()
        if len(word) > 1 and word in res.words:
            return list(res.words[word])
        if token.istitle() and word in res.names:
            return list(res.names[word])
        if len(word) <= 3:
            return self._spell(res, word)
        if re.match(r"^([a-z]+)('s)$", word):
            stem = self._lookup(res, word[:-2])
            return stem + _possessive_ending(stem[-1] if stem else "")
        parts = res.compounds.split(word)
        if len(parts) == 1:
            return res.neural(word)
        return [phone for part in parts for phone in self._lookup(res, part)]

    @staticmethod
    def _spell(res: _Resources, word: str) -> list[str]:
        phones: list[str] = []
        for char in word:
            if char == "a":
                phones.append("EY1")
            elif not char.isalpha():
                phones.append(char)
            else:
                phones.extend(res.words.get(char) or res.neural(char))
        return phones


def _possessive_ending(last_phone: str) -> list[str]:
    if last_phone in ("P", "T", "K", "F", "TH", "HH"):  # voiceless
        return ["S"]
    if last_phone in ("S", "Z", "SH", "ZH", "CH", "JH"):  # sibilant
        return ["AH0", "Z"]
    return ["Z"]
