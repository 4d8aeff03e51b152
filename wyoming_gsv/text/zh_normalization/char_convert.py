"""Traditional -> simplified characters, with the official frontend's own character table.

The table (``text/data/zh_t2s.txt``: one "traditional simplified" pair per line) was rebuilt from
the character lists in upstream ``zh_normalization/char_convert.py``; only pairs that change a
character are stored.  It is not a general converter (OpenCC is): it must convert exactly what
the official frontend converts, e.g. 著 -> 着 also in simplified text.
"""

from __future__ import annotations

from importlib import resources


TABLE_FILE = "data/zh_t2s.txt"


def load_traditional_table() -> dict[int, str]:
    """Translation table for ``str.translate``; read once by the normalizer that owns it."""
    text = resources.files("wyoming_gsv.text").joinpath(TABLE_FILE).read_text("utf-8")
    return parse_traditional_table(text, TABLE_FILE)


def parse_traditional_table(text: str, source: str) -> dict[int, str]:
    table: dict[int, str] = {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        pair = line.split()
        if len(pair) != 2 or len(pair[0]) != 1 or len(pair[1]) != 1:
            raise ValueError(f"{source}:{line_no}: expected 'traditional simplified', got {line!r}")
        table[ord(pair[0])] = pair[1]
    return table
