"""The product: voices to list, and requests (voice + text stream) turned into speech sessions."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from ..text.segmentation import OfficialSplitter
from ..voices import Voice, VoiceParams, VoiceRegistry, mode_for_language_code
from .engine import Engine
from .fallback_on_error import FallbackOnError
from .session import DEFAULT_MAX_CHARS, SentenceSplitter, SpeechSession
from .speech import BadRequest, Emit, Speaker, Speech, ShouldStop

_LOGGER = logging.getLogger(__name__)


class SpeakerFactory(Protocol):
    """Binds a voice and its settings to the models (the GPT-SoVITS backend implements this)."""

    def speaker(self, voice: Voice, params: VoiceParams, mode: str) -> Speaker: ...

    def output_rate(self, voice: Voice | None) -> int:
        """The sample rate of a voice's audio (None: a voice whose files are unusable)."""
        ...


class FallbackVoice(Protocol):
    """The piper voice (synthesis/fallback.py): spoken when no GPT-SoVITS voice exists, and with
    fallback_on_error in place of a voice that fails."""

    def available(self) -> bool: ...

    def voice_info(self) -> Any: ...  # .name, .description, .languages, .sample_rate, .attribution_*

    def synthesize(self, text: str, sample_rate: int | None = None) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class VoiceListing:
    """One voice as the server advertises it."""

    name: str
    description: str
    languages: tuple[str, ...]
    attribution_name: str = "GPT-SoVITS voice clone"
    attribution_url: str = "https://github.com/RVC-Boss/GPT-SoVITS"
    speakers: tuple[str, ...] = ()  # the voice's styles (HA's `speaker` option)


# Advertised when nothing else can speak: Home Assistant fails to set up a TTS entity that offers
# no voice with a language, so there is always one; using it gets a clear "no-voice" error.
PLACEHOLDER_VOICE = VoiceListing(
    name="no-voice-installed",
    description="No voice installed yet: add one under DATA_DIR/voices/",
    languages=("en", "en_US"),
)


@dataclass(frozen=True)
class ServiceSettings:
    max_chars: int = DEFAULT_MAX_CHARS  # text waiting to be spoken, per request
    default_voice: str | None = None  # voice used when a request names none
    param_overrides: dict[str, Any] = field(default_factory=dict)  # e.g. from CLI flags
    # A GPT-SoVITS voice whose engine fails (broken model, out of memory) is answered by the
    # fallback voice, at the voice's sample rate, instead of an error.
    fallback_on_error: bool = False


class TtsService:
    """Resolves voices, checks requests, and opens sessions on the engine."""

    def __init__(
        self,
        registry: VoiceRegistry,
        speakers: SpeakerFactory,
        engine: Engine,
        splitter_factory: Callable[[str], SentenceSplitter],
        settings: ServiceSettings | None = None,
        fallback: FallbackVoice | None = None,
    ) -> None:
        self.registry = registry
        self.speakers = speakers
        self.engine = engine
        self.splitter_factory = splitter_factory
        self.settings = settings or ServiceSettings()
        self.fallback = fallback
        self._unusable: dict[str, str] = {}  # voice id -> why its files do not load
        self._usable: bool | None = None  # whether the last listing had a voice that can speak

    def voice_unusable(self, voice_id: str, problem: str) -> None:
        """The engine could not load a voice's files: leave it out until they change."""
        self._unusable[voice_id] = problem
        self.registry.mark_broken(voice_id, problem)

    def voices(self) -> list[VoiceListing]:
        """Installed voices, rescanned now; the fallback voice (or a placeholder) only when there is no other."""
        listings = [
            VoiceListing(v.id, v.description, v.languages, speakers=v.style_names()) for v in self.registry.scan()
        ]
        if not listings and self.fallback is not None and self.fallback.available():
            info = self.fallback.voice_info()
            listings.append(
                VoiceListing(info.name, info.description, tuple(info.languages), info.attribution_name, info.attribution_url)
            )
        self._note_usable(bool(listings))
        return listings or [PLACEHOLDER_VOICE]

    def _note_usable(self, usable: bool) -> None:
        """One log line when the server goes from some usable voice to none (and back)."""
        if usable == self._usable:
            return
        before, self._usable = self._usable, usable
        if usable:
            if before is not None:
                _LOGGER.info("A usable voice is available again")
            return
        problems = self.registry.problems()
        why = "; ".join(f"{vid}: {problem}" for vid, problem in sorted(problems.items())[:3]) or (
            f"no voice folder in {self.registry.voices_dir}"
        )
        _LOGGER.warning(
            "No usable voice (%s). Home Assistant is offered the placeholder %r, which cannot speak, and "
            "the health check fails. Add a voice folder (ref.wav + ref.txt) under %s and the base models "
            "(--fetch-models VERSION or `wyoming-gsv download`), or turn the piper fallback voice back on",
            why, PLACEHOLDER_VOICE.name, self.registry.voices_dir,
        )

    def open_session(
        self,
        voice_name: str | None = None,
        language: str | None = None,
        speaker: str | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> SpeechSession:
        """A session for this voice (and style: `speaker`), with sampling settings `overrides` on
        top of the voice's and the command line's (the voice page's preview); raises BadRequest
        (unknown voice or speaker, language it cannot speak, bad setting)."""
        bound, mode, voice = self._resolve(voice_name, language, speaker, overrides or {})
        text_split = voice.text_split if voice is not None else None
        splitter = OfficialSplitter(mode, text_split) if text_split else self.splitter_factory(mode)
        return SpeechSession(
            self.engine,
            bound,
            splitter,
            language=mode,
            max_chars=self.settings.max_chars,
        )

    def _resolve(
        self, voice_name: str | None, language: str | None, style: str | None, overrides: Mapping[str, Any]
    ) -> tuple[Speaker, str, Voice | None]:
        name = voice_name or self.settings.default_voice
        voice = self.registry.get(name) if name else self._first_voice()
        if voice is None:
            rescue = self._rescue_unusable(name)
            if rescue is not None:
                return rescue, _language_mode(language, "auto", ("en", "en_US")), None
            fallback = self._fallback_for(name)
            if fallback is not None and style:
                raise BadRequest(f"unknown speaker {style!r}: the fallback voice has no speakers", code="unknown-speaker")
            if fallback is not None:
                return fallback, _language_mode(language, "en", ("en", "en_US")), None
            if name and name != PLACEHOLDER_VOICE.name:
                raise BadRequest(f"unknown voice {name!r}", code="unknown-voice")
            raise BadRequest(f"no voice is installed: {PLACEHOLDER_VOICE.description}", code="no-voice")
        if style:
            voice = _styled(voice, style)
        mode = _language_mode(language, voice.language, voice.languages)
        try:
            params = voice.params.with_overrides(**self.settings.param_overrides).with_overrides(**overrides)
        except (TypeError, ValueError) as err:
            raise BadRequest(f"bad sampling setting: {err}", code="bad-setting") from err
        speaker = self.speakers.speaker(voice, params, mode)
        if self._rescue_available():
            assert self.fallback is not None
            rescue = FallbackSpeaker(self.fallback, self.speakers.output_rate(voice))
            speaker = FallbackOnError(speaker, rescue, voice.id)
        return speaker, mode, voice

    def _first_voice(self) -> Voice | None:
        voices = self.registry.scan()
        return voices[0] if voices else None

    def _fallback_for(self, name: str | None) -> Speaker | None:
        if self.fallback is None or not self.fallback.available():
            return None
        info = self.fallback.voice_info()
        if name not in (None, info.name) or (name is None and self.registry.scan()):
            return None
        return FallbackSpeaker(self.fallback)

    def _rescue_available(self) -> bool:
        return self.settings.fallback_on_error and self.fallback is not None and self.fallback.available()

    def _rescue_unusable(self, name: str | None) -> Speaker | None:
        """With fallback-on-error, a voice whose files failed to load (and have not changed since)
        is answered by the fallback voice."""
        if not name or not self._rescue_available():
            return None
        problem = self._unusable.get(name)
        if problem is None or self.registry.problems().get(name) != problem:
            return None
        assert self.fallback is not None
        _LOGGER.warning("Voice %r is unusable (%s); the fallback voice speaks instead", name, problem)
        return FallbackSpeaker(self.fallback, self.speakers.output_rate(None))


def _styled(voice: Voice, style: str) -> Voice:
    try:
        return voice.with_style(style)
    except KeyError:
        known = ", ".join(voice.style_names()) or "none"
        raise BadRequest(
            f"unknown speaker {style!r} for voice {voice.id!r} (its speakers: {known})", code="unknown-speaker"
        ) from None


def _language_mode(requested: str | None, voice_mode: str, advertised: tuple[str, ...]) -> str:
    """HA never sends a language; other clients may. It must be one the voice speaks."""
    if not requested:
        return voice_mode
    mode = mode_for_language_code(requested)
    if mode is None:
        raise BadRequest(f"language {requested!r} is not supported", code="unsupported-language")
    if voice_mode.startswith("auto"):
        return mode
    advertised_bases = {mode_for_language_code(code) for code in advertised}
    if mode not in advertised_bases and mode != voice_mode:
        raise BadRequest(
            f"this voice speaks {', '.join(advertised)}, not {requested!r}", code="unsupported-language"
        )
    return voice_mode


class FallbackSpeaker:
    """Adapts the piper fallback voice to the engine's Speaker interface; `sample_rate`
    resamples it (to the rate of the GPT-SoVITS voice it stands in for)."""

    def __init__(self, fallback: FallbackVoice, sample_rate: int | None = None) -> None:
        self.fallback = fallback
        self.sample_rate = sample_rate

    def prepare(self) -> None:
        pass

    def speak(self, text: str, should_stop: ShouldStop, emit: Emit) -> None:
        if should_stop():
            return
        rate, samples = self.fallback.synthesize(text, sample_rate=self.sample_rate)
        emit(Speech(rate=rate, samples=samples))
