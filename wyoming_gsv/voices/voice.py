"""A voice folder (`DIR/voices/<id>/`: ref audio, ref.txt, optional voice.yaml) -> Voice."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from ..text.segmentation import CUT_METHODS
from .errors import ModelNotReady, VoiceError
from .languages import LANGUAGE_MODES, advertised_languages
from .models import ModelPaths, unsettled_for
from .params import PARAM_NAMES, VoiceParams
from .check import with_transcript
from .reference import ReferenceInfo, ReferenceProblem, check_reference, find_reference

VOICE_YAML = "voice.yaml"
TRANSCRIPT = "ref.txt"
STYLES_DIR = "styles"
DEFAULT_LANGUAGE = "auto"
VOICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
# File names hold 255 bytes on common file systems; the bundle cache names a file
# "<id>.<32-char key>.safetensors" (and ".<id>.<random>.tmp" while writing it).
MAX_ID_LENGTH = 200

# A transcript of a 3-10 s clip is a sentence or two; a voice.yaml a screenful. Anything far
# longer is not what the file should hold, and is refused before it is read whole.
MAX_TRANSCRIPT_CHARS = 2000
MAX_YAML_BYTES = 64 * 1024

_YAML_KEYS = frozenset(
    {"description", "language", "prompt_language", "languages", "gpt", "sovits", "aux_refs", "text_split", *PARAM_NAMES}
)


@dataclass(frozen=True)
class Style:
    """Another clip + transcript of the same voice (`styles/<name>/`), offered to HA as a speaker."""

    name: str
    folder: Path
    reference: ReferenceInfo
    transcript: str


@dataclass(frozen=True)
class Voice:
    """Everything needed to speak with one voice; paths are absolute."""

    id: str
    folder: Path
    description: str
    language: str  # text language mode of what it speaks, e.g. "en", "zh", "auto"
    prompt_language: str  # language mode of the transcript
    reference: ReferenceInfo
    transcript: str
    aux_references: tuple[ReferenceInfo, ...]
    gpt: Path
    sovits: Path
    params: VoiceParams
    languages: tuple[str, ...]  # codes advertised to Home Assistant
    # Upstream's split method (cut0..cut5) applied to a whole request; None: our sentence splitter.
    text_split: str | None = None
    styles: tuple[Style, ...] = ()  # usable styles, sorted by name
    style_problems: tuple[tuple[str, str], ...] = ()  # (style name, why it is left out)
    style: str | None = None  # the style this object speaks with (None: the main clip)

    @property
    def bundle_id(self) -> str:
        """Names this voice's (or style's) precomputed bundle; '@' never occurs in a voice id."""
        return self.id if self.style is None else f"{self.id}@{self.style}"

    def style_names(self) -> tuple[str, ...]:
        return tuple(style.name for style in self.styles)

    def variants(self) -> tuple["Voice", ...]:
        """The voice itself, then the voice speaking with each of its styles (each has a bundle)."""
        return (self, *(self.with_style(name) for name in self.style_names()))

    def with_style(self, name: str) -> "Voice":
        """The voice speaking with one of its styles' clip and transcript; KeyError if unknown."""
        for style in self.styles:
            if style.name == name:
                return replace(self, reference=style.reference, transcript=style.transcript, aux_references=(), style=name)
        raise KeyError(name)


def load_voice(folder: Path, models: ModelPaths) -> Voice:
    """Read and check one voice folder; raises VoiceError naming the file and the problem."""
    voice_id = folder.name
    if not VOICE_ID_PATTERN.match(voice_id):
        raise VoiceError(voice_id, folder, "folder name must be letters, digits, '_', '-', '.'")
    if len(voice_id) > MAX_ID_LENGTH:
        raise VoiceError(voice_id, folder, f"folder name is longer than {MAX_ID_LENGTH} characters (its cache file name would not fit)")

    _require_inside_roots(voice_id, folder, models, "voice folder")
    if (folder / VOICE_YAML).exists():
        _require_inside_roots(voice_id, folder / VOICE_YAML, models, VOICE_YAML)
    config = _read_yaml(voice_id, folder / VOICE_YAML)
    language = _language(voice_id, folder / VOICE_YAML, config, "language", DEFAULT_LANGUAGE)
    prompt_language = _language(voice_id, folder / VOICE_YAML, config, "prompt_language", language)

    reference, transcript = _reference_and_transcript(voice_id, folder, prompt_language, models)

    aux_entries = config.get("aux_refs") or []
    if not isinstance(aux_entries, list) or not all(isinstance(x, str) for x in aux_entries):
        raise VoiceError(voice_id, folder / VOICE_YAML, "aux_refs must be a list of file names")
    aux = tuple(_checked_reference(voice_id, folder / name, models) for name in aux_entries)

    gpt = _model_file(voice_id, folder, config, "gpt", models)
    sovits = _model_file(voice_id, folder, config, "sovits", models)
    _check_base_models(voice_id, models)

    try:
        params = VoiceParams().with_overrides(**{k: config.get(k) for k in PARAM_NAMES})
    except (TypeError, ValueError) as err:
        raise VoiceError(voice_id, folder / VOICE_YAML, f"bad sampling setting: {err}") from err

    languages = config.get("languages")
    if languages is None:
        languages = advertised_languages(language)
    elif not isinstance(languages, list) or not languages or not all(isinstance(x, str) for x in languages):
        raise VoiceError(voice_id, folder / VOICE_YAML, "languages must be a non-empty list of codes")

    text_split = config.get("text_split")
    if text_split is not None and text_split not in CUT_METHODS:
        raise VoiceError(voice_id, folder / VOICE_YAML, f"text_split {text_split!r} is not one of {', '.join(CUT_METHODS)}")

    styles, style_problems = _load_styles(voice_id, folder / STYLES_DIR, prompt_language, models)
    description = config.get("description") or voice_id
    return Voice(
        id=voice_id,
        folder=folder,
        description=str(description),
        language=language,
        prompt_language=prompt_language,
        reference=reference,
        transcript=transcript,
        aux_references=aux,
        gpt=gpt,
        sovits=sovits,
        params=params,
        languages=tuple(languages),
        styles=styles,
        style_problems=style_problems,
        text_split=text_split,
    )


def _judged(reference: ReferenceInfo, transcript: str, language: str) -> ReferenceInfo:
    if reference.report is None:
        return reference
    return replace(reference, report=with_transcript(reference.report, transcript, language))


def _load_styles(
    voice_id: str, styles_dir: Path, prompt_language: str, models: ModelPaths
) -> tuple[tuple[Style, ...], tuple[tuple[str, str], ...]]:
    """Every `styles/<name>/` with its own clip and transcript; a bad one is left out, not the voice."""
    try:
        folders = sorted(p for p in styles_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # no styles (or an unreadable folder, reported by the missing styles)
        return (), ()
    styles, problems = [], []
    for folder in folders:
        try:
            styles.append(_load_style(voice_id, folder, prompt_language, models))
        except VoiceError as err:
            problems.append((folder.name, f"{err.path}: {err.problem}"))
    return tuple(styles), tuple(problems)


def _load_style(voice_id: str, folder: Path, prompt_language: str, models: ModelPaths) -> Style:
    if not VOICE_ID_PATTERN.match(folder.name):
        raise VoiceError(voice_id, folder, "style name must be letters, digits, '_', '-', '.'")
    if len(voice_id) + 1 + len(folder.name) > MAX_ID_LENGTH:  # its bundle is "<id>@<style>.<key>.safetensors"
        raise VoiceError(
            voice_id, folder, f"voice and style names together are longer than {MAX_ID_LENGTH} characters "
            "(the style's cache file name would not fit)"
        )
    _require_inside_roots(voice_id, folder, models, "style folder")
    reference, transcript = _reference_and_transcript(voice_id, folder, prompt_language, models)
    return Style(folder.name, folder, reference, transcript)


def _reference_and_transcript(
    voice_id: str, folder: Path, prompt_language: str, models: ModelPaths
) -> tuple[ReferenceInfo, str]:
    """A voice's or style's folder: its reference clip (checked, and judged with the transcript)
    and its transcript."""
    reference_path = find_reference(folder)
    if reference_path is None:
        raise VoiceError(voice_id, folder / "ref.wav", "reference clip is missing (ref.wav/.flac/.mp3/.ogg)")
    reference = _checked_reference(voice_id, reference_path, models)
    transcript = _read_transcript(voice_id, folder / TRANSCRIPT, models)
    return _judged(reference, transcript, prompt_language), transcript


def _read_transcript(voice_id: str, path: Path, models: ModelPaths) -> str:
    if not path.is_file():
        raise VoiceError(voice_id, path, "transcript is missing")
    _require_inside_roots(voice_id, path, models, "transcript")
    try:
        transcript = _read_limited(path, 4 * MAX_TRANSCRIPT_CHARS).strip()  # UTF-8: <= 4 bytes a char
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise VoiceError(voice_id, path, f"cannot read transcript ({err})") from err
    if not transcript:
        raise VoiceError(voice_id, path, "transcript is empty")
    if len(transcript) > MAX_TRANSCRIPT_CHARS:
        raise VoiceError(
            voice_id, path, f"transcript is {len(transcript)} characters; the limit is {MAX_TRANSCRIPT_CHARS} "
            "(it should say what the 3-10 s reference clip says)"
        )
    return transcript


def _read_yaml(voice_id: str, path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        config = yaml.load(_read_limited(path, MAX_YAML_BYTES), Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as err:
        raise VoiceError(voice_id, path, f"cannot parse ({err})") from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise VoiceError(voice_id, path, "must be a mapping of settings")
    unknown = sorted(str(key) for key in set(config) - _YAML_KEYS)  # YAML keys may be numbers or booleans
    if unknown:
        # A typo (e.g. "temprature") silently ignored would be worse than a clear refusal.
        raise VoiceError(voice_id, path, f"unknown setting(s) {', '.join(unknown)}")
    return config


class _NoAliasLoader(yaml.SafeLoader):
    """Safe YAML without aliases: a few lines of nested aliases expand to billions of nodes, and
    no voice setting needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", event.start_mark)
        return super().compose_node(parent, index)


def _require_inside_roots(voice_id: str, path: Path, models: ModelPaths, what: str) -> None:
    """Files a voice names (or links to) stay inside the data dir or an --allow-path folder: a
    voice folder copied from elsewhere must not make the server read any file on the machine.
    Checked before the file is opened."""
    try:
        inside = models.root_of(path) is not None
        resolved = path.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise VoiceError(voice_id, path, f"{what} cannot be resolved ({err})") from err
    if not inside:
        raise VoiceError(
            voice_id, path, f"{what} resolves to {resolved}, outside the data dir and every --allow-path folder"
        )


def _read_limited(path: Path, max_bytes: int) -> str:
    """The file's UTF-8 text; ValueError if it is over `max_bytes` (only that much is read)."""
    with open(path, "rb") as handle:
        raw = handle.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"file is over the limit of {max_bytes} bytes")
    return raw.decode("utf-8")


def _language(voice_id: str, path: Path, config: dict[str, Any], key: str, default: str) -> str:
    value = config.get(key, default)
    if not isinstance(value, str) or value not in LANGUAGE_MODES:
        raise VoiceError(
            voice_id, path, f"{key} {value!r} is not one of {', '.join(sorted(LANGUAGE_MODES))}"
        )
    return value


def _checked_reference(voice_id: str, path: Path, models: ModelPaths) -> ReferenceInfo:
    if not path.is_file():
        raise VoiceError(voice_id, path, "reference clip is missing")
    _require_inside_roots(voice_id, path, models, "reference clip")
    try:
        return check_reference(path)
    except ReferenceProblem as err:
        raise VoiceError(voice_id, path, str(err)) from err


def _model_file(voice_id: str, folder: Path, config: dict[str, Any], key: str, models: ModelPaths) -> Path:
    value = config.get(key)
    default = models.gpt if key == "gpt" else models.sovits
    if value is None:
        if default is None:
            looked = models.gpt_looked_for if key == "gpt" else models.sovits_looked_for
            looked_for = ", ".join(str(p) for p in looked) or str(models.data_dir / "models")
            raise VoiceError(
                voice_id,
                models.data_dir / "models",
                f"no {key} weights: looked for {looked_for}; fetch them (--fetch-models VERSION or "
                f"`wyoming-gsv download`) or set {key} in voice.yaml",
            )
        path = default
        waiting = unsettled_for(path, models.data_dir)
        if waiting is not None:
            raise ModelNotReady(voice_id, path, f"{key} weights file {waiting}")
    elif isinstance(value, str) and value and "\0" not in value:
        path = Path(value) if Path(value).is_absolute() else models.data_dir / value
        _require_inside_roots(voice_id, path, models, f"{key} weights")
    else:
        raise VoiceError(voice_id, folder / VOICE_YAML, f"{key} must be a file path relative to the data dir")
    if not path.is_file():
        raise VoiceError(voice_id, path, f"{key} weights file not found")
    if path.stat().st_size == 0:
        raise VoiceError(voice_id, path, f"{key} weights file is empty")
    return path.resolve()


def _check_base_models(voice_id: str, models: ModelPaths) -> None:
    """HuBERT and BERT must be installed (and not still being written) for any voice to speak."""
    problem = models.base_model_problem()
    if problem is None:
        return
    path, what, not_ready = problem
    if not_ready:
        raise ModelNotReady(voice_id, path, what)
    raise VoiceError(
        voice_id, path, f"{what}; fetch the base models (--fetch-models VERSION or `wyoming-gsv download`)"
    )
