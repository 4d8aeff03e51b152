"""Text frontend speed: phonemize a ~200-character paragraph (zh, en, mixed).

Baseline: the first (cold) call of each paragraph in a fresh TextFrontend, which includes loading
dictionaries, taggers and the language detector. Then the median of warm calls. Target: < 50 ms.

    .venv/bin/python benchmarks/bench_text.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if (SHARED / "nltk_data").is_dir():
    os.environ.setdefault("NLTK_DATA", str(SHARED / "nltk_data"))
# "auto" may read some hanzi as Japanese, which needs an Open JTalk dictionary
if Path("/var/lib/mecab/dic/open-jtalk/naist-jdic").is_dir():
    os.environ.setdefault("OPEN_JTALK_DICT_DIR", "/var/lib/mecab/dic/open-jtalk/naist-jdic")

from wyoming_gsv.text.frontend import TextFrontend  # noqa: E402

PARAGRAPHS = {
    "zh": (
        "今天是二零二五年十一月二十五日，星期二。客厅温度是二十三点五度，湿度百分之六十。"
        "前门已经打开，请注意安全。晚上七点半有一场音乐会，票价是每张二百五十六元。"
        "明天的天气预报说会下小雨，最高气温十八度，最低气温十二度，记得带伞出门。"
        "厨房的灯还亮着，洗衣机已经完成了工作，垃圾明天早上八点收走。"
        "另外提醒您，下周一上午十点要去医院复查，别忘了带上病历本和医保卡。"
    ),
    "en": (
        "Good evening. The living room is at 23 degrees and the front door is open. "
        "Your meeting with Dr. Smith starts at 7:30 pm tomorrow, and the weather will be "
        "rainy with a high of 18 degrees. Don't forget to take out the trash before 8 am."
    ),
    "mixed": (
        "今天下午三点我们在Apple Store见面，记得带上你的iPhone和MacBook。"
        "这个App的UI设计很漂亮，但是CPU占用有点高，大概百分之三十五。"
        "晚上回家以后打开Netflix看一部电影，然后用Google Home关掉客厅的灯。"
        "明天早上的meeting改到十点，请提前准备好PPT和report。"
        "周末如果天气好，我们可以开车去海边，顺便在Starbucks喝杯咖啡。"
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="warm calls per paragraph")
    args = parser.parse_args()

    frontend = TextFrontend()
    modes = {"zh": "zh", "en": "en", "mixed": "auto"}
    rows = []
    for name, text in PARAGRAPHS.items():
        start = time.perf_counter()
        result = frontend.phonemize(text, modes[name])
        cold_ms = (time.perf_counter() - start) * 1000
        warm, warm_cpu = [], []
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.thread_time()
            frontend.phonemize(text, modes[name])
            warm.append((time.perf_counter() - start) * 1000)
            warm_cpu.append((time.thread_time() - start_cpu) * 1000)
        rows.append(
            (name, modes[name], len(text), len(result.phones), cold_ms, statistics.median(warm), statistics.median(warm_cpu))
        )

    # cpu ms = this thread's CPU time: what the wall time would be on an idle core
    print(
        f"{'text':<6} {'mode':<5} {'chars':>5} {'phones':>6} {'cold ms':>9} {'warm ms':>8} {'warm cpu ms':>11} "
        f"{'cold/warm':>9} {'<50ms':>6}"
    )
    for name, mode, chars, phones, cold_ms, warm_ms, cpu_ms in rows:
        ok = "yes" if warm_ms < 50 else "NO"
        print(
            f"{name:<6} {mode:<5} {chars:>5} {phones:>6} {cold_ms:>9.1f} {warm_ms:>8.1f} {cpu_ms:>11.1f} "
            f"{cold_ms / warm_ms:>9.1f} {ok:>6}"
        )


if __name__ == "__main__":
    main()
