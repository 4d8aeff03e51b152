"""--fallback-on-error: the piper voice answers when a GPT-SoVITS voice's engine fails, over real TCP.

The server runs the real engine on the tiny fixture models and the real piper fallback; failures
are a model file that does not load and a speak path made to raise (as out of memory would).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeVoice

from server_client import ha_stream, ha_synthesize, send_and_collect
from serving import serving
from voice_data import make_tiny_data_dir, make_voice, tiny_voice_config
from wyoming_gsv.server.handler import HandlerSettings
from wyoming_gsv.synthesis.fallback import PiperFallback
from wyoming_gsv.synthesis.fallback_on_error import FallbackOnError
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.synthesis.speech import BadRequest, Speech, SynthesisError

SENTENCES = ["Hello there.", "How are you today?", "This is the last one."]
GSV_RATE = 32000  # the tiny v2 fixture's SoVITS rate; checked against the model below


@pytest.fixture(scope="module")
def runtime(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("fallback-on-error"), unpacked_v2)
    settings = RuntimeSettings(data_dir=data_dir, threads=1, max_chars=1000, fallback_on_error=True)
    runtime = Runtime(settings)
    assert runtime.fallback is not None and runtime.fallback.available(), "the [fallback] extra is installed"
    with pytest.MonkeyPatch.context() as patch:
        warmed = []
        patch.setattr(PiperFallback, "warm_up", lambda self: warmed.append(self))
        runtime.warm_up()
    assert warmed == [runtime.fallback]  # it will stand in for failed voices, so it is loaded up front
    runtime.start()
    yield runtime
    runtime.close()


@pytest.fixture
async def port(runtime: Runtime):
    async with serving(runtime, HandlerSettings(samples_per_chunk=1024)) as port:
        yield port


@pytest.fixture
def fallback_texts(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the piper voice is asked to speak (it still speaks them)."""
    texts: list[str] = []
    original = runtime.fallback.synthesize

    def synthesize(text: str, sample_rate: int | None = None):
        texts.append(text.strip())
        return original(text, sample_rate=sample_rate)

    monkeypatch.setattr(runtime.fallback, "synthesize", synthesize)
    return texts


@pytest.fixture
def bad_model_voice(runtime: Runtime, unpacked_v2):
    """A voice whose SoVITS file is garbage: it looks fine until the engine loads it."""
    data_dir = runtime.settings.data_dir
    (data_dir / "models" / "garbage.pth").write_bytes(b"PK\x03\x04 this is not a real checkpoint" * 10)
    make_voice(data_dir, "badmodel", reference=unpacked_v2["ref_wav"], config=tiny_voice_config(sovits="models/garbage.pth"))
    yield "badmodel"
    shutil.rmtree(data_dir / "voices" / "badmodel")
    (data_dir / "models" / "garbage.pth").unlink()


def _warnings(caplog: pytest.LogCaptureFixture, voice: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and repr(voice) in r.getMessage()]


def _speaks(seconds: float, text: str) -> bool:
    words = len(text.split())
    return words / 6.0 < seconds < words / 1.0 + 1.0


def _fail_speaking(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, after: int = 0) -> list[str]:
    """The GPT-SoVITS speak path works for `after` sentences, then raises as out of memory would."""
    spoken: list[str] = []
    original = runtime.backend.speak_features

    def speak_features(*args, **kwargs):
        if len(spoken) >= after:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        spoken.append("gsv")
        return original(*args, **kwargs)

    monkeypatch.setattr(runtime.backend, "speak_features", speak_features)
    return spoken


def test_fixture_voice_rate_is_the_one_expected(runtime: Runtime) -> None:
    voice = runtime.registry.get("tiny")
    assert runtime.backend.model_pair(voice.gpt, voice.sovits).sovits.sampling_rate == GSV_RATE
    assert runtime.backend.output_rate(voice) == GSV_RATE


async def test_broken_model_is_answered_by_the_fallback(port, runtime, bad_model_voice, fallback_texts, caplog) -> None:
    caplog.set_level(logging.WARNING)
    text = "The lights are on."
    result = await ha_synthesize(port, text, voice=bad_model_voice)
    assert result.error is None
    assert (result.rate, result.width, result.channels) == (GSV_RATE, 2, 1)
    assert fallback_texts == [text]
    assert _speaks(result.seconds, text)
    samples = np.frombuffer(result.audio, dtype=np.int16)
    assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 100  # speech, not silence
    warnings = _warnings(caplog, bad_model_voice)
    assert len(warnings) == 1
    assert "voice-unusable" in warnings[0] and "garbage.pth" in warnings[0]
    # The voice is now known to be unusable (left out of describe); it is still answered.
    caplog.clear()
    again = await ha_synthesize(port, text, voice=bad_model_voice)
    assert again.error is None and again.rate == GSV_RATE and again.audio
    assert len(fallback_texts) == 2
    assert len(_warnings(caplog, bad_model_voice)) == 1


async def test_without_the_flag_a_broken_model_is_an_error(port, runtime, bad_model_voice, fallback_texts, monkeypatch) -> None:
    monkeypatch.setattr(runtime.service, "settings", dataclasses.replace(runtime.service.settings, fallback_on_error=False))
    result = await ha_synthesize(port, "The lights are on.", voice=bad_model_voice)
    assert result.error is not None and result.error.code == "voice-unusable"
    assert not result.audio and fallback_texts == []


async def test_unavailable_fallback_leaves_the_error(port, runtime, bad_model_voice, monkeypatch) -> None:
    monkeypatch.setattr(runtime.fallback, "available", lambda: False)  # as without the piper extra
    result = await ha_synthesize(port, "The lights are on.", voice=bad_model_voice)
    assert result.error is not None and result.error.code == "voice-unusable"


async def test_runtime_failure_is_answered_by_the_fallback(port, runtime, fallback_texts, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING)
    _fail_speaking(runtime, monkeypatch)
    text = " ".join(SENTENCES)
    result = await ha_synthesize(port, text, voice="tiny")
    assert result.error is None
    assert (result.rate, result.width, result.channels) == (GSV_RATE, 2, 1)
    assert fallback_texts == SENTENCES  # every sentence once, from the fallback
    assert _speaks(result.seconds, text)
    warnings = _warnings(caplog, "tiny")
    assert len(warnings) == 1
    assert "synthesis-failed" in warnings[0] and "out of memory" in warnings[0]


async def test_failure_mid_stream_hands_over_without_repeating(port, runtime, fallback_texts, monkeypatch, caplog) -> None:
    caplog.set_level(logging.WARNING)
    spoken_by_gsv = _fail_speaking(runtime, monkeypatch, after=1)
    text = " ".join(SENTENCES)
    fragments = [text[i : i + 7] for i in range(0, len(text), 7)]
    result = await ha_stream(port, fragments, voice="tiny")
    assert result.error is None
    assert (result.rate, result.width, result.channels) == (GSV_RATE, 2, 1)
    assert result.events[-1] == "synthesize-stopped"
    assert result.events.count("audio-start") == result.events.count("audio-stop") == len(SENTENCES)
    assert len(spoken_by_gsv) == 1 and fallback_texts == SENTENCES[1:]  # each sentence spoken once
    assert len(_warnings(caplog, "tiny")) == 1


async def test_fallback_failing_too_reports_the_voice_error(port, runtime, monkeypatch) -> None:
    _fail_speaking(runtime, monkeypatch)

    def broken(text: str, sample_rate: int | None = None):
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(runtime.fallback, "synthesize", broken)
    result = await ha_synthesize(port, "Hello there.", voice="tiny")
    assert result.error is not None and result.error.code == "synthesis-failed"
    assert "out of memory" in result.error.text


@pytest.mark.parametrize(
    ("text", "voice", "code"),
    [
        ("", "tiny", "empty-text"),
        ("Hello.", "nobody", "unknown-voice"),
        ("Hello.", "broken", "unknown-voice"),  # a voice folder without a transcript never was a voice
        ("Привет, как дела?", "tiny", "unsupported-language"),
        ("Hello there. " * 80, "tiny", "text-too-long"),
    ],
)
async def test_bad_requests_still_get_their_error(port, fallback_texts, text: str, voice: str, code: str) -> None:
    received = await send_and_collect(port, [Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event()])
    assert [e.type for e in received] == ["error"]
    assert Error.from_event(received[0]).code == code
    assert fallback_texts == []


# ----------------------------------------------------------------------------- the wrapper alone


class _Recorder:
    """A Speaker that records texts; on the text `fail_on` it emits its pieces, then raises `error`."""

    def __init__(self, fail_on: str | None = None, error: Exception | None = None, pieces: int = 1) -> None:
        self.texts: list[str] = []
        self.fail_on = fail_on
        self.error = error or RuntimeError("boom")
        self.pieces = pieces

    def prepare(self) -> None:
        pass

    def speak(self, text, should_stop, emit) -> None:
        self.texts.append(text)
        for _ in range(self.pieces):
            emit(Speech(rate=GSV_RATE, samples=np.ones(10, dtype=np.int16)))
        if text == self.fail_on:
            raise self.error


def test_a_partly_spoken_sentence_is_not_repeated() -> None:
    """Low-latency mode emits a sentence in pieces: if it fails after one went out, the
    fallback takes over from the next sentence rather than saying this one again."""
    gsv, fallback = _Recorder(fail_on="two"), _Recorder()
    speaker = FallbackOnError(gsv, fallback, "tiny")
    heard: list[Speech] = []
    for text in ("one", "two", "three"):
        speaker.prepare()
        speaker.speak(text, lambda: False, heard.append)
    assert gsv.texts == ["one", "two"] and fallback.texts == ["three"]
    assert isinstance(speaker.failure, SynthesisError) and speaker.failure.code == "synthesis-failed"


def test_bad_request_inside_the_engine_is_not_rescued() -> None:
    gsv = _Recorder(fail_on="x", error=BadRequest("no", code="bad-request"), pieces=0)
    speaker = FallbackOnError(gsv, _Recorder(), "tiny")
    with pytest.raises(BadRequest):
        speaker.speak("x", lambda: False, lambda _: None)


def test_cli_sets_passive_openmp_before_torch() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, sys; import wyoming_gsv.__main__; print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["PASSIVE", "False"]
