"""The `info` answer to `describe`: one installed TTS program and every installed voice."""

from __future__ import annotations

from dataclasses import dataclass

from wyoming.info import Attribution, Info, TtsProgram, TtsVoice, TtsVoiceSpeaker

from .. import __version__
from ..synthesis.service import VoiceListing

GSV_ATTRIBUTION = Attribution(name="GPT-SoVITS (RVC-Boss)", url="https://github.com/RVC-Boss/GPT-SoVITS")


@dataclass(frozen=True)
class ProgramSettings:
    name: str = "gsv"
    description: str = "GPT-SoVITS voice cloning text to speech"
    streaming: bool = True  # advertise supports_synthesize_streaming


def build_info(program: ProgramSettings, voices: list[VoiceListing]) -> Info:
    """Cheap to build; done on every describe so voices added on disk show up at once."""
    tts_voices = [
        TtsVoice(
            name=voice.name,
            description=voice.description,
            attribution=Attribution(name=voice.attribution_name, url=voice.attribution_url),
            installed=True,
            version=None,
            languages=list(voice.languages),
            speakers=[TtsVoiceSpeaker(name=name) for name in voice.speakers] or None,
        )
        for voice in voices
    ]
    return Info(
        tts=[
            TtsProgram(
                name=program.name,
                description=program.description,
                attribution=GSV_ATTRIBUTION,
                installed=True,
                version=__version__,
                voices=tts_voices,
                supports_synthesize_streaming=program.streaming,
            )
        ]
    )
