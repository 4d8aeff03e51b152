"""Pinyin syllable -> (initial, final) phone pair of the GPT-SoVITS symbol set.

Rebuilt from the facts of upstream ``text/opencpop-strict.txt``: the set of syllables it lists and
the regular way it splits them.  The phone finals differ from pypinyin's spelling in a few
systematic ways: j/q/x/y + u is ``v``, "zhi chi shi ri" end in ``ir``, "zi ci si" in ``i0``,
"yan" is ``y En``, "ye" is ``y E``, and syllables without an initial take ``AA``/``EE``/``OO``.
"""

from __future__ import annotations

# Finals that follow each initial ("" = no initial), as spelled in pinyin.
_J_Q_X_FINALS = "i ia ian iang iao ie in ing iong iu u v uan van ue ve un vn"
_SYLLABLE_FINALS: dict[str, str] = {
    "": "a ai an ang ao e ei en eng er o ou",
    "b": "a ai an ang ao ei en eng i ian iao ie in ing o u",
    "p": "a ai an ang ao ei en eng i ian iao ie in ing o ou u",
    "m": "a ai an ang ao e ei en eng i ian iao ie in ing iu o ou u",
    "f": "a an ang ei en eng o ou u",
    "d": "a ai an ang ao e ei en eng i ia ian iao ie ing iu ong ou u uan ui un uo",
    "t": "a ai an ang ao e ei eng i ian iao ie ing ong ou u uan ui un uo",
    "n": "a ai an ang ao e ei en eng i ian iang iao ie in ing iu ong ou u uan un uo v ve",
    "l": "a ai an ang ao e ei eng i ia ian iang iao ie in ing iu o ong ou u uan un uo v ve",
    "g": "a ai an ang ao e ei en eng ong ou u ua uai uan uang ui un uo",
    "k": "a ai an ang ao e ei en eng ong ou u ua uai uan uang ui un uo",
    "h": "a ai an ang ao e ei en eng ong ou u ua uai uan uang ui un uo",
    "j": _J_Q_X_FINALS,
    "q": _J_Q_X_FINALS,
    "x": _J_Q_X_FINALS,
    "zh": "a ai an ang ao e ei en eng i ong ou u ua uai uan uang ui un uo",
    "ch": "a ai an ang ao e en eng i ong ou u ua uai uan uang ui un uo",
    "sh": "a ai an ang ao e ei en eng i ou u ua uai uan uang ui un uo",
    "r": "an ang ao e en eng i ong ou u ua uan ui un uo",
    "z": "a ai an ang ao e ei en eng i ong ou u uan ui un uo",
    "c": "a ai an ang ao e ei en eng i ong ou u uan ui un uo",
    "s": "a ai an ang ao e en eng i ong ou u uan ui un uo",
    "y": "a an ang ao e i in ing o ong ou u v uan van ue ve un vn",
    "w": "a ai an ang ei en eng o u",
}
_NO_INITIAL_PHONE = {"a": "AA", "e": "EE", "o": "OO"}
_Y_FINALS = {"an": "En", "e": "E"}


def _phone_final(initial: str, final: str) -> str:
    if initial in ("j", "q", "x", "y") and final.startswith("u"):
        final = "v" + final[1:]
    if initial == "y":
        return _Y_FINALS.get(final, final)
    if final == "i" and initial in ("zh", "ch", "sh", "r"):
        return "ir"
    if final == "i" and initial in ("z", "c", "s"):
        return "i0"
    return final


def build_pinyin_phones() -> dict[str, tuple[str, str]]:
    """``{"zhong": ("zh", "ong"), "ci": ("c", "i0"), "an": ("AA", "an"), ...}``."""
    table: dict[str, tuple[str, str]] = {}
    for initial, finals in _SYLLABLE_FINALS.items():
        for final in finals.split():
            phone_initial = initial or _NO_INITIAL_PHONE[final[0]]
            table[initial + final] = (phone_initial, _phone_final(initial, final))
    return table
