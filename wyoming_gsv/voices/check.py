"""Reference clip check: decode by content, measure, judge (good / usable / refused), advise.

The same report is shown by the voice page, printed by `wyoming-gsv voices --check`, and logged
when a voice folder is added by hand; its refusals are the ones that keep a voice out.
"""

from __future__ import annotations

import io
import math
import re
import struct
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

# What a reference clip must be (GPT-SoVITS refuses prompts outside 3-10 s).
MIN_SECONDS = 3.0
MAX_SECONDS = 10.0
MIN_SAMPLE_RATE = 16000
# Longer input is refused before it is decoded (a forgotten recorder, a whole podcast).
MAX_CLIP_SECONDS = 600.0

FRAME_SECONDS = 0.02
# A sample at or above this magnitude (full scale = 1.0) counts as clipped.
CLIP_LEVEL = 0.999
# Whole clip quieter than this peak is silent: about -60 dBFS.
SILENT_PEAK = 1e-3
# A frame is silence when below this absolute level, or this far below the loud frames.
SILENCE_FLOOR_DBFS = -50.0
SILENCE_BELOW_LOUD_DB = 30.0
_LEVEL_FLOOR_DB = -120.0

# Advice thresholds.
CLIPPED_SHARE_WARN = 0.001
QUIET_DBFS = -35.0
LOUD_DBFS = -8.0
SNR_WARN_DB = 25.0
SILENCE_SHARE_WARN = 0.4

# Plausible speaking rates of a transcript, per unit (CJK characters or words) per second of speech.
_RATES: dict[str, tuple[str, float, float]] = {
    "en": ("words", 0.8, 5.0),
    "zh": ("characters", 1.5, 9.0),
    "yue": ("characters", 1.5, 9.0),
    "ja": ("characters", 2.5, 14.0),
    "ko": ("syllables", 2.0, 10.0),
}
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = r"\u3040-\u30ff"
_HANGUL = r"\uac00-\ud7af"
_CJK_CHAR = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


class ClipError(ValueError):
    """The input is not a usable audio clip at all (the message says why, for the user)."""


@dataclass(frozen=True)
class Window:
    """A part of a clip, in seconds."""

    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ClipAudio:
    """Decoded audio: float32 [frames, channels] in [-1, 1]."""

    samples: np.ndarray
    sample_rate: int
    format: str  # what libsndfile recognised: WAV, FLAC, OGG, MP3...

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / float(self.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    def cropped(self, window: Window | None) -> "ClipAudio":
        if window is None:
            return self
        first, last = self._frame_range(window)
        return replace(self, samples=self.samples[first:last])

    def _frame_range(self, window: Window) -> tuple[int, int]:
        if not (math.isfinite(window.start) and math.isfinite(window.end)):
            raise ClipError("the window must be two numbers of seconds")
        if window.start < 0 or window.end > self.duration + 1e-6 or window.end <= window.start:
            raise ClipError(
                f"window {window.start:.2f}-{window.end:.2f} s is not inside the clip (0-{self.duration:.2f} s)"
            )
        return round(window.start * self.sample_rate), round(window.end * self.sample_rate)


@dataclass(frozen=True)
class ClipReport:
    """Measurements and the verdict; `problems` are why it is refused, `advice` how to do better."""

    duration: float
    sample_rate: int
    channels: int
    format: str
    peak_dbfs: float
    clipped_share: float  # share of samples at full scale
    silence_share: float  # share of 20 ms frames that are silence
    loudness_dbfs: float  # RMS level of the non-silent frames
    snr_db: float  # loud frames vs quietest frames: an estimate of background noise
    speech_seconds: float  # from the first to the last non-silent frame
    verdict: str  # good | usable | refused
    problems: tuple[str, ...]
    advice: tuple[str, ...]
    transcript_fit: str | None = None  # fits | too-much-text | too-little-text | None (no transcript)
    proposed_window: Window | None = None  # for clips longer than MAX_SECONDS

    @property
    def refused(self) -> bool:
        return self.verdict == "refused"

    def summary(self) -> str:
        """One line for logs and the CLI."""
        line = (
            f"{self.verdict}: {self.duration:.2f} s, {self.sample_rate} Hz, {self.channels} ch, "
            f"peak {self.peak_dbfs:.1f} dBFS, clipped {self.clipped_share:.2%}, silence {self.silence_share:.0%}, "
            f"loudness {self.loudness_dbfs:.1f} dBFS, SNR ~{self.snr_db:.0f} dB"
        )
        notes = list(self.problems) + list(self.advice)
        return line + (" - " + "; ".join(notes) if notes else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = list(self.problems)
        data["advice"] = list(self.advice)
        return data


# ----------------------------------------------------------------------------- decoding
def decode_clip(source: bytes | Path, *, max_seconds: float = MAX_CLIP_SECONDS) -> ClipAudio:
    """Decode wav/flac/ogg/mp3 by content (never by file name); raises ClipError with a plain reason."""
    if isinstance(source, Path):
        try:
            data = source.read_bytes()
        except OSError as err:
            raise ClipError(f"cannot read the file ({err.strerror or err})") from err
    else:
        data = bytes(source)
    if not data:
        raise ClipError("the file is empty")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            rate, channels, declared, fmt = handle.samplerate, handle.channels, handle.frames, handle.format
            if rate <= 0 or channels <= 0:
                raise ClipError("the audio header is damaged (no sample rate or channels)")
            if declared > max_seconds * rate:
                raise ClipError(_too_long(declared / rate, max_seconds))
            limit = int(max_seconds * rate) + 1
            samples = handle.read(frames=limit, dtype="float32", always_2d=True)
    except ClipError:
        raise
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise ClipError(f"cannot read audio: not a wav, flac, ogg or mp3 file ({_libsndfile_reason(err)})") from err
    if samples.shape[0] >= limit:
        raise ClipError(_too_long(samples.shape[0] / rate, max_seconds))
    if samples.shape[0] == 0:
        raise ClipError("the audio file contains no samples (empty or cut off)")
    if _is_truncated(data, fmt, declared, samples.shape[0], channels):
        raise ClipError("the audio file is truncated (cut off before its end); upload it again")
    if not np.all(np.isfinite(samples)):
        raise ClipError("the audio contains invalid (NaN or infinite) samples")
    return ClipAudio(samples=np.ascontiguousarray(samples), sample_rate=int(rate), format=str(fmt))


def _too_long(seconds: float, max_seconds: float) -> str:
    return f"the recording is {seconds / 60:.1f} minutes long; at most {max_seconds / 60:g} minutes are accepted"


def _libsndfile_reason(err: Exception) -> str:
    # libsndfile names the in-memory object ("Error opening <_io.BytesIO ...>: ..."): keep the reason.
    text = str(err)
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text


def _is_truncated(data: bytes, fmt: str, declared: int, read: int, channels: int) -> bool:
    """libsndfile quietly shortens a cut-off WAV; its header still says how long it was."""
    if fmt == "WAV":
        expected = _wav_data_size(data)
        if expected is not None:
            chunk_start, size = expected
            return size not in (0, 0xFFFFFFFF) and chunk_start + size > len(data)
        return False
    # Compressed formats: a header (or Xing frame count) longer than what decodes.
    return declared > 0 and read < 0.98 * declared and fmt in ("MP3", "MPEG")


def _wav_data_size(data: bytes) -> tuple[int, int] | None:
    """(offset of the data, declared size) of a RIFF WAV's data chunk."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset : offset + 4], struct.unpack("<I", data[offset + 4 : offset + 8])[0]
        if chunk_id == b"data":
            return offset + 8, size
        offset += 8 + size + (size & 1)
    return None


# ----------------------------------------------------------------------------- measuring
@dataclass(frozen=True)
class _Frames:
    levels_db: np.ndarray  # RMS level of each 20 ms frame (mono mix), dBFS
    silent: np.ndarray  # bool per frame
    clipped: np.ndarray  # bool per frame: holds a clipped sample
    frame: int  # samples per frame


def _frames(clip: ClipAudio) -> _Frames:
    frame = max(1, int(round(FRAME_SECONDS * clip.sample_rate)))
    mono = clip.samples.mean(axis=1)
    count = max(1, math.ceil(mono.shape[0] / frame))
    padded = np.zeros(count * frame, dtype=np.float32)
    padded[: mono.shape[0]] = mono
    rms = np.sqrt(np.mean(padded.reshape(count, frame) ** 2, axis=1))
    levels = 20.0 * np.log10(np.maximum(rms, 10 ** (_LEVEL_FLOOR_DB / 20)))
    loud = float(np.percentile(levels, 95))
    threshold = max(SILENCE_FLOOR_DBFS, loud - SILENCE_BELOW_LOUD_DB)
    full = np.abs(clip.samples).max(axis=1) >= CLIP_LEVEL
    clipped_frames = np.zeros(count * frame, dtype=bool)
    clipped_frames[: full.shape[0]] = full
    return _Frames(
        levels_db=levels,
        silent=levels < threshold,
        clipped=clipped_frames.reshape(count, frame).any(axis=1),
        frame=frame,
    )


def check_clip(
    source: bytes | Path | ClipAudio,
    transcript: str | None = None,
    language: str = "auto",
    window: Window | None = None,
) -> ClipReport:
    """Measure a clip (or the window of it that would be kept) and judge it as a reference.

    Raises ClipError only when the input cannot be decoded at all."""
    whole = source if isinstance(source, ClipAudio) else decode_clip(source)
    clip = whole.cropped(window)
    if clip.samples.shape[0] == 0:
        raise ClipError("the window is empty")
    frames = _frames(clip)
    peak = float(np.max(np.abs(clip.samples)))
    peak_db = _db(peak)
    clipped_share = float(np.mean(np.abs(clip.samples) >= CLIP_LEVEL))
    silent = peak < SILENT_PEAK
    silence_share = 1.0 if silent else float(np.mean(frames.silent))
    voiced_levels = frames.levels_db[~frames.silent]
    loudness = _rms_db(voiced_levels) if voiced_levels.size else _LEVEL_FLOOR_DB
    snr = float(np.percentile(frames.levels_db, 95) - np.percentile(frames.levels_db, 10))
    speech_seconds = _speech_seconds(frames, clip.sample_rate)

    problems: list[str] = []
    advice: list[str] = []
    proposed = None
    if clip.sample_rate < MIN_SAMPLE_RATE:
        problems.append(
            f"sample rate {clip.sample_rate} Hz is below {MIN_SAMPLE_RATE} Hz: record again at 16 kHz or more"
        )
    if silent:
        problems.append("clip is silent")
    if clip.duration < MIN_SECONDS or clip.duration > MAX_SECONDS:
        problems.append(f"clip is {clip.duration:.2f} s long; it must be {MIN_SECONDS:g}-{MAX_SECONDS:g} s")
        if clip.duration > MAX_SECONDS and not silent:
            proposed = propose_window(clip)
            if proposed is not None:
                advice.append(f"pick a {MIN_SECONDS:g}-{MAX_SECONDS:g} s window, e.g. {proposed.start:.1f}-{proposed.end:.1f} s")
    if not silent:
        advice += _level_advice(clipped_share, loudness, peak_db, snr, silence_share)

    fit = None
    if transcript is not None and not silent:
        fit, fit_advice = transcript_fit(transcript, language, speech_seconds)
        advice += fit_advice
    verdict = "refused" if problems else ("usable" if advice else "good")
    return ClipReport(
        duration=clip.duration,
        sample_rate=clip.sample_rate,
        channels=clip.channels,
        format=clip.format,
        peak_dbfs=round(peak_db, 2),
        clipped_share=clipped_share,
        silence_share=silence_share,
        loudness_dbfs=round(loudness, 2),
        snr_db=round(snr, 1),
        speech_seconds=speech_seconds,
        verdict=verdict,
        problems=tuple(problems),
        advice=tuple(advice),
        transcript_fit=fit,
        proposed_window=proposed,
    )


def with_transcript(report: ClipReport, transcript: str, language: str) -> ClipReport:
    """The report re-judged with a transcript (a folder's clip is checked before its ref.txt is read)."""
    if report.silence_share >= 1.0 or report.transcript_fit is not None:
        return report
    fit, fit_advice = transcript_fit(transcript, language, report.speech_seconds)
    advice = report.advice + tuple(fit_advice)
    verdict = "refused" if report.problems else ("usable" if advice else "good")
    return replace(report, transcript_fit=fit, advice=advice, verdict=verdict)


def _level_advice(clipped_share: float, loudness: float, peak_db: float, snr: float, silence_share: float) -> list[str]:
    advice = []
    if clipped_share > CLIPPED_SHARE_WARN:
        advice.append(f"{clipped_share:.1%} of the samples are clipped (distorted): record with a lower input level")
    if loudness < QUIET_DBFS:
        advice.append(f"the speech is quiet ({loudness:.0f} dBFS): speak closer to the microphone or raise the level")
    elif loudness > LOUD_DBFS and clipped_share <= CLIPPED_SHARE_WARN:
        advice.append(f"the speech is very loud ({loudness:.0f} dBFS): leave some headroom")
    if snr < SNR_WARN_DB:
        advice.append(f"background noise is high (about {snr:.0f} dB below the speech): record in a quieter place")
    if silence_share > SILENCE_SHARE_WARN:
        advice.append(f"{silence_share:.0%} of the clip is silence: trim long pauses")
    return advice


def _speech_seconds(frames: _Frames, sample_rate: int) -> float:
    voiced = np.flatnonzero(~frames.silent)
    if voiced.size == 0:
        return 0.0
    return (voiced[-1] - voiced[0] + 1) * frames.frame / float(sample_rate)


def _db(value: float) -> float:
    return 20.0 * math.log10(max(value, 10 ** (_LEVEL_FLOOR_DB / 20)))


def _rms_db(levels_db: np.ndarray) -> float:
    return 10.0 * math.log10(float(np.mean(10.0 ** (levels_db / 10.0))))


# ----------------------------------------------------------------------------- transcript
def transcript_fit(transcript: str, language: str, speech_seconds: float) -> tuple[str, list[str]]:
    """Whether so much text can be said in so much speech: (fit, advice)."""
    text = transcript.strip()
    if not text or speech_seconds <= 0:
        return "too-little-text", ["the transcript is empty"] if not text else []
    base, units = _text_units(text, language)
    unit_name, low, high = _RATES[base]
    rate = units / speech_seconds
    if rate > high:
        return "too-much-text", [
            f"the transcript has {units} {unit_name} for {speech_seconds:.1f} s of speech ({rate:.1f}/s, "
            f"more than anyone says): it must be exactly what is said in the clip"
        ]
    if rate < low:
        return "too-little-text", [
            f"the transcript has {units} {unit_name} for {speech_seconds:.1f} s of speech ({rate:.1f}/s): "
            f"it must be everything that is said in the clip"
        ]
    return "fits", []


def _text_units(text: str, language: str) -> tuple[str, int]:
    """(rate table entry, count): CJK characters for zh/ja/yue, syllables for ko, words otherwise."""
    base = language.removeprefix("all_")
    cjk = _CJK_CHAR.findall(text)
    words = _WORD.findall(_CJK_CHAR.sub(" ", text))
    if base.startswith("auto"):
        if len(cjk) >= len(words):
            if any(re.match(f"[{_HANGUL}]", c) for c in cjk):
                base = "ko"
            elif any(re.match(f"[{_KANA}]", c) for c in cjk):
                base = "ja"
            else:
                base = "yue" if base == "auto_yue" else "zh"
        else:
            base = "en"
    if base not in _RATES:
        base = "en"
    if base == "en":
        return base, len(words) + len(cjk)
    # Latin words mixed into CJK text take about two characters' time each.
    return base, len(cjk) + 2 * len(words)


# ----------------------------------------------------------------------------- windows
def propose_window(clip: ClipAudio) -> Window | None:
    """For a clip longer than MAX_SECONDS: the most speech-dense 3-10 s window without clipping,
    its edges moved into pauses where possible (so no word is cut). None for shorter clips."""
    if clip.duration <= MAX_SECONDS:
        return None
    frames = _frames(clip)
    frame_seconds = frames.frame / clip.sample_rate
    width = int(MAX_SECONDS / frame_seconds)
    speech = np.concatenate([[0], np.cumsum(~frames.silent)])
    clipped = np.concatenate([[0], np.cumsum(frames.clipped)])
    starts = np.arange(0, len(frames.silent) - width + 1)
    score = (speech[starts + width] - speech[starts]) - 1000 * (clipped[starts + width] - clipped[starts])
    best = int(starts[int(np.argmax(score))])
    first, last = best, best + width  # frames [first, last)
    # Trim silence at the edges (keeping a little), then step inward to a pause if a word is cut.
    voiced = np.flatnonzero(~frames.silent[first:last])
    if voiced.size == 0:
        return None
    pad = int(0.15 / frame_seconds)
    first, last = max(first, first + voiced[0] - pad), min(last, first + voiced[-1] + 1 + pad)
    min_frames = int(math.ceil(MIN_SECONDS / frame_seconds))
    if first > 0 and not frames.silent[first]:
        pause = _next_pause(frames.silent, first, last, step=1)
        if pause is not None and last - pause >= min_frames:
            first = pause
    if last < len(frames.silent) and not frames.silent[last - 1]:
        pause = _next_pause(frames.silent, last - 1, first, step=-1)
        if pause is not None and pause + 1 - first >= min_frames:
            last = pause + 1
    start = first * frame_seconds
    end = min(last * frame_seconds, clip.duration)
    if end - start < MIN_SECONDS:
        end = min(clip.duration, start + MIN_SECONDS)
    return Window(round(start, 3), round(end, 3))


def _next_pause(silent: np.ndarray, begin: int, stop: int, step: int) -> int | None:
    """The first silent frame from `begin` towards `stop`."""
    for index in range(begin, stop, step):
        if silent[index]:
            return index
    return None


def crop_wav(clip: ClipAudio, window: Window | None = None) -> bytes:
    """The clip (or its window) as 16-bit WAV bytes, at its own rate and channels."""
    part = clip.cropped(window)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(part.samples, -1.0, 1.0), part.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()
