"""Everything a process needs to speak, built once: registry, models, engine, service."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..download import ModelFetcher
from ..text.sentences import SentenceSplitter
from ..voices import BundleCache, ModelPaths, Voice, VoiceRegistry
from .engine import CUDA_CONCURRENT_REQUESTS, Engine
from .fallback import PiperFallback
from .gsv_backend import BackendSettings, GsvBackend
from .pipeline import use_own_cuda_stream
from .service import ServiceSettings, TtsService
from .session import DEFAULT_MAX_CHARS

_LOGGER = logging.getLogger(__name__)

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Longest sentence handed to the model at once; longer ones are cut at a comma or space.
MAX_SENTENCE_CHARS = 200
WARM_UP_TEXT = {
    "en": "Hello there.",
    "zh": "你好。",
    "all_zh": "你好。",
    "ja": "こんにちは。",
    "all_ja": "こんにちは。",
    "ko": "안녕하세요.",
    "all_ko": "안녕하세요.",
    "yue": "你好。",
    "all_yue": "你好。",
}


@dataclass(frozen=True)
class RuntimeSettings:
    data_dir: Path
    hubert: Path | None = None
    bert: Path | None = None
    gpt: Path | None = None
    sovits: Path | None = None
    sv: Path | None = None
    allowed_paths: tuple[Path, ...] = ()  # roots besides data_dir that voice files may live in
    device: str = "cpu"
    precision: str = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    threads: int | None = None
    # Threads for the GPT's decode steps on the CPU (at most `threads`); None: measured before a
    # model first speaks (synthesis/decode_threads.py).
    decode_threads: int | None = None
    gpt_int8: bool = False  # int8 GPT weights on CPU
    # GPT and SoVITS on two workers, half the threads each (CPU, 2+ threads), for requests
    # streamed chunk by chunk; else one after the other. None: on where it can be. On 2 cores
    # (benchmarks/bench_cpu.py) a streamed announcement finished 15-18 % sooner with it, idle or
    # with the other core busy, for the same CPU time.
    overlap: bool | None = None
    max_queue: int = 8
    max_chars: int = DEFAULT_MAX_CHARS
    default_voice: str | None = None
    param_overrides: dict[str, Any] = field(default_factory=dict)
    use_fallback: bool = True
    # The model version whose official GPT/SoVITS are the default when several are installed
    # (the one --fetch-models brings); None: v2 first, as `wyoming-gsv download` defaults to.
    model_version: str | None = None
    fallback_on_error: bool = False  # the fallback voice answers when a GPT-SoVITS voice fails
    # Requests spoken at once (engine workers; above 1 their GPTs are batched); None: decided by
    # the device (concurrent_requests()).
    concurrent_requests: int | None = None

    def __post_init__(self) -> None:
        if self.concurrent_requests is not None and self.concurrent_requests < 1:
            raise ValueError(f"concurrent_requests must be 1 or more, got {self.concurrent_requests}")

    @property
    def dtype(self) -> torch.dtype:
        return resolve_dtype(self.precision, self.device)[0]


def concurrent_requests(settings: RuntimeSettings) -> int:
    """Requests spoken at once: as set, else by the device (CUDA_CONCURRENT_REQUESTS on CUDA, 1 on the CPU)."""
    if settings.concurrent_requests is not None:
        return settings.concurrent_requests
    return CUDA_CONCURRENT_REQUESTS if settings.device.startswith("cuda") else 1


def worker_threads(settings: RuntimeSettings) -> tuple[int, int]:
    """(GPT threads, vocoder threads); 0 vocoder threads: SoVITS runs on the GPT's thread (or,
    with concurrent requests, the GPT on the batcher's thread beside it)."""
    threads = settings.threads or torch.get_num_threads()
    if (
        settings.overlap is False
        or threads < 2
        or not settings.device.startswith("cpu")
        or concurrent_requests(settings) > 1
    ):
        return threads, 0
    return threads - threads // 2, threads // 2


def engine_worker_start(gpt_threads: int, device: torch.device, concurrent: int) -> None:
    """Runs first on every engine worker: its own OpenMP team size, and with concurrent requests
    on CUDA its own stream (so one request's SoVITS does not queue behind another's)."""
    torch.set_num_threads(gpt_threads)
    if concurrent > 1 and device.type == "cuda":
        use_own_cuda_stream(device)


def resolve_dtype(precision: str, device: str) -> tuple[torch.dtype, str | None]:
    """The dtype to run in, and a warning when the requested one would be a trap: half precision
    on a CPU without native instructions for it runs in emulation, many times slower than fp32,
    so it falls back."""
    if precision == "auto":
        return (torch.float16 if device.startswith("cuda") else torch.float32), None
    dtype = _DTYPES[precision]
    if dtype == torch.float32 or not device.startswith("cpu") or cpu_has_native(dtype):
        return dtype, None
    capability = torch.backends.cpu.get_cpu_capability()
    return torch.float32, (
        f"--precision {precision}: this CPU ({capability}) has no native {precision} instructions; "
        "running in fp32, which is faster here"
    )


def cpu_has_native(dtype: torch.dtype) -> bool:
    """bf16: AVX512-BF16 dot products or AMX tiles; fp16: AMX-FP16. What oneDNN's fast half
    precision kernels need (with them, bf16 ran the GPT 2x and the vocoder 2.3x faster than fp32
    on an AVX512-BF16 CPU; fp16 elsewhere is emulated)."""
    probes = {
        torch.bfloat16: ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
        torch.float16: ("_is_amx_fp16_supported",),
    }
    for name in probes.get(dtype, ()):
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


class Runtime:
    """Owns the engine's threads; `close()` stops them."""

    def __init__(self, settings: RuntimeSettings) -> None:
        if settings.threads:
            torch.set_num_threads(settings.threads)
        _dtype, precision_warning = resolve_dtype(settings.precision, settings.device)
        if precision_warning is not None:
            _LOGGER.warning(precision_warning)
        self.settings = settings
        gpt_threads, vocoder_threads = worker_threads(settings)
        concurrent = concurrent_requests(settings)
        self.models = ModelPaths.resolve(
            settings.data_dir,
            hubert=settings.hubert,
            bert=settings.bert,
            gpt=settings.gpt,
            sovits=settings.sovits,
            sv=settings.sv,
            prefer=settings.model_version,
            allowed_roots=settings.allowed_paths,
        )
        self.registry = VoiceRegistry(self.models)
        cache = BundleCache(settings.data_dir / "cache")
        cache.remove_abandoned_temp_files()
        self.backend = GsvBackend(
            self.models,
            cache,
            BackendSettings(
                device=settings.device,
                dtype=settings.dtype,
                gpt_int8=settings.gpt_int8,
                vocoder_threads=vocoder_threads,
                decode_threads=settings.decode_threads,
                concurrent_requests=concurrent,
            ),
            on_broken=lambda voice_id, problem: self.service.voice_unusable(voice_id, problem),
        )
        self.fallback = PiperFallback() if settings.use_fallback else None
        # The background model download (--fetch-models), set by the CLI: its status() (a
        # download.FetchStatus, to_dict() for JSON) is what a page shows. None without one.
        self.model_fetcher: ModelFetcher | None = None
        device = torch.device(settings.device)
        self.engine = Engine(
            max_queue=settings.max_queue,
            name=f"gsv-engine-{settings.device}",
            on_start=lambda: engine_worker_start(gpt_threads, device, concurrent),
            workers=concurrent,
        )
        self.service = TtsService(
            self.registry,
            self.backend,
            self.engine,
            splitter_factory=lambda _mode: SentenceSplitter(MAX_SENTENCE_CHARS),
            settings=ServiceSettings(
                max_chars=settings.max_chars,
                default_voice=settings.default_voice,
                param_overrides=dict(settings.param_overrides),
                fallback_on_error=settings.fallback_on_error,
            ),
            fallback=self.fallback,
        )

    def start(self) -> None:
        self.engine.start()

    def warm_up(self) -> None:
        """Load the models, build (or load) every voice's bundle, and speak one short sentence
        so the first request does not pay for lazy initialisation."""
        ready = self.prepare_voices()
        if ready:
            voice = ready[0]
            started = time.perf_counter()
            # With concurrent requests two at once: the GPT's batched steps (several rows) are
            # compiled and captured now, not while the day's first two requests wait.
            speakers = 2 if self.engine.workers > 1 else 1
            try:
                with ThreadPoolExecutor(speakers) as pool:
                    list(pool.map(lambda _: self._speak_warm_up(voice), range(speakers)))
                _LOGGER.info("Warmed up with voice %r in %.2f s", voice.id, time.perf_counter() - started)
            except Exception as err:
                _LOGGER.warning("Warm-up synthesis failed (%s); serving anyway", err)
        if self.settings.fallback_on_error or not ready:
            self._warm_up_fallback()

    def _speak_warm_up(self, voice: Voice) -> None:
        speaker = self.backend.speaker(voice, voice.params, voice.language)
        pending = speaker.speak(WARM_UP_TEXT.get(voice.language, WARM_UP_TEXT["en"]), lambda: False, lambda _: None)
        if pending is not None:
            pending.wait()

    def prepare_voices(self) -> list[Voice]:
        """Load the models and build (or load) the bundle of every voice; the ready ones.
        Also called once models downloaded in the background have landed."""
        ready = []
        for voice in self.registry.scan():
            try:
                self.backend.prepare(voice)
                ready.append(voice)
                _LOGGER.info("Voice %r ready", voice.id)
            except Exception as err:  # one bad voice must not stop the others
                _LOGGER.error("Voice %r left out: %s", voice.id, err)
                continue
            for style in voice.variants()[1:]:  # a style's first request should not build its bundle
                try:
                    self.backend.prepare(style)
                except Exception as err:
                    _LOGGER.error("Voice %r: style %r is unusable: %s", voice.id, style.style, err)
        return ready

    def _warm_up_fallback(self) -> None:
        """Load the piper model (about half a second) if it will speak: as the only voice, or
        standing in for failed voices."""
        if self.fallback is None or not self.fallback.available():
            return
        try:
            self.fallback.warm_up()
        except Exception as err:  # it loads again on first use; nothing is lost
            _LOGGER.warning("Fallback voice warm-up failed (%s); serving anyway", err)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Cancel what is being spoken and stop the engine; False if it is still busy after
        `timeout` (in the middle of one uninterruptible model call)."""
        stopped = self.engine.close(timeout)
        self.backend.close()
        return stopped
