"""Mandarin tone sandhi on jieba words: 不, 一, the neutral tone and third-tone sandhi.

Rules and word lists follow the official GPT-SoVITS v2 frontend (from PaddleSpeech), quirks
included.  Finals are pypinyin FINALS_TONE3 strings with the tone digit last ("ao3", "i5").
"""

from __future__ import annotations

from typing import Callable

from pypinyin import Style, lazy_pinyin

Segment = list  # [word, pos] pairs (mutable so merges can extend the word)

# Words whose last syllable is read in the neutral tone.
NEUTRAL_TONE_WORDS = frozenset(
    """
    麻烦 麻利 鸳鸯 高粱 骨头 骆驼 马虎 首饰 馒头 馄饨 风筝 难为 队伍 阔气 闺女 门道 锄头 铺盖 铃铛 铁匠
    钥匙 里脊 里头 部分 那么 道士 造化 迷糊 连累 这么 这个 运气 过去 软和 转悠 踏实 跳蚤 跟头 趔趄 财主
    豆腐 讲究 记性 记号 认识 规矩 见识 裁缝 补丁 衣裳 衣服 衙门 街坊 行李 行当 蛤蟆 蘑菇 薄荷 葫芦 葡萄
    萝卜 荸荠 苗条 苗头 苍蝇 芝麻 舒服 舒坦 舌头 自在 膏药 脾气 脑袋 脊梁 能耐 胳膊 胭脂 胡萝 胡琴 胡同
    聪明 耽误 耽搁 耷拉 耳朵 老爷 老实 老婆 老头 老太 翻腾 罗嗦 罐头 编辑 结实 红火 累赘 糨糊 糊涂 精神
    粮食 簸箕 篱笆 算计 算盘 答应 笤帚 笑语 笑话 窟窿 窝囊 窗户 稳当 稀罕 称呼 秧歌 秀气 秀才 福气 祖宗
    砚台 码头 石榴 石头 石匠 知识 眼睛 眯缝 眨巴 眉毛 相声 盘算 白净 痢疾 痛快 疟疾 疙瘩 疏忽 畜生 生意
    甘蔗 琵琶 琢磨 琉璃 玻璃 玫瑰 玄乎 狐狸 状元 特务 牲口 牙碜 牌楼 爽快 爱人 热闹 烧饼 烟筒 烂糊 点心
    炊帚 灯笼 火候 漂亮 滑溜 溜达 温和 清楚 消息 浪头 活泼 比方 正经 欺负 模糊 槟榔 棺材 棒槌 棉花 核桃
    栅栏 柴火 架势 枕头 枇杷 机灵 本事 木头 木匠 朋友 月饼 月亮 暖和 明白 时候 新鲜 故事 收拾 收成 提防
    挖苦 挑剔 指甲 指头 拾掇 拳头 拨弄 招牌 招呼 抬举 护士 折腾 扫帚 打量 打算 打点 打扮 打听 打发 扎实
    扁担 戒指 懒得 意识 意思 情形 悟性 怪物 思量 怎么 念头 念叨 快活 忙活 志气 心思 得罪 张罗 弟兄 开通
    应酬 庄稼 干事 帮手 帐篷 希罕 师父 师傅 巴结 巴掌 差事 工夫 岁数 屁股 尾巴 少爷 小气 小伙 将就 对头
    对付 寡妇 家伙 客气 实在 官司 学问 学生 字号 嫁妆 媳妇 媒人 婆家 娘家 委屈 姑娘 姐夫 妯娌 妥当 妖精
    奴才 女婿 头发 太阳 大爷 大方 大意 大夫 多少 多么 外甥 壮实 地道 地方 在乎 困难 嘴巴 嘱咐 嘟囔 嘀咕
    喜欢 喇嘛 喇叭 商量 唾沫 哑巴 哈欠 哆嗦 咳嗽 和尚 告诉 告示 含糊 吓唬 后头 名字 名堂 合同 吆喝 叫唤
    口袋 厚道 厉害 千斤 包袱 包涵 匀称 勤快 动静 动弹 功夫 力气 前头 刺猬 刺激 别扭 利落 利索 利害 分析
    出息 凑合 凉快 冷战 冤枉 冒失 养活 关系 先生 兄弟 便宜 使唤 佩服 作坊 体面 位置 似的 伙计 休息 什么
    人家 亲戚 亲家 交情 云彩 事情 买卖 主意 丫头 丧气 两口 东西 东家 世故 不由 不在 下水 下巴 上头 上司
    丈夫 丈人 一辈 那个 菩萨 父亲 母亲 咕噜 邋遢 费用 冤家 甜头 介绍 荒唐 大人 泥鳅 幸福 熟悉 计划 扑腾
    蜡烛 姥爷 照顾 喉咙 吉他 弄堂 蚂蚱 凤凰 拖沓 寒碜 糟蹋 倒腾 报复 逻辑 盘缠 喽啰 牢骚 咖喱 扫把 惦记
    """.split()
)
# Exceptions to the reduplication and 子/们 neutral-tone rules (幺幺 keeps "110" read 幺幺零 with
# two first tones).
NOT_NEUTRAL_TONE_WORDS = frozenset(
    """
    男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎 幺幺 干嘛 学子 哈哈 数数 袅袅 局地 以下 娃哈哈
    花花草草 留得 耕地 想想 熙熙 攘攘 卵子 死死 冉冉 恳恳 佼佼 吵吵 打打 考考 整整 莘莘 落地 算子 家家户户 青青
    """.split()
)
# After these, "一" keeps its first tone.
_PUNCTUATION = "：，；。？！“”‘’':,;.?!"
_NEUTRAL_PARTICLES = "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶"
_BEFORE_GE = "几有两半多各整每做是"


def _with_tone(final: str, tone: str) -> str:
    return final[:-1] + tone


def _all_third_tone(finals: list[str]) -> bool:
    return all(final[-1] == "3" for final in finals)


def _is_reduplication(word: str) -> bool:
    return len(word) == 2 and word[0] == word[1]


def word_finals(word: str) -> list[str]:
    """pypinyin finals with tone digits, one per character ("你好" -> ["i3", "ao3"])."""
    return lazy_pinyin(word, neutral_tone_with_five=True, style=Style.FINALS_TONE3)


class ToneSandhi:
    """Merges jieba words the way the sandhi rules need and rewrites their tones.

    ``cut_for_search`` is jieba's search-mode cutter (a ``jieba.Tokenizer`` method); it splits a
    word into sub-words for the rules that look at compound structure.  ``finals_of`` gives a
    word's finals (default: ``word_finals``; the Chinese frontend passes a memoized one).
    """

    def __init__(
        self,
        cut_for_search: Callable[[str], object],
        finals_of: Callable[[str], list[str]] = word_finals,
    ) -> None:
        self._cut_for_search = cut_for_search
        self._finals_of = finals_of

    # --- tone rules -----------------------------------------------------------------------

    def modified_tone(self, word: str, pos: str, finals: list[str]) -> list[str]:
        finals = self._bu_sandhi(word, finals)
        finals = self._yi_sandhi(word, finals)
        finals = self._neutral_sandhi(word, pos, finals)
        return self._third_tone_sandhi(word, finals)

    def _split_word(self, word: str) -> list[str]:
        """Two parts around the shortest search-mode sub-word (which comes first if at the start)."""
        shortest = sorted(self._cut_for_search(word), key=len)[0]
        if word.find(shortest) == 0:
            return [shortest, word[len(shortest):]]
        return [word[: -len(shortest)], shortest]

    def _neutral_sandhi(self, word: str, pos: str, finals: list[str]) -> list[str]:
        # Reduplicated nouns, verbs and adjectives: 奶奶, 试试.
        for j in range(1, len(word)):
            if word[j] == word[j - 1] and pos[0] in "nva" and word not in NOT_NEUTRAL_TONE_WORDS:
                finals[j] = _with_tone(finals[j], "5")
        ge_index = word.find("个")
        last = word[-1] if word else ""
        if last and last in _NEUTRAL_PARTICLES:
            finals[-1] = _with_tone(finals[-1], "5")
        elif last and last in "的地得":
            finals[-1] = _with_tone(finals[-1], "5")
        elif len(word) == 1 and word in "了着过" and pos in {"ul", "uz", "ug"}:
            finals[-1] = _with_tone(finals[-1], "5")
        elif len(word) > 1 and last in "们子" and pos in {"r", "n"} and word not in NOT_NEUTRAL_TONE_WORDS:
            finals[-1] = _with_tone(finals[-1], "5")
        elif len(word) > 1 and last in "上下里" and pos in {"s", "l", "f"}:  # 桌上, 家里
            finals[-1] = _with_tone(finals[-1], "5")
        elif len(word) > 1 and last in "来去" and word[-2] in "上下进出回过起开":  # 上来, 出去
            finals[-1] = _with_tone(finals[-1], "5")
        elif (ge_index >= 1 and (word[ge_index - 1].isnumeric() or word[ge_index - 1] in _BEFORE_GE)) or word == "个":
            finals[ge_index] = _with_tone(finals[ge_index], "5")  # 个 as a measure word
        elif word in NEUTRAL_TONE_WORDS or word[-2:] in NEUTRAL_TONE_WORDS:
            finals[-1] = _with_tone(finals[-1], "5")

        parts = self._split_word(word)
        split_at = len(parts[0])
        part_finals = [finals[:split_at], finals[split_at:]]
        for part, part_final in zip(parts, part_finals):
            if part in NEUTRAL_TONE_WORDS or part[-2:] in NEUTRAL_TONE_WORDS:
                part_final[-1] = _with_tone(part_final[-1], "5")
        return part_finals[0] + part_finals[1]

    @staticmethod
    def _bu_sandhi(word: str, finals: list[str]) -> list[str]:
        if len(word) == 3 and word[1] == "不":  # 看不懂
            finals[1] = _with_tone(finals[1], "5")
        else:
            for i, char in enumerate(word):
                if char == "不" and i + 1 < len(word) and finals[i + 1][-1] == "4":  # 不怕
                    finals[i] = _with_tone(finals[i], "2")
        return finals

    @staticmethod
    def _yi_sandhi(word: str, finals: list[str]) -> list[str]:
        if "一" in word and all(char.isnumeric() for char in word if char != "一"):
            return finals  # a number: 一零零, 二一零
        if len(word) == 3 and word[1] == "一" and word[0] == word[-1]:  # 看一看
            finals[1] = _with_tone(finals[1], "5")
        elif word.startswith("第一"):  # ordinal
            finals[1] = _with_tone(finals[1], "1")
        else:
            for i, char in enumerate(word):
                if char == "一" and i + 1 < len(word):
                    if finals[i + 1][-1] == "4":  # 一段
                        finals[i] = _with_tone(finals[i], "2")
                    elif word[i + 1] not in _PUNCTUATION:  # 一天; before punctuation it stays yi1
                        finals[i] = _with_tone(finals[i], "4")
        return finals

    def _third_tone_sandhi(self, word: str, finals: list[str]) -> list[str]:
        if len(word) == 2 and _all_third_tone(finals):
            finals[0] = _with_tone(finals[0], "2")
        elif len(word) == 3:
            parts = self._split_word(word)
            if _all_third_tone(finals):
                if len(parts[0]) == 2:  # 蒙古/包
                    finals[0] = _with_tone(finals[0], "2")
                    finals[1] = _with_tone(finals[1], "2")
                elif len(parts[0]) == 1:  # 纸/老虎
                    finals[1] = _with_tone(finals[1], "2")
            else:
                split_at = len(parts[0])
                part_finals = [finals[:split_at], finals[split_at:]]
                for i, sub in enumerate(part_finals):
                    if _all_third_tone(sub) and len(sub) == 2:  # 所有/人
                        sub[0] = _with_tone(sub[0], "2")
                    elif i == 1 and not _all_third_tone(sub) and sub[0][-1] == "3" and part_finals[0][-1][-1] == "3":
                        part_finals[0][-1] = _with_tone(part_finals[0][-1], "2")  # 好/喜欢
                    finals = part_finals[0] + part_finals[1]
        elif len(word) == 4:  # idioms: two pairs
            pairs = [finals[:2], finals[2:]]
            for pair in pairs:
                if _all_third_tone(pair):
                    pair[0] = _with_tone(pair[0], "2")
            finals = pairs[0] + pairs[1]
        return finals

    # --- word merges before the tone rules --------------------------------------------------

    def pre_merge_for_modify(self, words: list[tuple[str, str]]) -> list[Segment]:
        segments = self._merge_bu(words)
        # Upstream wraps these merges in a bare try/except and keeps the input on failure; the
        # 一 merge can index past its output for inputs like "听一听一听".
        segments = _or_unchanged(self._merge_yi, segments)
        segments = self._merge_reduplication(segments)
        segments = _or_unchanged(self._merge_continuous_three_tones, segments)
        segments = _or_unchanged(self._merge_continuous_three_tones_2, segments)
        return self._merge_er(segments)

    @staticmethod
    def _merge_bu(words: list[tuple[str, str]]) -> list[Segment]:
        """Attach a lone 不 to the next word (jieba often leaves it alone)."""
        merged: list[Segment] = []
        last_word = ""
        for word, pos in words:
            if last_word == "不":
                word = last_word + word
            if word != "不":
                merged.append([word, pos])
            last_word = word
        if last_word == "不":
            merged.append([last_word, "d"])
        return merged

    @staticmethod
    def _merge_yi(segments: list[Segment]) -> list[Segment]:
        """"听","一","听" -> "听一听"; then a lone 一 absorbs the next word."""
        merged: list[Segment] = []
        for i, (word, pos) in enumerate(segments):
            if (
                i >= 1
                and word == "一"
                and i + 1 < len(segments)
                and segments[i - 1][0] == segments[i + 1][0]
                and segments[i - 1][1] == "v"
            ):
                # Indexes the output by the input position, as upstream does.
                merged[i - 1][0] = merged[i - 1][0] + "一" + merged[i - 1][0]
            elif i >= 2 and segments[i - 1][0] == "一" and segments[i - 2][0] == word and pos == "v":
                continue
            else:
                merged.append([word, pos])
        result: list[Segment] = []
        for word, pos in merged:
            if result and result[-1][0] == "一":
                result[-1][0] = result[-1][0] + word
            else:
                result.append([word, pos])
        return result

    @staticmethod
    def _merge_reduplication(segments: list[Segment]) -> list[Segment]:
        merged: list[Segment] = []
        for word, pos in segments:
            if merged and word == merged[-1][0]:
                merged[-1][0] = merged[-1][0] + word
            else:
                merged.append([word, pos])
        return merged

    def _merge_third_tones(
        self, segments: list[Segment], joins: Callable[[list[str], list[str]], bool]
    ) -> list[Segment]:
        finals = [self._finals_of(word) for word, _pos in segments]
        merged: list[Segment] = []
        merged_last = [False] * len(segments)
        for i, (word, pos) in enumerate(segments):
            if (
                i >= 1
                and joins(finals[i - 1], finals[i])
                and not merged_last[i - 1]
                # A reduplication is left alone: it needs the neutral-tone rule.
                and not _is_reduplication(segments[i - 1][0])
                and len(segments[i - 1][0]) + len(word) <= 3
            ):
                merged[-1][0] = merged[-1][0] + word
                merged_last[i] = True
            else:
                merged.append([word, pos])
        return merged

    def _merge_continuous_three_tones(self, segments: list[Segment]) -> list[Segment]:
        """Join two all-third-tone words (up to 3 characters together)."""
        return self._merge_third_tones(segments, lambda a, b: _all_third_tone(a) and _all_third_tone(b))

    def _merge_continuous_three_tones_2(self, segments: list[Segment]) -> list[Segment]:
        """Join words where a third tone meets a third tone across the boundary."""
        return self._merge_third_tones(segments, lambda a, b: a[-1][-1] == "3" and b[0][-1] == "3")

    @staticmethod
    def _merge_er(segments: list[Segment]) -> list[Segment]:
        merged: list[Segment] = []
        for i, (word, pos) in enumerate(segments):
            if i >= 1 and word == "儿" and segments[i - 1][0] != "#":
                merged[-1][0] = merged[-1][0] + word
            else:
                merged.append([word, pos])
        return merged


def _or_unchanged(merge: Callable[[list[Segment]], list[Segment]], segments: list[Segment]) -> list[Segment]:
    try:
        return merge(segments)
    except Exception:  # noqa: BLE001 - upstream's bare except; the input is returned unchanged
        return segments
