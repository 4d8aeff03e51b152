"""The reference check (voices/check.py) on real encoded files: decoding by content, refusals,
measurements, advice, transcript fit, window proposal, cropping; and `wyoming-gsv voices --check`."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clip_data import encode, speechlike
from voice_data import make_voice
from wyoming_gsv.voices.check import (
    MAX_CLIP_SECONDS,
    MAX_SECONDS,
    MIN_SECONDS,
    ClipError,
    Window,
    check_clip,
    crop_wav,
    decode_clip,
    propose_window,
)

RATE = 32000
TEN_WORDS = "one two three four five six seven eight nine ten eleven twelve"


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG", "MP3"])
def test_every_format_is_recognised_by_content(fmt: str, tmp_path: Path) -> None:
    data = encode(speechlike(4.0), RATE, fmt)
    # A misleading name changes nothing: the bytes decide.
    path = tmp_path / "clip.txt"
    path.write_bytes(data)
    for source in (data, path):
        clip = decode_clip(source)
        assert clip.format.startswith(fmt) or (fmt == "MP3" and clip.format == "MPEG")
        assert clip.sample_rate == RATE and clip.channels == 1
        assert clip.duration == pytest.approx(4.0, abs=0.1)
    report = check_clip(data, TEN_WORDS, "en")
    assert report.verdict == "good", report.summary()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is a text file, not audio\n" * 40, "cannot read audio"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt ", "cannot read audio"),
    ],
)
def test_non_audio_and_empty_input_is_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(ClipError, match=reason):
        decode_clip(data)


def test_a_truncated_file_is_refused() -> None:
    wav = encode(speechlike(4.0), RATE, "WAV")
    with pytest.raises(ClipError, match="truncated"):
        decode_clip(wav[: len(wav) // 2])
    flac = encode(speechlike(4.0), RATE, "FLAC")
    with pytest.raises(ClipError, match="cannot read audio|truncated"):
        decode_clip(flac[: len(flac) // 2])
    mp3 = encode(speechlike(4.0), RATE, "MP3")  # its Xing header says how long it was
    with pytest.raises(ClipError, match="truncated"):
        decode_clip(mp3[: len(mp3) // 2])


def test_an_hour_long_recording_is_refused_without_decoding_it() -> None:
    # An hour of FLAC is small (silence compresses); its header is enough to refuse it.
    hour = encode(np.zeros(16000 * 3600, dtype=np.int16), 16000, "FLAC")
    with pytest.raises(ClipError, match="60.0 minutes long"):
        decode_clip(hour)
    # And a real one just over the limit (the body is decoded only up to the limit).
    longer = np.zeros(int((MAX_CLIP_SECONDS + 5) * 16000), dtype=np.int16)
    with pytest.raises(ClipError, match=f"at most {MAX_CLIP_SECONDS / 60:g} minutes"):
        decode_clip(encode(longer, 16000, "WAV"))


def test_refusals_say_why() -> None:
    low_rate = check_clip(encode(speechlike(4.0, 8000), 8000))
    assert low_rate.refused and "8000 Hz is below 16000 Hz" in low_rate.problems[0]
    short = check_clip(encode(speechlike(2.0), RATE))
    assert short.refused and "2.00 s long" in short.problems[0]
    silent = check_clip(encode(np.zeros(RATE * 4, dtype=np.float32), RATE))
    assert silent.refused and silent.problems == ("clip is silent",)


def test_measurements_and_advice() -> None:
    clean = check_clip(encode(speechlike(5.0, level=0.3), RATE))
    assert clean.verdict == "good" and clean.advice == ()
    assert clean.peak_dbfs == pytest.approx(20 * np.log10(0.3), abs=0.5)
    assert clean.clipped_share == 0.0 and clean.snr_db > 40 and -25 < clean.loudness_dbfs < -10
    assert 0.2 < clean.silence_share < 0.5  # the gaps between syllables

    clipped = check_clip(encode(np.clip(speechlike(5.0, level=2.0), -1, 1), RATE, "WAV", "FLOAT"))
    assert clipped.verdict == "usable" and clipped.clipped_share > 0.01
    assert any("clipped" in advice for advice in clipped.advice)

    noisy = check_clip(encode(speechlike(5.0, noise_dbfs=-30.0), RATE))
    assert noisy.snr_db < 25 and any("background noise" in advice for advice in noisy.advice)

    quiet = check_clip(encode(speechlike(5.0, level=0.01, noise_dbfs=-100.0), RATE))
    assert quiet.loudness_dbfs < -35 and any("quiet" in advice for advice in quiet.advice)

    pausing = check_clip(encode(speechlike(8.0, pauses=((1.0, 6.0),)), RATE))
    assert pausing.silence_share > 0.6 and any("silence" in advice for advice in pausing.advice)

    stereo = check_clip(encode(np.stack([speechlike(4.0)] * 2, axis=1), RATE))
    assert stereo.channels == 2


def test_transcript_must_fit_the_duration() -> None:
    clip = encode(speechlike(5.0), RATE)
    assert check_clip(clip, TEN_WORDS, "en").transcript_fit == "fits"
    too_much = check_clip(clip, " ".join(["word"] * 60), "en")
    assert too_much.transcript_fit == "too-much-text" and too_much.verdict == "usable"
    assert any("exactly what is said" in advice for advice in too_much.advice)
    assert check_clip(clip, "Hi.", "en").transcript_fit == "too-little-text"
    # Chinese counts characters, not words: 20 characters in 5 s fits, 2 does not.
    assert check_clip(clip, "今天天气很好我们一起去公园散步吧你觉得怎么样", "zh").transcript_fit == "fits"
    assert check_clip(clip, "你好", "zh").transcript_fit == "too-little-text"
    assert check_clip(clip, "今天天气很好我们一起去公园散步吧你觉得怎么样", "auto").transcript_fit == "fits"
    assert check_clip(clip).transcript_fit is None


def test_a_long_clip_gets_the_most_speech_dense_window_without_clipping() -> None:
    # 30 s: a little speech at the start, a clipped burst at 5-9 s, dense speech at 14-23 s.
    audio = speechlike(30.0, pauses=((2.0, 5.0), (9.0, 14.0), (23.0, 30.0)))
    audio[int(5.0 * RATE) : int(9.0 * RATE)] *= 4.0
    clip = decode_clip(encode(np.clip(audio, -1, 1), RATE))
    window = propose_window(clip)
    assert window is not None
    assert MIN_SECONDS <= window.seconds <= MAX_SECONDS
    assert window.start >= 9.0 and 13.5 <= window.start <= 14.1 and 22.5 <= window.end <= 23.3
    report = check_clip(clip)
    assert report.refused and report.proposed_window == window
    assert check_clip(clip, window=window).verdict != "refused"
    assert propose_window(decode_clip(encode(speechlike(6.0), RATE))) is None


def test_crop_writes_the_window_as_wav() -> None:
    clip = decode_clip(encode(speechlike(12.0), RATE, "FLAC"))
    data = crop_wav(clip, Window(2.0, 7.5))
    assert data[:4] == b"RIFF"
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and len(audio) == int(5.5 * RATE)
    np.testing.assert_allclose(audio, clip.samples[int(2.0 * RATE) : int(7.5 * RATE), 0], atol=1 / 32767)
    with pytest.raises(ClipError, match="not inside the clip"):
        crop_wav(clip, Window(5.0, 13.0))
    with pytest.raises(ClipError, match="not inside the clip"):
        check_clip(clip, window=Window(4.0, 3.0))


def test_cli_voices_check(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    good = make_voice(data_dir, "good", transcript=TEN_WORDS, config={"language": "en"})
    soundfile.write(str(good / "ref.wav"), speechlike(5.0), RATE)
    make_voice(data_dir, "lowrate", rate=8000)
    clip = tmp_path / "take.flac"
    soundfile.write(str(clip), speechlike(5.0, noise_dbfs=-30.0), RATE, format="FLAC")
    run = [sys.executable, "-m", "wyoming_gsv", "voices", "--data-dir", str(data_dir), "--check"]

    files = subprocess.run(run + [str(clip), "--transcript", TEN_WORDS, "--language", "en"], capture_output=True, text=True)
    assert files.returncode == 0, files.stderr
    assert "usable" in files.stdout and "background noise" in files.stdout

    folders = subprocess.run(run, capture_output=True, text=True)
    assert folders.returncode == 1  # one voice is refused
    lines = dict(line.split("\t", 1) for line in folders.stdout.strip().splitlines() if "\t" in line)
    assert "below 16000 Hz" in folders.stdout and "lowrate" in folders.stdout
    assert "good" in lines and "8000 Hz" not in lines["good"]
