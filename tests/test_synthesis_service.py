"""TtsService: voice resolution, language rules and the fallback-voice hook (no models needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from voice_data import make_voice
from wyoming_gsv.synthesis.engine import Engine
from wyoming_gsv.synthesis.service import ServiceSettings, TtsService
from wyoming_gsv.synthesis.speech import BadRequest, Speech
from wyoming_gsv.text.sentences import SentenceSplitter
from wyoming_gsv.voices import ModelPaths, VoiceRegistry


class RecordingFactory:
    def __init__(self) -> None:
        self.requests: list[tuple[str, object, str]] = []

    def speaker(self, voice, params, mode):
        self.requests.append((voice.id, params, mode))
        return object()


@dataclass
class FakeFallbackInfo:
    name: str = "fallback-voice"
    description: str = "Fallback"
    languages: tuple[str, ...] = ("en", "en_US")
    sample_rate: int = 22050
    attribution_name: str = "piper"
    attribution_url: str = "https://example.invalid"


class FakeFallback:
    def __init__(self, installed: bool = True) -> None:
        self.installed = installed
        self.texts: list[str] = []

    def available(self) -> bool:
        return self.installed

    def voice_info(self) -> FakeFallbackInfo:
        return FakeFallbackInfo()

    def synthesize(self, text: str, sample_rate: int | None = None):
        self.texts.append(text)
        return 22050, np.ones(100, dtype=np.int16)


def _service(data_dir: Path, fallback=None, **settings) -> tuple[TtsService, RecordingFactory]:
    factory = RecordingFactory()
    service = TtsService(
        VoiceRegistry(ModelPaths.resolve(data_dir)),
        factory,
        Engine(),
        splitter_factory=lambda mode: SentenceSplitter(),
        settings=ServiceSettings(**settings),
        fallback=fallback,
    )
    return service, factory


async def test_fallback_only_when_no_voice(data_dir: Path) -> None:
    fallback = FakeFallback()
    service, _ = _service(data_dir, fallback)
    assert [v.name for v in service.voices()] == ["fallback-voice"]
    assert service.voices()[0].languages == ("en", "en_US")
    make_voice(data_dir, "real", config={"language": "zh"})
    assert [v.name for v in service.voices()] == ["real"]


async def test_no_voice_and_no_fallback_is_a_clear_error(data_dir: Path) -> None:
    service, _ = _service(data_dir, FakeFallback(installed=False))
    # HA cannot set up a TTS entity without a voice that has a language: a placeholder is listed.
    (placeholder,) = service.voices()
    assert placeholder.languages and "voices" in placeholder.description
    for name in (None, placeholder.name):
        with pytest.raises(BadRequest) as info:
            service.open_session(name)
        assert info.value.code == "no-voice"


async def test_fallback_speaks_through_the_engine(data_dir: Path) -> None:
    fallback = FakeFallback()
    service, _ = _service(data_dir, fallback)
    service.engine.start()
    try:
        session = service.open_session("fallback-voice")
        session.feed("Hello there. Bye.")
        session.finish()
        speeches: list[Speech] = [s async for s in session.speeches()]
    finally:
        service.engine.close()
    assert fallback.texts == ["Hello there.", "Bye."]
    assert all(s.rate == 22050 for s in speeches)


async def test_voice_resolution_and_languages(data_dir: Path) -> None:
    make_voice(data_dir, "auto-voice")
    make_voice(data_dir, "en-voice", config={"language": "en", "top_k": 3})
    service, factory = _service(data_dir, default_voice="en-voice", param_overrides={"speed": 1.2})
    service.open_session(None)
    service.open_session("auto-voice", "ja_JP")
    service.open_session("en-voice", "en-US")
    (vid0, params0, mode0), (vid1, _, mode1), (_, _, mode2) = factory.requests
    assert (vid0, mode0) == ("en-voice", "en")
    assert params0.top_k == 3 and params0.speed == 1.2  # voice default + override
    assert (vid1, mode1) == ("auto-voice", "ja")
    assert mode2 == "en"
    for name, language, code in [("nobody", None, "unknown-voice"), ("en-voice", "zh", "unsupported-language"),
                                 ("auto-voice", "xx", "unsupported-language")]:
        with pytest.raises(BadRequest) as info:
            service.open_session(name, language)
        assert info.value.code == code
