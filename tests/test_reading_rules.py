"""Readings of what Home Assistant says (wyoming_gsv/text/reading_rules.py), phrase by phrase.

Where a phrase has more than one reading, the common one is chosen and the choice is written next
to it. End-to-end tests check that the frontend applies the rules (and that without them it is
upstream's reading).
"""

from __future__ import annotations

import pytest

from wyoming_gsv.text import reading_rules
from wyoming_gsv.text.frontend import TextFrontend
from wyoming_gsv.text.reading_rules import CHINESE_RULES, ENGLISH_RULES, read_chinese, read_english

ENGLISH = [
    # 12-hour clock
    ("The alarm is set for 7:30 pm.", "The alarm is set for seven thirty P M."),
    ("Wake me at 7:30pm tomorrow", "Wake me at seven thirty P M tomorrow"),
    ("at 7 PM", "at seven P M"),
    ("at 6:45 a.m. tomorrow", "at six forty-five A M tomorrow"),  # the abbreviation's dots go
    ("at 12:00 am", "at twelve A M"),  # "twelve A M", not "midnight": say what is written
    ("at 9:05 am", "at nine oh five A M"),
    ("at 7.30pm", "at seven thirty P M"),  # the British dot
    ("I am 5 ambulances away", "I am 5 ambulances away"),  # "am" inside a word is no time
    # 24-hour clock
    ("Dinner at 19:45", "Dinner at nineteen forty-five"),
    ("Leave at 07:05", "Leave at seven oh five"),
    ("The shop opens at 9:00", "The shop opens at nine o'clock"),
    ("Lights off at 22:00", "Lights off at twenty-two hundred"),  # hours after noon: "hundred"
    ("Reset at 00:00", "Reset at midnight"),
    ("Backup at 00:30", "Backup at zero thirty"),
    ("Opened at 10:02:45.", "Opened at ten oh two and forty-five seconds."),
    ("The timer has 1:30 left", "The timer has one thirty left"),  # h:mm, as a clock: the common case
    ("Score was 3:2", "Score was 3:2"),  # not a time (one-digit minutes): left to upstream
    ("It is noon", "It is noon"),
    # dates
    ("On 2026-11-29 the bin is collected", "On November twenty-ninth, twenty twenty-six the bin is collected"),
    ("Due 2005-01-02", "Due January second, two thousand five"),
    # Day/month order is unknown: the numbers are read as numbers.
    ("Due 29/11/2026", "Due 29 11 2026"),
    ("Nov 29", "November twenty-ninth"),
    ("November 29th", "November twenty-ninth"),
    ("Sept. 3", "September third"),
    ("Mon, Nov 29", "Monday, November twenty-ninth"),
    ("Open Tue. and Thurs", "Open Tuesday. and Thursday"),
    ("Every Sept", "Every September"),
    ("Meeting on 3 March 2026", "Meeting on the third of March 2026"),
    ("The 29th Nov. is free", "The twenty-ninth of November. is free"),
    ("Plant 3 May seedlings", "Plant the third of May seedlings"),  # day-month wins: "3 May" is a date
    ("Wed 3 Jan", "Wednesday the third of January"),
    ("Sat, Jan 5", "Saturday, January fifth"),
    ("The Sun is up and I sat on the mat", "The Sun is up and I sat on the mat"),  # words stay words
    # temperatures
    ("It is 21.5 °C inside", "It is twenty-one point five degrees celsius inside"),
    ("Set to 70°F", "Set to seventy degrees fahrenheit"),
    ("Low of -3 °C", "Low of minus three degrees celsius"),  # "minus", as forecasts say
    ("Exactly 1 °C", "Exactly one degree celsius"),
    ("Wind from 270°", "Wind from two hundred seventy degrees"),
    # percentages
    ("Humidity is 45%", "Humidity is forty-five percent"),
    ("Battery 12.5 %", "Battery twelve point five percent"),
    # units
    ("Wind 12 km/h", "Wind twelve kilometers per hour"),
    ("Gusts of 5 mph", "Gusts of five miles per hour"),
    ("Used 3.5kWh today", "Used three point five kilowatt hours today"),
    ("Drawing 1500 W", "Drawing one thousand five hundred watts"),  # a quantity, not "fifteen hundred"
    ("Solar 2 kW", "Solar two kilowatts"),
    ("Mains 230 V at 16 A", "Mains two hundred thirty volts at sixteen amps"),
    ("Pressure 1013 hPa or 1000 mbar", "Pressure one thousand thirteen hectopascals or one thousand millibars"),
    ("Light 300 lx", "Light three hundred lux"),
    ("Noise 45 dB", "Noise forty-five decibels"),
    ("CO2 400 ppm", "CO2 four hundred parts per million"),
    ("PM2.5 35 µg/m³ and 12 μg/m³", "PM2.5 thirty-five micrograms per cubic meter and twelve micrograms per cubic meter"),
    ("Rain 5 mm", "Rain five millimeters"),
    ("Snow 3 cm", "Snow three centimeters"),
    ("1 m away", "one meter away"),
    ("2 km left", "two kilometers left"),
    ("Weight 70 kg", "Weight seventy kilograms"),
    ("Add 5 g of salt", "Add five grams of salt"),
    ("Tank 1.5 L", "Tank one point five liters"),  # only exactly one is singular
    ("Dose 250 mL", "Dose two hundred fifty milliliters"),
    ("Pressure 1,013 hPa", "Pressure one thousand thirteen hectopascals"),
    ("Back in 5 min", "Back in five minutes"),
    ("Runs for 2 h and 30 s", "Runs for two hours and thirty seconds"),
    ("Delay 250 ms", "Delay two hundred fifty milliseconds"),
    # money
    ("That is $12.50", "That is twelve dollars and fifty cents"),
    ("Only €3", "Only three euros"),
    ("Costs £1.20", "Costs one pound and twenty pence"),
    ("Costs 12,50 €", "Costs twelve euros and fifty cents"),  # a decimal comma before a trailing symbol
    ("Just $0.99", "Just ninety-nine cents"),
    ("Total $1,250.50", "Total one thousand two hundred fifty dollars and fifty cents"),
    # ranges, decimals, negatives
    ("Takes 3-5 minutes", "Takes 3 to 5 minutes"),  # the numbers are then read by upstream
    ("Between 10–12", "Between 10 to 12"),
    ("3 - 5", "3 - 5"),  # spaced ASCII: arithmetic, upstream's "minus"
    ("It is -3 now", "It is minus 3 now"),
    ("COVID-19 rules", "COVID-19 rules"),
    ("There are 1,234 cases", "There are one thousand two hundred thirty-four cases"),  # not "twelve thirty-four"
    ("Worth 3,000,000.5", "Worth three million point five"),
    # digit by digit
    ("Update to 2.0.1", "Update to two point zero point one"),
    ("Version v1.2", "Version version one point two"),
    ("Call 555-123-4567", "Call five five five, one two three, four five six seven"),
    ("Call +1 555 123 4567", "Call plus one, five five five, one two three, four five six seven"),
    ("Call (555) 123-4567", "Call five five five, one two three, four five six seven"),
    ("Code 0800123456", "Code zero eight zero zero one two three four five six"),
    ("Agent 007", "Agent zero zero seven"),
    ("Number 13812345678", "Number one three eight one two three four five six seven eight"),
    # left to upstream (which reads them well)
    ("The 1st and 22nd", "The 1st and 22nd"),
    ("In 1999 there were 42", "In 1999 there were 42"),
]

CHINESE = [
    ("室温21.5°C", "室温二十一点五摄氏度"),
    ("最低-3℃", "最低零下三摄氏度"),  # 零下, as weather reports say (upstream's number reading: 负三)
    ("最低零下-3℃", "最低零下三摄氏度"),
    ("外面70°F", "外面华氏七十度"),
    ("风向270°", "风向二百七十度"),
    ("湿度45%", "湿度百分之四十五"),
    ("电量12.5 %", "电量百分之十二点五"),
    ("风速12km/h", "风速十二千米每小时"),  # 千米 as upstream reads km
    ("功率1500W", "功率一千五百瓦"),  # upstream reads 1500 digit by digit before an English unit
    ("今天用了3kWh", "今天用了三千瓦时"),
    ("电压230V，电流16A", "电压二百三十伏，电流十六安"),
    ("气压1013hPa", "气压一千零一十三百帕"),
    ("光照300lx", "光照三百勒克斯"),
    ("噪音45dB", "噪音四十五分贝"),
    ("PM2.5是35µg/m³", "PM2.5是三十五微克每立方米"),
    ("降雨5mm", "降雨五毫米"),
    ("买了3kg苹果和500g葡萄", "买了三千克苹果和五百克葡萄"),
    ("水箱2L", "水箱二升"),
    ("电费¥256.80", "电费二百五十六点八零元"),  # ¥ is the yuan to a Chinese reader
    ("花了$5", "花了五美元"),
    # Clock times are left to upstream, which reads them the usual way.
    ("闹钟7:30响", "闹钟7:30响"),
]


@pytest.mark.parametrize(("text", "reading"), ENGLISH)
def test_english_reading(text: str, reading: str) -> None:
    assert read_english(text) == reading


@pytest.mark.parametrize(("text", "reading"), CHINESE)
def test_chinese_reading(text: str, reading: str) -> None:
    assert read_chinese(text) == reading


def test_rules_are_idempotent() -> None:
    """Chinese rules run before the language split and again per segment: a second pass changes nothing."""
    assert [read_english(reading) for _, reading in ENGLISH] == [reading for _, reading in ENGLISH]
    assert [read_chinese(reading) for _, reading in CHINESE] == [reading for _, reading in CHINESE]


@pytest.mark.parametrize("rule", ENGLISH_RULES + CHINESE_RULES, ids=lambda rule: rule.name)
def test_every_rule_has_a_phrase(rule: reading_rules.Rule) -> None:
    phrases = [text for text, _ in (ENGLISH if rule in ENGLISH_RULES else CHINESE)]
    assert any(rule.apply(text) != text for text in phrases), f"no test phrase exercises rule {rule.name!r}"


# --- through the frontend ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def frontend() -> TextFrontend:
    return TextFrontend()


def test_frontend_reads_clock_times(frontend: TextFrontend) -> None:
    result = frontend.phonemize("The alarm is set for 7:30 pm.", "en")
    assert result.norm_text == "The alarm is set for seven thirty P M."
    assert result.phones[-6:] == ["D", "IY2", "P", "IY1", "EH1", "M", "."][-6:]


def test_frontend_without_rules_is_upstream(frontend: TextFrontend) -> None:
    upstream = TextFrontend(reading_rules=False)
    assert upstream.phonemize("It's 7:30 pm.", "en").norm_text == "It's seven thirty a.m. pm."
    assert frontend.phonemize("It's 7:30 pm.", "en").norm_text == "It's seven thirty P M."


def test_zh_mode_keeps_units_chinese(frontend: TextFrontend) -> None:
    """Before the rules, zh mode handed "°C" and "km/h" to the English frontend."""
    result = frontend.phonemize("温度21.5°C，风速12km/h。", "zh")
    assert [s.lang for s in result.segments] == ["zh"]
    assert result.norm_text == "温度二十一点五摄氏度,风速十二千米每小时."


# Readings upstream's normalisers already get right, checked through the frontend so that a change
# there (or a new rule) that breaks them is seen.
UPSTREAM_READINGS = [
    ("en", "The 1st and 22nd.", "The first and twenty-second."),
    ("en", "It is 0.5 or 21.75 now.", "It is zero point five or twenty-one point seven five now."),
    ("en", "Built in 1999.", "Built in nineteen ninety-nine."),
    ("en", "It is noon.", "It is noon."),
    # Chinese clock times: 7:30 is read 七点半, the everyday form (the 七点三十分 is the
    # formal one); other minutes are read with 分.
    ("zh", "闹钟7:30响。", "闹钟七点半响."),
    ("zh", "现在是19:05。", "现在是十九点零五分."),
    ("all_zh", "湿度45%。", "湿度百分之四十五."),
]


@pytest.mark.parametrize(("mode", "text", "norm_text"), UPSTREAM_READINGS)
def test_readings_left_to_upstream(frontend: TextFrontend, mode: str, text: str, norm_text: str) -> None:
    assert frontend.phonemize(text, mode).norm_text == norm_text


def test_english_segment_inside_auto_mode(frontend: TextFrontend) -> None:
    result = frontend.phonemize("Dinner is at 19:45 tonight.", "auto")
    assert "nineteen forty-five" in result.norm_text
