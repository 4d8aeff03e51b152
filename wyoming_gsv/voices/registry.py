"""All voices under `DIR/voices/`, rescanned cheaply (by file stats) whenever asked."""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelNotReady, VoiceError
from .models import ModelPaths
from .voice import MAX_ID_LENGTH, STYLES_DIR, Voice, load_voice

_LOGGER = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class _Entry:
    signature: Signature | None  # None: never reused (a model file was still being written)
    voice: Voice | None
    problem: str | None
    model_files: tuple[Path, ...] = ()


class VoiceRegistry:
    """Voice folders -> Voice objects. A folder is re-read only when its files change.

    A bad voice is left out with one log line (logged again only if it changes); the
    engine can mark a voice broken (e.g. its weights failed to load) until its files change.
    """

    def __init__(self, models: ModelPaths, voices_dir: Path | None = None) -> None:
        self.models = models
        self.voices_dir = voices_dir or models.data_dir / "voices"
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    def scan(self) -> list[Voice]:
        """Every usable voice, sorted by id. Out of file descriptors (every connection holds
        one), the folders cannot be listed: the last scan's voices are the truth until they can."""
        self._refresh_models()
        try:
            folders = sorted(p for p in self.voices_dir.iterdir() if p.is_dir()) if self.voices_dir.is_dir() else []
        except OSError as err:
            if not out_of_descriptors(err):
                raise
            _LOGGER.warning("Cannot list %s (%s); serving the voices found before", self.voices_dir, err.strerror)
            with self._lock:
                return [e.voice for _, e in sorted(self._entries.items()) if e.voice is not None]
        present = {folder.name for folder in folders if not folder.name.startswith(".")}
        voices = [v for folder in folders if folder.name in present if (v := self._load(folder)) is not None]
        with self._lock:
            for gone in set(self._entries) - present:
                _LOGGER.info("Voice %r removed", gone)
                del self._entries[gone]
        return voices

    def get(self, voice_id: str) -> Voice | None:
        """One voice by id (re-read if its files changed), or None if absent or bad."""
        if not voice_id or "/" in voice_id or "\0" in voice_id or voice_id.startswith(".") or len(voice_id) > MAX_ID_LENGTH:
            return None
        folder = self.voices_dir / voice_id
        try:
            if not folder.is_dir():
                return None
        except OSError:  # e.g. a name the file system cannot hold
            return None
        self._refresh_models()
        return self._load(folder)

    def _refresh_models(self) -> None:
        """Default models installed, replaced or removed since the last look count from now on."""
        models = self.models.refreshed()
        if models != self.models:
            _LOGGER.info("Default models now: GPT %s, SoVITS %s", models.gpt, models.sovits)
            self.models = models

    def problems(self) -> dict[str, str]:
        """Voice id -> why it is left out, for every bad voice seen in the last scan."""
        with self._lock:
            return {vid: e.problem for vid, e in self._entries.items() if e.problem is not None}

    def mark_broken(self, voice_id: str, problem: str) -> None:
        """Leave a voice out until its files change (called when its models fail to load)."""
        with self._lock:
            entry = self._entries.get(voice_id)
            if entry is None or entry.problem == problem:
                return
            _LOGGER.error("Voice %r left out: %s", voice_id, problem)
            self._entries[voice_id] = _Entry(entry.signature, None, problem, entry.model_files)

    def _load(self, folder: Path) -> Voice | None:
        voice_id = folder.name
        with self._lock:
            entry = self._entries.get(voice_id)
        try:
            folder_signature = self._folder_signature(folder)
        except OSError as err:
            if out_of_descriptors(err):
                return entry.voice if entry is not None else None  # judged again when fds are free
            folder_signature = ((str(folder), -1, -1),)  # a folder we may not list: load_voice says why
        if entry is not None and entry.signature == folder_signature + _stats(entry.model_files):
            return entry.voice
        signature: Signature | None
        try:
            voice = load_voice(folder, self.models)
            problem = None
            _LOGGER.info("Voice %r loaded (%s, %.1f s reference)", voice_id, voice.language, voice.reference.seconds)
            _log_checks(voice)
        except VoiceError as err:
            if out_of_descriptors(err.__cause__):
                return entry.voice if entry is not None else None  # not the voice's fault: retried later
            voice, problem = None, str(err)
            if entry is None or entry.problem != problem:
                # A file still being written is expected (a download or copy in progress).
                log = _LOGGER.info if isinstance(err, ModelNotReady) else _LOGGER.error
                log("Voice left out: %s", problem)
            not_ready = isinstance(err, ModelNotReady)
        else:
            not_ready = False
        model_files = (voice.gpt, voice.sovits) if voice is not None else ()
        # Not ready: looked at again at every scan, since only time (not the stats) may change.
        signature = None if not_ready else folder_signature + _stats(model_files)
        with self._lock:
            self._entries[voice_id] = _Entry(signature, voice, problem, model_files)
        return voice

    def _folder_signature(self, folder: Path) -> Signature:
        """Stats of the folder's files, of its styles' files and of the base model files (HuBERT,
        BERT, speaker model, default GPT/SoVITS): a voice left out or broken for want of one is
        retried once it changes."""
        paths = [p for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []
        styles = folder / STYLES_DIR
        if styles.is_dir():
            paths += [styles] + [p for p in sorted(styles.glob("*/*")) if p.is_file()]
        return _stats(paths + self.models.base_files())


def out_of_descriptors(err: BaseException | None) -> bool:
    """EMFILE/ENFILE: a passing state of the process, not a fact about the files."""
    return isinstance(err, OSError) and err.errno in (errno.EMFILE, errno.ENFILE)


def _log_checks(voice: Voice) -> None:
    """The reference check's verdict, once per change of the folder (refusals are VoiceErrors)."""
    clips = [("", voice.reference)] + [(f" style {s.name!r}", s.reference) for s in voice.styles]
    for label, reference in clips:
        if reference.report is not None:  # advice only: refused clips are VoiceErrors, logged as such
            _LOGGER.info("Voice %r%s reference check: %s", voice.id, label, reference.report.summary())
    for name, problem in voice.style_problems:
        _LOGGER.error("Voice %r: style %r left out: %s", voice.id, name, problem)


def _stats(paths: "list[Path] | tuple[Path, ...]") -> Signature:
    stats = []
    for path in paths:
        try:
            stat = path.stat()
            stats.append((str(path), stat.st_size, stat.st_mtime_ns))
        except OSError:
            stats.append((str(path), -1, -1))
    return tuple(stats)
