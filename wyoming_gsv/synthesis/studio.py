"""What the voice page needs from the product: voice status, background bundle builds, previews.

Bundles are built as jobs on the same engine that answers Home Assistant (one sentence-sized turn
each, in queue order), so a build never runs beside a request on the models, and a request waits
for at most one build.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from ..gsv.checkpoints import HASH_PREFIX_BYTES, SOVITS_HEADER_TAGS, ZIP_MAGIC, sovits_version_from_hash
from ..voices import Voice, VoiceRegistry
from ..voices.store import DEFAULT_MAX_UPLOAD_BYTES, VoiceStore
from .engine import Engine, EngineJob
from .gsv_backend import GsvBackend
from .service import TtsService
from .session import SpeechSession
from .speech import BadRequest, EngineBusy, Emit, ShouldStop, Speech

_LOGGER = logging.getLogger(__name__)

READY = "ready"
BUILDING = "building"
UNUSABLE = "unusable"


@dataclass(frozen=True)
class StyleStatus:
    name: str
    transcript: str | None
    status: str  # ready | building | unusable
    problem: str | None = None
    check: dict[str, Any] | None = None  # the reference check (ClipReport.to_dict())


@dataclass(frozen=True)
class VoiceStatus:
    """One voice as the page lists it; a voice left out has only id, status and problem."""

    id: str
    status: str  # ready | building | unusable
    problem: str | None = None  # why unusable: the reason `wyoming-gsv voices` gives
    description: str | None = None
    language: str | None = None
    prompt_language: str | None = None
    transcript: str | None = None
    model_version: str | None = None  # SoVITS version of its weights (None: not known yet)
    params: dict[str, Any] | None = None  # current sampling settings (voice.yaml over defaults)
    styles: tuple[StyleStatus, ...] = ()
    check: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_failure(err: BaseException) -> str:
    """Why a voice cannot be prepared, worded as `wyoming-gsv voices` prints it after UNUSABLE."""
    from .speech import SynthesisError

    return str(err) if isinstance(err, SynthesisError) else f"{type(err).__name__}: {err}"


class Studio:
    """Shares the registry, backend, engine and service of a running server (synthesis.runtime)."""

    def __init__(
        self,
        registry: VoiceRegistry,
        backend: GsvBackend,
        engine: Engine,
        service: TtsService,
        *,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.engine = engine
        self.service = service
        self.store = VoiceStore(backend.models.data_dir, voices_dir=registry.voices_dir, max_upload_bytes=max_upload_bytes)
        self._lock = threading.Lock()
        self._pending: set[tuple[str, str]] = set()  # (bundle id, bundle key) wanted or running
        self._wanted: deque[tuple[Voice, str]] = deque()  # builds not yet handed to the engine
        self._building = False  # one build job on the engine at a time
        self._failed: dict[str, tuple[str, str]] = {}  # bundle id -> (bundle key, problem)
        self._versions: dict[tuple[str, int, int], str] = {}  # SoVITS file stat -> version

    @classmethod
    def for_runtime(cls, runtime: Any, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> "Studio":
        return cls(runtime.registry, runtime.backend, runtime.engine, runtime.service, max_upload_bytes=max_upload_bytes)

    # ------------------------------------------------------------------ status
    def voices(self) -> list[VoiceStatus]:
        """Every voice folder, usable or not, sorted by id; starts the builds that are missing.
        Reads file stats (and hashes small clips): call it off the event loop."""
        statuses = {voice.id: self._status(voice) for voice in self.registry.scan()}
        for voice_id, problem in self.registry.problems().items():
            statuses.setdefault(voice_id, self._left_out(voice_id, problem))
        return [statuses[key] for key in sorted(statuses)]

    def voice(self, voice_id: str) -> VoiceStatus | None:
        voice = self.registry.get(voice_id)
        if voice is not None:
            return self._status(voice)
        problem = self.registry.problems().get(voice_id)
        return self._left_out(voice_id, problem) if problem is not None else None

    def _left_out(self, voice_id: str, problem: str) -> VoiceStatus:
        """A voice the registry leaves out; one whose build failed on its files reads as the CLI says it."""
        with self._lock:
            failed = self._failed.get(voice_id)
            if any(bundle_id == voice_id for bundle_id, _key in self._pending):
                return VoiceStatus(id=voice_id, status=BUILDING)  # the failed build is still ending
        if failed is not None and failed[1].endswith(problem):
            problem = failed[1]
        return VoiceStatus(id=voice_id, status=UNUSABLE, problem=problem)

    def request_build(self, voice_id: str) -> bool:
        """Queue the bundles of a voice and its styles (those not built yet); False if no such voice."""
        voice = self.registry.get(voice_id)
        if voice is None:
            return False
        for variant in voice.variants():
            self._state(variant)
        return True

    def _status(self, voice: Voice) -> VoiceStatus:
        state, problem = self._state(voice)
        styles = []
        for style in voice.styles:
            style_state, style_problem = self._state(voice.with_style(style.name))
            report = style.reference.report
            styles.append(
                StyleStatus(style.name, style.transcript, style_state, style_problem, report.to_dict() if report else None)
            )
        styles += [StyleStatus(name, None, UNUSABLE, why) for name, why in voice.style_problems]
        report = voice.reference.report
        return VoiceStatus(
            id=voice.id,
            status=state,
            problem=problem,
            description=voice.description,
            language=voice.language,
            prompt_language=voice.prompt_language,
            transcript=voice.transcript,
            model_version=self._model_version(voice),
            params=asdict(voice.params),
            styles=tuple(sorted(styles, key=lambda s: s.name)),
            check=report.to_dict() if report else None,
        )

    def _state(self, voice: Voice) -> tuple[str, str | None]:
        """ready / building (queued now if it was not) / unusable, for one voice or style."""
        try:
            key = self.backend.bundle_key(voice)
        except OSError as err:  # the clip vanished between the scan and now
            return UNUSABLE, f"{type(err).__name__}: {err}"
        with self._lock:
            failed = self._failed.get(voice.bundle_id)
            if failed is not None and failed[0] == key:
                return UNUSABLE, failed[1]
            building = (voice.bundle_id, key) in self._pending
        if building:
            self._submit_next()  # in case the engine was busy when it was last tried
            return BUILDING, None
        if self.backend.has_bundle(voice, key):
            return READY, None
        self._queue_build(voice, key)
        return BUILDING, None

    def _queue_build(self, voice: Voice, key: str) -> None:
        """Wanted builds wait here and go to the engine one at a time, so they never take more than
        one of the places Home Assistant's requests queue for, and a request waits for one build at most."""
        job_id = (voice.bundle_id, key)
        with self._lock:
            if job_id not in self._pending:
                self._pending.add(job_id)
                self._wanted.append((voice, key))
                _LOGGER.info("Voice %r: bundle build queued", voice.bundle_id)
        self._submit_next()

    def _submit_next(self) -> None:
        with self._lock:
            if self._building or not self._wanted:
                return
            voice, key = self._wanted.popleft()
            self._building = True
        build = _BundleBuild(self, voice)
        job_id = (voice.bundle_id, key)

        def on_result(_index: int, _speech: Speech | None, error: BaseException | None, last: bool) -> None:
            if not last:
                return
            error = error or build.error
            with self._lock:
                self._pending.discard(job_id)
                self._building = False
                if error is not None:
                    self._failed[voice.bundle_id] = (key, describe_failure(error))
                else:
                    self._failed.pop(voice.bundle_id, None)
            if error is None:
                _LOGGER.info("Voice %r ready", voice.bundle_id)
            self._submit_next()

        try:
            self.engine.submit(EngineJob(speaker=build, on_result=on_result), 0, "build")
        except EngineBusy:  # Home Assistant's requests fill the queue: tried again at the next status request
            with self._lock:
                self._wanted.appendleft((voice, key))
                self._building = False

    def _model_version(self, voice: Voice) -> str | None:
        loaded = self.backend.loaded_version(voice)
        if loaded is not None:
            self._remember_version(voice.sovits, loaded)
            return loaded
        try:
            stat = voice.sovits.stat()
        except OSError:
            return None
        known = self._versions.get((str(voice.sovits), stat.st_size, stat.st_mtime_ns))
        return known if known is not None else _version_from_header(voice.sovits)

    def _remember_version(self, path: Path, version: str) -> None:
        try:
            stat = path.stat()
        except OSError:
            return
        with self._lock:
            self._versions[(str(path), stat.st_size, stat.st_mtime_ns)] = version

    # ------------------------------------------------------------------ preview
    def open_preview(
        self,
        voice_id: str,
        *,
        style: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        language: str | None = None,
    ) -> SpeechSession:
        """A speech session for the page, queued on the engine like a Wyoming request (call on the
        event loop; then feed(text), finish(), and iterate pieces()/speeches()). `overrides` are
        sampling settings tried before they are saved; raises BadRequest."""
        if not voice_id:
            raise BadRequest("no voice given", code="unknown-voice")
        if self.registry.get(voice_id) is None:
            problem = self.registry.problems().get(voice_id)
            raise BadRequest(problem or f"unknown voice {voice_id!r}", code="voice-unusable" if problem else "unknown-voice")
        return self.service.open_session(voice_id, language, style, overrides)


class _BundleBuild:
    """An engine job that prepares (builds or loads) one voice's bundle and models."""

    def __init__(self, studio: Studio, voice: Voice) -> None:
        self.studio = studio
        self.voice = voice
        self.error: BaseException | None = None

    def prepare(self) -> None:
        pass

    def speak(self, text: str, should_stop: ShouldStop, emit: Emit) -> None:
        try:
            pair, _bundle = self.studio.backend.prepare(self.voice)
        except Exception as err:  # reported in the voice's status (and logged once here)
            self.error = err
            _LOGGER.error("Voice %r cannot be built: %s", self.voice.bundle_id, describe_failure(err))
            return
        self.studio._remember_version(self.voice.sovits, pair.sovits.version)


def _version_from_header(path: Path) -> str | None:
    """The SoVITS version when the file itself says it exactly (a known pretrained file, or a
    version tag in place of the zip header); None when only loading it would tell."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HASH_PREFIX_BYTES)
    except OSError:
        return None
    known = sovits_version_from_hash(hashlib.md5(head).hexdigest())
    if known is not None:
        return known[1]
    if head[:2] != ZIP_MAGIC and head[:2] in SOVITS_HEADER_TAGS:
        return SOVITS_HEADER_TAGS[head[:2]][1]
    return None
