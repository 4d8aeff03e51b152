"""Reading Arabic numbers as Chinese: cardinals, digit strings, decimals, fractions, percentages,
ranges, arithmetic and numbers followed by a measure word.

Behaviour follows the official GPT-SoVITS v2 frontend (itself from PaddleSpeech's
``zh_normalization``), quirks included, because the acoustic model was trained on its output.
"""

from __future__ import annotations

import re

DIGIT_CHARS = "零一二三四五六七八九"

# Place-value units by the number of digits they stand for; 亿 covers 8, 万 covers 4.
_UNITS: tuple[tuple[int, str], ...] = ((8, "亿"), (4, "万"), (3, "千"), (2, "百"), (1, "十"))

# Measure words after which a number is read as a count (and 二 becomes 两).  Matching only asks
# whether one of these follows the digits, so listing each word once in any order is enough.
MEASURE_WORDS = (
    "处 台 架 枚 趟 幅 平 方 堵 间 床 株 批 项 例 列 篇 栋 注 亩 封 艘 把 目 套 段 人 所 朵 匹 张 座 回 "
    "场 尾 条 个 首 阙 阵 网 炮 顶 丘 棵 只 支 袭 辆 挑 担 颗 壳 窠 曲 墙 群 腔 砣 客 贯 扎 捆 刀 令 打 "
    "手 罗 坡 山 岭 江 溪 钟 队 单 双 对 出 口 头 脚 板 跳 枝 件 贴 针 线 管 名 位 身 堂 课 本 页 家 户 "
    "层 丝 毫 厘 分 钱 两 斤 铢 石 钧 锱 忽 千克 毫克 微克 公分 寸 尺 丈 里 寻 常 铺 程 千米 分米 厘米 "
    "毫米 微米 米 撮 勺 合 升 斗 盘 碗 碟 叠 桶 笼 盆 盒 杯 斛 锅 簋 篮 罐 瓶 壶 卮 盏 箩 箱 煲 啖 袋 "
    "钵 年 月 日 季 刻 时 周 天 秒 小时 旬 纪 岁 世 更 夜 春 夏 秋 冬 代 伏 辈 丸 泡 粒 幢 堆 根 道 面 "
    "片 块 元 亿 千万 百万 万 千 百 美元 十吨 吨 角 毛"
).split()

_MEASURE_ALTERNATION = "|".join(sorted(MEASURE_WORDS, key=len, reverse=True))

# Superscripts allowed after an operand ("x²+y²"); RE_POWER reads them out.
_SUPERSCRIPTS = "⁰¹²³⁴⁵⁶⁷⁸⁹ˣʸⁿ"
_SUPERSCRIPT_VALUES = dict(zip(_SUPERSCRIPTS, "0123456789xyn"))
_OPERATOR_WORDS = {"+": "加", "-": "减", "×": "乘", "÷": "除", "=": "等于"}


def verbalize_digits(digits: str, alt_one: bool = False) -> str:
    """Read digit by digit ("110" -> 一一零); ``alt_one`` uses 幺 for 1 as in phone numbers."""
    spoken = "".join(DIGIT_CHARS[int(digit)] for digit in digits)
    return spoken.replace("一", "幺") if alt_one else spoken


def _place_values(digits: str, use_zero: bool = True) -> list[str]:
    significant = digits.lstrip("0")
    if not significant:
        return []
    if len(significant) == 1:
        # A dropped leading zero is spoken once ("105" -> 一百零五).
        if use_zero and len(significant) < len(digits):
            return [DIGIT_CHARS[0], DIGIT_CHARS[int(significant)]]
        return [DIGIT_CHARS[int(significant)]]
    power, unit = next((p, u) for p, u in _UNITS if p < len(significant))
    return _place_values(digits[:-power]) + [unit] + _place_values(digits[-power:])


def verbalize_cardinal(digits: str) -> str:
    """Read an integer string as a quantity ("1024" -> 一千零二十四, "12" -> 十二)."""
    if not digits:
        return ""
    digits = digits.lstrip("0")
    if not digits:
        return DIGIT_CHARS[0]
    words = _place_values(digits)
    if len(words) >= 2 and words[0] == "一" and words[1] == "十":
        words = words[1:]
    return "".join(words)


def num2str(number: str) -> str:
    """Read "123", "3.20" or ".5" (integer part as a quantity, decimals digit by digit)."""
    parts = number.split(".")
    if len(parts) > 2:
        raise ValueError(f"number {number!r} has more than one decimal point")
    integer, decimals = parts if len(parts) == 2 else (parts[0], "")
    spoken = verbalize_cardinal(integer)
    # Trailing zeros collapse to a single one: "3.200" -> 三点二零, "3.25" unchanged.
    decimals = decimals.rstrip("0") + "0" if decimals.endswith("0") else decimals
    if decimals:
        spoken = (spoken or DIGIT_CHARS[0]) + "点" + verbalize_digits(decimals)
    return spoken


# --- patterns, applied by TextNormalizer in a fixed order --------------------------------------

RE_FRACTION = re.compile(r"(-?)(\d+)/(\d+)")
RE_PERCENTAGE = re.compile(r"(-?)(\d+(?:\.\d+)?)%")
RE_NEGATIVE_INTEGER = re.compile(r"-(\d+)")
RE_DIGIT_STRING = re.compile(r"\d{3}\d*")
RE_POWER = re.compile(f"[{_SUPERSCRIPTS}]+")
RE_DECIMAL = re.compile(r"(-?)(\d+\.\d+)|(\.\d+)")
RE_COUNTED = re.compile(rf"(\d+)([多余几+])?({_MEASURE_ALTERNATION})")
RE_NUMBER = re.compile(r"(-?)(\d+(?:\.\d+)?)|(\.\d+)")
RE_RANGE = re.compile(r"(?<![\d+\-×÷=])(-?\d+(?:\.\d+)?)[-~](-?\d+(?:\.\d+)?)(?![\d+\-×÷=])")
RE_VERSION = re.compile(r"\d+\.\d+(?:\.\d+)?(?:\.\d+)+")

_OPERAND = rf"-?\d+(?:\.\d+)?[{_SUPERSCRIPTS}]*|\.\d+[{_SUPERSCRIPTS}]*|[A-Za-z][{_SUPERSCRIPTS}]*"
RE_ARITHMETIC = re.compile(rf"({_OPERAND})([+\-×÷=])({_OPERAND})")

_UNIT_RANGE = (
    r"(?:%|°C|℃|度|摄氏度|cm2|cm²|cm3|cm³|cm|db|ds|kg|km|m2|m²|m³|m3|ml|m|mm|s)"
)
RE_UNIT_RANGE = re.compile(
    rf"(?:-?\d+(?:\.\d+)?|\.\d+){_UNIT_RANGE}~(?:-?\d+(?:\.\d+)?|\.\d+){_UNIT_RANGE}"
)


def _sign(minus: str) -> str:
    return "负" if minus else ""


def replace_fraction(match: re.Match) -> str:
    minus, numerator, denominator = match.groups()
    return f"{_sign(minus)}{num2str(denominator)}分之{num2str(numerator)}"


def replace_percentage(match: re.Match) -> str:
    minus, value = match.groups()
    return f"{_sign(minus)}百分之{num2str(value)}"


def replace_negative_integer(match: re.Match) -> str:
    return "负" + num2str(match.group(1))


def replace_digit_string(match: re.Match) -> str:
    return verbalize_digits(match.group(0), alt_one=True)


def replace_power(match: re.Match) -> str:
    return "的" + "".join(_SUPERSCRIPT_VALUES[c] for c in match.group(0)) + "次方"


def replace_number(match: re.Match) -> str:
    minus, number, bare_decimals = match.groups()
    if bare_decimals:  # ".5" -> 零点五; a sign before it is not read
        return num2str(bare_decimals)
    return _sign(minus) + num2str(number)


def replace_counted(match: re.Match) -> str:
    number, approx, measure = match.groups()
    approx = "多" if approx == "+" else (approx or "")
    spoken = num2str(number)
    return f"{'两' if spoken == '二' else spoken}{approx}{measure}"


def replace_range(match: re.Match) -> str:
    first, second = (RE_NUMBER.sub(replace_number, part) for part in match.groups())
    return f"{first}到{second}"


def replace_unit_range(match: re.Match) -> str:
    return match.group(0).replace("~", "至")


def replace_version(match: re.Match) -> str:
    return "".join("点" if c == "." else num2str(c) for c in match.group(0))


def replace_arithmetic(match: re.Match) -> str:
    left, operator, right = match.groups()
    return left + _OPERATOR_WORDS[operator] + right
