"""What the page can do, as plain calls on the process's shared objects (the studio service over
the registry, bundle cache and engine; the voice store). The HTTP layer turns results into JSON;
this module turns product errors into StudioError, which names the form field at fault."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..synthesis.session import SpeechSession
from ..synthesis.speech import BadRequest
from ..synthesis.studio import Studio, VoiceStatus
from ..voices import LANGUAGE_MODES, VoiceParams
from ..voices.check import ClipAudio, ClipError, Window, check_clip, decode_clip
from ..voices.params import PARAM_NAMES
from ..voices.store import EXISTS, StoreError, VoiceDraft, VoiceStore
from .settings import WebSettings
from .uploads import clear_stale_uploads

_LOGGER = logging.getLogger(__name__)

WAVEFORM_POINTS = 800
_WHOLE_PARAMS = frozenset({"top_k", "seed"})


class StudioError(Exception):
    """A refusal the page shows: message, the form field at fault, an HTTP status and a code the
    page can act on ("exists": ask before overwriting)."""

    def __init__(self, message: str, field: str | None = None, status: int = 400, code: str = "bad-request") -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.code = code


class StudioActions:
    """Built once per process from the runtime, so the page and the Wyoming side share everything."""

    def __init__(self, runtime: Any, settings: WebSettings) -> None:
        self.studio = Studio.for_runtime(runtime, max_upload_bytes=settings.max_upload_bytes)
        self.store: VoiceStore = self.studio.store
        self.data_dir: Path = runtime.settings.data_dir
        self._runtime = runtime  # its model_fetcher (--fetch-models) may start after the page
        self.upload_dir = self.data_dir / "cache" / "uploads"
        clear_stale_uploads(self.upload_dir)

    # ------------------------------------------------------------------ reading
    def info(self) -> dict[str, Any]:
        defaults = VoiceParams()
        return {
            "version": __version__,
            "languages": sorted(LANGUAGE_MODES),
            "params": {name: getattr(defaults, name) for name in PARAM_NAMES},
        }

    def voices(self) -> list[dict[str, Any]]:
        return [_status_json(status) for status in self.studio.voices()]

    def models_download(self) -> dict[str, Any] | None:
        """The background model download (--fetch-models, the add-on's `models`), or None."""
        fetcher = getattr(self._runtime, "model_fetcher", None)
        return fetcher.status().to_dict() if fetcher is not None else None

    def voice(self, voice_id: str) -> dict[str, Any]:
        status = self.studio.voice(voice_id)
        if status is None:
            raise StudioError(f"there is no voice {voice_id!r}", status=404, code="not-found")
        return _status_json(status)

    def model_files(self) -> dict[str, list[str]]:
        """Weights already under the data dir, by kind (GPT .ckpt, SoVITS .pth)."""
        files = self.store.model_files()
        return {
            "gpt": [path for path in files if path.endswith(".ckpt")],
            "sovits": [path for path in files if path.endswith(".pth")],
        }

    # ------------------------------------------------------------------ clips
    def check(self, clip_path: Path, transcript: str, window: tuple[float, float] | None) -> dict[str, Any]:
        """The reference check of a clip (or of a window of it) and its waveform for the page."""
        clip = self._decode(clip_path)
        try:
            report = check_clip(clip, transcript or None, window=_window(window))
        except ClipError as err:
            raise StudioError(str(err), field="clip") from err
        return {**report.to_dict(), "waveform": waveform_peaks(clip)}

    def _decode(self, clip_path: Path) -> ClipAudio:
        try:
            return decode_clip(clip_path.read_bytes())
        except ClipError as err:
            raise StudioError(str(err), field="clip") from err

    # ------------------------------------------------------------------ writing
    def create_voice(
        self,
        voice_id: str,
        clip: Path,
        transcript: str,
        *,
        language: str | None,
        prompt_language: str | None,
        description: str,
        window: tuple[float, float] | None,
        gpt: Path | str | None,
        sovits: Path | str | None,
        aux_clips: tuple[Path, ...],
        overwrite: bool,
    ) -> dict[str, Any]:
        draft = VoiceDraft(
            voice_id=voice_id,
            clip=clip.read_bytes(),
            transcript=transcript,
            window=_window(window),
            language=language or "auto",
            prompt_language=prompt_language,
            description=description or None,
            gpt=_model_source(gpt),
            sovits=_model_source(sovits),
            aux_clips=tuple(path.read_bytes() for path in aux_clips),
        )
        with _store_errors():
            self.store.create(draft, overwrite=overwrite)
        return self._built(voice_id)

    def update_voice(self, voice_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        fields = {k: changes[k] for k in ("description", "language", "prompt_language", "transcript") if k in changes}
        for name, value in fields.items():
            if not isinstance(value, str):
                raise StudioError(f"{name} must be text", field=name)
        new_id = changes.get("new_id")
        if new_id is not None and not isinstance(new_id, str):
            raise StudioError("the new voice id must be text", field="new_id")
        with _store_errors():
            if fields:
                self.store.update(voice_id, **fields)
            if new_id and new_id != voice_id:
                self.store.rename(voice_id, new_id)
                voice_id = new_id
        return self._built(voice_id)

    def save_params(self, voice_id: str, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(PARAM_NAMES))
        if unknown:
            raise StudioError(f"unknown setting(s) {', '.join(unknown)}", field=unknown[0])
        with _store_errors():
            self.store.update(voice_id, params=params)
        return self.voice(voice_id)

    def delete_voice(self, voice_id: str) -> None:
        with _store_errors():
            self.store.delete(voice_id)

    def add_style(
        self,
        voice_id: str,
        name: str,
        clip: Path,
        transcript: str,
        *,
        window: tuple[float, float] | None,
        overwrite: bool,
    ) -> dict[str, Any]:
        with _store_errors():
            self.store.add_style(voice_id, name, clip.read_bytes(), transcript, window=_window(window), overwrite=overwrite)
        return self._built(voice_id)

    def delete_style(self, voice_id: str, name: str) -> dict[str, Any]:
        with _store_errors():
            self.store.delete_style(voice_id, name)
        return self.voice(voice_id)

    def _built(self, voice_id: str) -> dict[str, Any]:
        """The voice after a change, its bundles building in the background."""
        self.studio.request_build(voice_id)
        return self.voice(voice_id)

    # ------------------------------------------------------------------ preview
    def open_preview(
        self, voice_id: str, text: str, *, style: str | None, language: str | None, overrides: dict[str, str]
    ) -> SpeechSession:
        """Call on the event loop: the session answers there (same engine queue as Wyoming)."""
        try:
            session = self.studio.open_preview(
                voice_id, style=style, overrides=_typed_params(overrides), language=language
            )
            session.feed(text)
            session.finish()
        except BadRequest as err:
            raise StudioError(str(err), field="text", code=err.code) from err
        return session


class _store_errors:
    """StoreError -> StudioError, keeping the field and code ("exists": the page offers to replace)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, err: BaseException | None, _tb: Any) -> bool:
        if isinstance(err, StoreError):
            status = 409 if err.code == EXISTS else 400
            raise StudioError(str(err), field=err.field, status=status, code=err.code) from err
        return False


def _window(window: tuple[float, float] | None) -> Window | None:
    return Window(start=window[0], end=window[1]) if window is not None else None


def _model_source(source: Path | str | None) -> bytes | str | None:
    """An uploaded file's bytes, or the data-dir-relative path of a file picked from the list."""
    return source.read_bytes() if isinstance(source, Path) else source


def _typed_params(values: dict[str, str]) -> dict[str, Any]:
    typed: dict[str, Any] = {}
    for name, text in values.items():
        if name not in PARAM_NAMES:
            raise StudioError(f"unknown setting {name!r}", field=name)
        if text == "":
            continue
        try:
            typed[name] = int(text) if name in _WHOLE_PARAMS else float(text)
        except ValueError:
            raise StudioError(f"{name} must be a number, got {text!r}", field=name) from None
    return typed


def waveform_peaks(clip: ClipAudio, points: int = WAVEFORM_POINTS) -> list[float]:
    """Peak per column, scaled to the loudest, for the page to draw (3 decimals keep it small)."""
    mono = np.abs(clip.samples).max(axis=1) if clip.samples.ndim == 2 else np.abs(clip.samples)
    if mono.size == 0:
        return []
    columns = np.array_split(mono, min(points, mono.size))
    peaks = np.array([column.max() for column in columns], dtype=np.float64)
    top = float(peaks.max())
    return [round(float(p), 3) for p in (peaks / top if top > 0 else peaks)]


def _status_json(status: VoiceStatus) -> dict[str, Any]:
    data = dataclasses.asdict(status)
    data["reason"] = data.pop("problem", None)
    for style in data.get("styles", []):
        style["reason"] = style.pop("problem", None)
    return data
