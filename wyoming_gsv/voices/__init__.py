"""Voice folders, reference checks, precomputed voice bundles and their disk cache."""

from .bundle import BUNDLE_FORMAT_VERSION, BundleCache, VoiceBundle, bundle_key
from .errors import ModelNotReady, VoiceError
from .languages import LANGUAGE_MODES, advertised_languages, mode_for_language_code
from .models import ModelPaths, file_identity
from .params import VoiceParams
from .reference import ReferenceInfo, ReferenceProblem, check_reference
from .registry import VoiceRegistry
from .voice import Voice, load_voice

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "BundleCache",
    "LANGUAGE_MODES",
    "ModelNotReady",
    "ModelPaths",
    "ReferenceInfo",
    "ReferenceProblem",
    "Voice",
    "VoiceBundle",
    "VoiceError",
    "VoiceParams",
    "VoiceRegistry",
    "advertised_languages",
    "bundle_key",
    "check_reference",
    "file_identity",
    "load_voice",
    "mode_for_language_code",
]
