"""Creating, editing, renaming and deleting voice folders (and their styles), atomically.

Every write is staged in a hidden folder beside its destination (same file system; the registry
skips names starting with '.') and moved into place with one rename, so a reader sees either the
old voice or the new one, never half of it. Nothing is written outside the data dir, and an
existing voice is only replaced when the caller says so.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..gsv.checkpoints import load_gpt_checkpoint, load_sovits_checkpoint
from ..gsv.errors import ModelFileError
from .check import ClipError, Window, check_clip, crop_wav, decode_clip
from .languages import LANGUAGE_MODES
from .params import PARAM_NAMES, VoiceParams
from .voice import DEFAULT_LANGUAGE, STYLES_DIR, TRANSCRIPT, VOICE_ID_PATTERN, VOICE_YAML

_LOGGER = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # per uploaded file (clip, weights)
MAX_ID_LENGTH = 64
MAX_TRANSCRIPT_CHARS = 1000
MAX_DESCRIPTION_CHARS = 200
MAX_AUX_CLIPS = 8
REFERENCE_FILE = "ref.wav"
GPT_FILE = "gpt.ckpt"
SOVITS_FILE = "sovits.pth"
_STAGING = ".staging-"
_TRASH = ".trash-"
# Leftovers of a crash older than this are removed when a store opens.
_STALE_SECONDS = 600.0


EXISTS = "exists"  # StoreError.code when the name is taken: the page may ask to replace it
BAD_REQUEST = "bad-request"


class StoreError(Exception):
    """A refused change: `message` is for the user, `field` names the form field it is about,
    `code` is EXISTS when the voice or style already exists (retry with overwrite) or BAD_REQUEST."""

    def __init__(self, message: str, field: str | None = None, code: str = BAD_REQUEST) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.code = code


@dataclass
class VoiceDraft:
    """A new voice as the page (or a script) hands it over."""

    voice_id: str
    clip: bytes  # wav, flac, ogg or mp3: recognised by content
    transcript: str
    window: Window | None = None  # the part of the clip to keep (required for clips over 10 s)
    language: str = DEFAULT_LANGUAGE
    prompt_language: str | None = None  # the transcript's language (default: language)
    description: str | None = None
    gpt: bytes | str | None = None  # uploaded .ckpt bytes, or a path relative to the data dir
    sovits: bytes | str | None = None  # uploaded .pth bytes, or a path relative to the data dir
    aux_clips: tuple[bytes, ...] = ()  # extra 3-10 s clips of the same speaker
    params: Mapping[str, Any] = field(default_factory=dict)  # sampling settings (VoiceParams names)


_UNSET: Any = object()


class VoiceStore:
    """Writes under `DATA_DIR/voices/` (the folders VoiceRegistry reads)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        voices_dir: Path | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.voices_dir = (voices_dir or data_dir / "voices").resolve()
        self.cache_dir = self.data_dir / "cache"
        self.max_upload_bytes = max_upload_bytes
        self._lock = threading.Lock()  # serialises the renames that replace or move a voice
        self._remove_stale_leftovers()

    # ------------------------------------------------------------------ voices
    def create(self, draft: VoiceDraft, *, overwrite: bool = False) -> Path:
        """Check everything, write the voice folder, move it into place; returns the folder."""
        voice_id = validate_id(draft.voice_id, "id")
        target = self.voices_dir / voice_id
        if target.exists() and not overwrite:
            raise StoreError(f"a voice named {voice_id!r} already exists (confirm to replace it)", "id", EXISTS)
        transcript = _transcript(draft.transcript)
        language = _language(draft.language, "language")
        prompt_language = _language(draft.prompt_language or language, "prompt_language")
        description = _description(draft.description)
        params = _params(draft.params)
        clip = self._checked_clip(draft.clip, transcript, prompt_language, draft.window, "clip")
        if len(draft.aux_clips) > MAX_AUX_CLIPS:
            raise StoreError(f"at most {MAX_AUX_CLIPS} extra clips", "aux_clips")
        aux = [self._checked_clip(data, None, prompt_language, None, "aux_clips") for data in draft.aux_clips]

        config: dict[str, Any] = {"language": language}
        if prompt_language != language:
            config["prompt_language"] = prompt_language
        if description:
            config["description"] = description
        config.update(params)

        staging = self._staging_folder(self.voices_dir, voice_id)
        try:
            _write_file(staging / REFERENCE_FILE, clip)
            _write_file(staging / TRANSCRIPT, (transcript + "\n").encode("utf-8"))
            if aux:
                names = [f"aux{index + 1}.wav" for index in range(len(aux))]
                for name, data in zip(names, aux):
                    _write_file(staging / name, data)
                config["aux_refs"] = names
            for key, value, file_name in (("gpt", draft.gpt, GPT_FILE), ("sovits", draft.sovits, SOVITS_FILE)):
                if value is not None:
                    config[key] = self._model_entry(key, value, staging / file_name, target / file_name)
            _write_yaml(staging / VOICE_YAML, config)
            self._commit(staging, target, voice_id, overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if overwrite:
            self._drop_bundles(voice_id)
        _LOGGER.info("Voice %r saved", voice_id)
        return target

    def update(
        self,
        voice_id: str,
        *,
        description: str | None = _UNSET,
        language: str = _UNSET,
        prompt_language: str | None = _UNSET,
        transcript: str = _UNSET,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Change settings in place (voice.yaml and ref.txt rewritten atomically). In `params`, a
        value of None removes the setting (back to the default)."""
        folder = self._existing(voice_id)
        config = _read_yaml(folder / VOICE_YAML)
        if description is not _UNSET:
            text = _description(description)
            config.pop("description", None)
            if text:
                config["description"] = text
        if language is not _UNSET:
            config["language"] = _language(language, "language")
        if prompt_language is not _UNSET:
            config.pop("prompt_language", None)
            if prompt_language:
                config["prompt_language"] = _language(prompt_language, "prompt_language")
        if params:
            unknown = sorted(set(params) - set(PARAM_NAMES))
            if unknown:
                raise StoreError(f"unknown setting(s): {', '.join(unknown)}", "params")
            for name in (name for name, value in params.items() if value is None):
                config.pop(name, None)
            config.update(_params({name: value for name, value in params.items() if value is not None}))
        if transcript is not _UNSET:
            _replace_file(folder / TRANSCRIPT, (_transcript(transcript) + "\n").encode("utf-8"))
        _replace_yaml(folder / VOICE_YAML, config)

    def rename(self, voice_id: str, new_id: str, *, overwrite: bool = False) -> Path:
        """Move a voice to a new id (its uploaded weights move with it)."""
        folder = self._existing(voice_id)
        new_id = validate_id(new_id, "new_id")
        target = self.voices_dir / new_id
        if new_id == voice_id:
            return folder
        if target.exists() and not overwrite:
            raise StoreError(f"a voice named {new_id!r} already exists (confirm to replace it)", "new_id", EXISTS)
        with self._lock:
            moving = self._hidden_name(self.voices_dir, _STAGING, new_id)
            try:
                os.rename(folder, moving)
            except FileNotFoundError:
                raise StoreError(f"there is no voice named {voice_id!r}", "id") from None
            try:
                config = _read_yaml(moving / VOICE_YAML)
                moved = self._moved_model_paths(config, folder, target)
                if moved != config:
                    _replace_yaml(moving / VOICE_YAML, moved)
                self._commit_locked(moving, target, new_id, overwrite)
            except BaseException:
                if moving.exists():
                    os.rename(moving, folder)  # put it back as it was
                raise
        self._drop_bundles(voice_id)
        _LOGGER.info("Voice %r renamed to %r", voice_id, new_id)
        return target

    def delete(self, voice_id: str) -> None:
        folder = self._existing(voice_id)
        trash = self._hidden_name(self.voices_dir, _TRASH, voice_id)
        try:
            os.rename(folder, trash)  # gone for readers at once; removing the files may take a while
        except FileNotFoundError:
            raise StoreError(f"there is no voice named {voice_id!r}", "id") from None
        _remove(trash)
        self._drop_bundles(voice_id)
        _LOGGER.info("Voice %r deleted", voice_id)

    # ------------------------------------------------------------------ styles
    def add_style(
        self,
        voice_id: str,
        style: str,
        clip: bytes,
        transcript: str,
        *,
        window: Window | None = None,
        overwrite: bool = False,
    ) -> Path:
        """A style (HA speaker): its own clip and transcript under `styles/<style>/`."""
        folder = self._existing(voice_id)
        style = validate_id(style, "style")
        styles = folder / STYLES_DIR
        target = styles / style
        if target.exists() and not overwrite:
            raise StoreError(f"voice {voice_id!r} already has a style {style!r} (confirm to replace it)", "style", EXISTS)
        text = _transcript(transcript)
        config = _read_yaml(folder / VOICE_YAML)
        language = config.get("prompt_language") or config.get("language") or DEFAULT_LANGUAGE
        wav = self._checked_clip(clip, text, str(language), window, "clip")
        styles.mkdir(exist_ok=True)
        staging = self._staging_folder(styles, style)
        try:
            _write_file(staging / REFERENCE_FILE, wav)
            _write_file(staging / TRANSCRIPT, (text + "\n").encode("utf-8"))
            self._commit(staging, target, style, overwrite, field_name="style")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        _LOGGER.info("Voice %r: style %r saved", voice_id, style)
        return target

    def delete_style(self, voice_id: str, style: str) -> None:
        folder = self._existing(voice_id)
        style = validate_id(style, "style")
        target = folder / STYLES_DIR / style
        trash = self._hidden_name(folder / STYLES_DIR, _TRASH, style)
        try:
            os.rename(target, trash)
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"voice {voice_id!r} has no style {style!r}", "style") from None
        _remove(trash)
        self._drop_bundles(f"{voice_id}@{style}")

    # ------------------------------------------------------------------ helpers for the page
    def model_files(self) -> list[str]:
        """Weights already under the data dir (.ckpt GPT, .pth SoVITS), relative to it."""
        found = []
        for root, dirs, files in os.walk(self.data_dir):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and Path(root, d) != self.cache_dir)
            found += [
                os.path.relpath(os.path.join(root, name), self.data_dir)
                for name in files
                if name.endswith((".ckpt", ".pth"))
            ]
        return sorted(found)

    def check_upload_size(self, size: int, field_name: str) -> None:
        """For readers of a stream: refuse once more than the limit has arrived."""
        if size > self.max_upload_bytes:
            raise StoreError(
                f"the file is larger than the limit of {self.max_upload_bytes / 1e6:.0f} MB", field_name
            )

    # ------------------------------------------------------------------ internals
    def _existing(self, voice_id: str) -> Path:
        voice_id = validate_id(voice_id, "id")
        folder = self.voices_dir / voice_id
        if not folder.is_dir():
            raise StoreError(f"there is no voice named {voice_id!r}", "id")
        return folder

    def _checked_clip(
        self, data: bytes, transcript: str | None, language: str, window: Window | None, field_name: str
    ) -> bytes:
        """The clip (cut to its window) as WAV bytes, if the check does not refuse it."""
        if not isinstance(data, (bytes, bytearray)):
            raise StoreError("no audio file was sent", field_name)
        self.check_upload_size(len(data), field_name)
        try:
            clip = decode_clip(bytes(data))
        except ClipError as err:
            raise StoreError(str(err), field_name) from err
        try:
            report = check_clip(clip, transcript, language, window)
        except ClipError as err:  # a decoded clip fails only on a window outside it
            raise StoreError(str(err), "window") from err
        if report.refused:
            raise StoreError("; ".join(report.problems), field_name)
        return crop_wav(clip, window)

    def _model_entry(self, key: str, value: bytes | str, staged: Path, final: Path) -> str:
        """Stage an uploaded weights file, or find one already under the data dir; check that it
        is the right kind; returns the path voice.yaml names (relative to the data dir)."""
        if isinstance(value, (bytes, bytearray)):
            self.check_upload_size(len(value), key)
            if not value:
                raise StoreError(f"the {key} file is empty", key)
            _write_file(staged, bytes(value))
            _check_model_kind(key, staged)
            return os.path.relpath(final, self.data_dir)
        if not isinstance(value, str) or not value.strip():
            raise StoreError(f"{key} must be an uploaded file or a path under the data dir", key)
        # Judged by the path as named (a symlink the user put under the data dir is theirs to use).
        path = Path(os.path.normpath(self.data_dir / value))
        if not path.is_relative_to(self.data_dir):
            raise StoreError(f"{value!r} is outside the data dir", key)
        if not path.is_file():
            raise StoreError(f"{value!r} is not a file under the data dir", key)
        _check_model_kind(key, path)
        return os.path.relpath(path, self.data_dir)

    def _moved_model_paths(self, config: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
        """voice.yaml entries that point into the old folder, pointed into the new one."""
        moved = dict(config)
        for key in ("gpt", "sovits"):
            value = config.get(key)
            if isinstance(value, str):
                path = (self.data_dir / value).resolve() if not Path(value).is_absolute() else Path(value)
                if path.is_relative_to(old):
                    moved[key] = os.path.relpath(new / path.relative_to(old), self.data_dir)
        return moved

    def _staging_folder(self, parent: Path, name: str) -> Path:
        parent.mkdir(parents=True, exist_ok=True)
        staging = self._hidden_name(parent, _STAGING, name)
        staging.mkdir()
        return staging

    @staticmethod
    def _hidden_name(parent: Path, prefix: str, name: str) -> Path:
        return parent / f"{prefix}{name}-{secrets.token_hex(6)}"

    def _commit(self, staging: Path, target: Path, name: str, overwrite: bool, field_name: str = "id") -> None:
        _sync_dir(staging)
        with self._lock:
            self._commit_locked(staging, target, name, overwrite, field_name)

    def _commit_locked(
        self, staging: Path, target: Path, name: str, overwrite: bool, field_name: str = "id"
    ) -> None:
        """One rename into place; replacing moves the old folder aside first (then removes it)."""
        trash = None
        if overwrite and target.exists():
            trash = self._hidden_name(target.parent, _TRASH, name)
            os.rename(target, trash)
        try:
            # Fails when the target exists and is not empty: of two saves of one id, one wins.
            os.rename(staging, target)
        except OSError as err:
            if trash is not None:
                os.rename(trash, target)
            raise StoreError(f"{name!r} was saved by someone else at the same moment; nothing was changed", field_name, EXISTS) from err
        _sync_dir(target.parent)
        if trash is not None:
            _remove(trash)

    def _drop_bundles(self, bundle_id: str) -> None:
        """Cached bundles of a voice (and its styles) that no longer exists as it was."""
        if not self.cache_dir.is_dir():
            return
        for path in self.cache_dir.glob(f"{bundle_id}[.@]*.safetensors"):
            rest = path.name[len(bundle_id) :]
            # "<id>.<key>.safetensors" or "<id>@<style>.<key>.safetensors"; not "<id>.v2.<key>..."
            if rest.count(".") == 2:
                path.unlink(missing_ok=True)

    def _remove_stale_leftovers(self) -> None:
        if not self.voices_dir.is_dir():
            return
        now = time.time()
        candidates = list(self.voices_dir.iterdir()) + list(self.voices_dir.glob(f"*/{STYLES_DIR}/*"))
        for path in candidates:
            if path.name.startswith((_STAGING, _TRASH)) and path.is_dir():
                try:
                    if now - path.stat().st_mtime > _STALE_SECONDS:
                        shutil.rmtree(path, ignore_errors=True)
                except OSError:
                    pass


# ----------------------------------------------------------------------------- validation
def validate_id(value: Any, field_name: str = "id") -> str:
    """A voice or style id: a folder name that cannot escape its parent or hide from the registry."""
    if not isinstance(value, str) or not value:
        raise StoreError("a name is required", field_name)
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise StoreError("the name must not contain control characters", field_name)
    if "/" in value or "\\" in value:
        raise StoreError("the name must not contain '/' or '\\'", field_name)
    if ".." in value:
        raise StoreError("the name must not contain '..'", field_name)
    if len(value) > MAX_ID_LENGTH:
        raise StoreError(f"the name is {len(value)} characters long; at most {MAX_ID_LENGTH} are allowed", field_name)
    if not VOICE_ID_PATTERN.match(value):
        raise StoreError(
            "the name may use letters a-z, digits, '_', '-' and '.', and must start with a letter or digit",
            field_name,
        )
    return value


def _transcript(value: Any) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        raise StoreError("the transcript is required: type exactly what is said in the clip", "transcript")
    if len(text) > MAX_TRANSCRIPT_CHARS:
        raise StoreError(f"the transcript is over {MAX_TRANSCRIPT_CHARS} characters", "transcript")
    return text


def _language(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or value not in LANGUAGE_MODES:
        raise StoreError(f"{value!r} is not one of {', '.join(sorted(LANGUAGE_MODES))}", field_name)
    return value


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise StoreError("the description must be text", "description")
    text = " ".join(value.split())
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise StoreError(f"the description is over {MAX_DESCRIPTION_CHARS} characters", "description")
    return text


def _params(values: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling settings, each checked on its own so the message names the right one."""
    if not isinstance(values, Mapping):
        raise StoreError("settings must be a mapping of names to values", "params")
    checked = {}
    for name, value in values.items():
        if name not in PARAM_NAMES:
            raise StoreError(f"unknown setting {name!r}", "params")
        try:
            VoiceParams().with_overrides(**{name: value})
        except (TypeError, ValueError) as err:
            raise StoreError(str(err), name) from err
        if value is not None:
            checked[name] = value
    return checked


def _check_model_kind(key: str, path: Path) -> None:
    """A GPT file given as SoVITS (or the reverse), or anything that does not load, is refused."""
    try:
        if key == "gpt":
            load_gpt_checkpoint(path, dtype=None)
        else:
            load_sovits_checkpoint(path, dtype=None)
    except ModelFileError as err:
        raise StoreError(err.problem, key) from err


# ----------------------------------------------------------------------------- files
def _write_file(path: Path, data: bytes) -> None:
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _replace_file(path: Path, data: bytes) -> None:
    """Write beside the file, then rename over it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_yaml(path: Path, config: Mapping[str, Any]) -> None:
    _write_file(path, yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False).encode("utf-8"))


def _replace_yaml(path: Path, config: Mapping[str, Any]) -> None:
    _replace_file(path, yaml.safe_dump(dict(config), allow_unicode=True, sort_keys=False).encode("utf-8"))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise StoreError(f"{path.name} cannot be read ({err}); fix or delete it first", "id") from err
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise StoreError(f"{path.name} is not a mapping of settings; fix or delete it first", "id")
    return config


def _remove(path: Path) -> None:
    """Remove a folder moved aside; a symlinked voice folder loses its link, never its target."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _sync_dir(path: Path) -> None:
    """Make a rename durable (the directory entry reaches the disk)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
