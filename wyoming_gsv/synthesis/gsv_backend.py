"""The GPT-SoVITS backend: models loaded once per process, voice bundles, one sentence at a time.

Runs on the engine's worker threads. With one worker, each sentence's GPT runs on it
(`Text2Semantic.generate`). With several (concurrent requests), the GPT of every request runs on
one `ContinuousBatcher` thread per model pair, sharing its decode steps, while each worker
vocodes its own request's chunks as the tokens come; what the workers share (models, bundles,
the text frontend) is behind the backend's lock.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

import numpy as np
import torch

from ..gsv.audio import AudioFileError, load_audio, load_reference_audio
from ..gsv.bert import BertFeaturizer
from ..gsv.bigvgan import Vocoder
from ..gsv.checkpoints import (
    HASH_PREFIX_BYTES,
    VOCODER_VERSIONS,
    SovitsCheckpoint,
    guess_sovits_version,
    load_gpt_checkpoint,
    load_sovits_checkpoint,
)
from ..gsv.errors import ModelFileError
from ..gsv.sovits import SovitsBase
from ..gsv.sovits_pro import sovits_from_checkpoint
from ..gsv.sovits_v3 import PromptContext, SovitsV3Model, load_vocoder
from ..gsv.speaker import SpeakerEncoder
from ..gsv.ssl import SSL_SAMPLE_RATE, HubertEncoder, ssl_pad_samples
from ..gsv.streaming import StreamDecoder, StreamingConfig, TokenChunker, to_int16
from ..gsv.t2s import BERT_DIM, GenerationCancelled, SamplingParams, Text2Semantic, intra_op_threads
from ..gsv.t2s_batch import ContinuousBatcher, DecodeRequest
from ..text.frontend import TextFrontend
from ..text.segmentation import SPLITS, EmptyTextError, pre_seg_text
from ..voices import BundleCache, ModelPaths, Voice, VoiceBundle, VoiceParams, bundle_key, file_identity
from .decode_threads import choose_decode_threads
from .pipeline import AudioWorker, PendingAudio, decode_in_batch, settle_cuda_work, use_own_cuda_stream
from .speech import Emit, ShouldStop, Speech, SynthesisError

_LOGGER = logging.getLogger(__name__)

# Silence after each sentence (upstream's fragment_interval), so sentences do not run together.
SENTENCE_GAP_SECONDS = 0.3
# What the v1/v2 family (v2, v2Pro, v2ProPlus) vocodes at; v3 and v4 have their own vocoders.
SUPPORTED_OUTPUT_RATE = 32000
VOCODER_OUTPUT_RATES = {"v3": 24000, "v4": 48000}
# The code that makes a voice bundle: the text frontend (transcript -> phones), the models'
# reference side (HuBERT codes, BERT features, timbre) and build_bundle here. Its content is part of
# the bundle key, so changed code rebuilds bundles without anyone bumping a version number.
_PACKAGE = Path(__file__).resolve().parent.parent
BUNDLE_CODE = (_PACKAGE / "text", _PACKAGE / "gsv", Path(__file__).resolve())


def code_fingerprint(paths: tuple[Path, ...] = BUNDLE_CODE) -> str:
    """SHA-256 over the files (source and data; caches skipped) under ``paths``, names included."""
    digest = hashlib.sha256()
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


# How SoVITS work is run: at once (run_now), or handed to the vocoder worker (PendingAudio.submit).
RunAudio = Callable[[Callable[[], None]], None]
# Mixed into a request's seed for its SoVITS generator. The GPT and SoVITS draw at the same time
# when they overlap (the CPU's vocoder worker, the GPU's batcher), so one shared generator made a
# seed's audio depend on which thread drew first; with their own, a seed gives the same audio in
# every path (serial, overlapped, batched).
AUDIO_SEED_SALT = 0x5EED_A0D10


def run_now(task: Callable[[], None]) -> None:
    task()


@dataclass(frozen=True)
class BackendSettings:
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    max_model_pairs: int = 2  # GPT/SoVITS pairs kept loaded (voices may bring their own weights)
    sentence_gap: float = SENTENCE_GAP_SECONDS
    # Opt-in CPU speed mode: int8 GPT weights (faster decode, tokens not bit-exact with upstream).
    gpt_int8: bool = False
    # GPT and SoVITS on two workers: SoVITS runs on its own thread with this many torch threads
    # while the GPT goes on (0: one after the other on the engine's thread).
    vocoder_threads: int = 0
    # The GPT's decode steps on the CPU run on this many threads (at most the caller's); None:
    # measured for each model before it first speaks (choose_decode_threads).
    decode_threads: int | None = None
    # Requests spoken at once (the engine's workers): above 1, their GPTs share decode steps on
    # one ContinuousBatcher per model pair, with this many rows.
    concurrent_requests: int = 1


@dataclass
class ModelPair:
    """One voice's GPT and SoVITS, plus the symbol-table version its text needs."""

    t2s: Text2Semantic
    sovits: SovitsBase  # SovitsModel (v1/v2 family) or SovitsV3Model (v3/v4)
    text_version: str
    decode_threads_set: bool = False  # t2s.decode_threads chosen (before the pair first speaks)
    # With concurrent requests: the GPT's batcher (started on first use), the sentences using it
    # now, and whether the pair was unloaded (its batcher closes when the last of them ends).
    batcher: ContinuousBatcher | None = None
    batcher_users: int = 0
    evicted: bool = False


@dataclass
class TextFeatures:
    phone_ids: torch.Tensor  # int64 [P]
    bert: torch.Tensor  # float [1024, P]


class GsvBackend:
    """SpeakerFactory for GPT-SoVITS voices."""

    def __init__(
        self,
        models: ModelPaths,
        cache: BundleCache,
        settings: BackendSettings | None = None,
        frontend: TextFrontend | None = None,
        on_broken: Callable[[str, str], None] | None = None,
    ) -> None:
        self.models = models
        self.cache = cache
        self.settings = settings or BackendSettings()
        self.frontend = frontend or TextFrontend()
        self.on_broken = on_broken
        self._shared: dict[str, tuple[str, Any]] = {}  # HuBERT, BERT, speaker model: (file identity, model)
        self._pairs: OrderedDict[tuple[Path, Path, str, str], ModelPair] = OrderedDict()
        self._vocoders: dict[Path, Vocoder] = {}  # shared by every v3/v4 voice of a version
        # Decode threads timed per GPT shape (parameters, dtype, int8, threads): voices with their
        # own weights of the same architecture are not timed again.
        self._timed_decode_threads: dict[tuple[int, str, bool, int], int] = {}
        self._bundles: dict[str, tuple[Voice, str, VoiceBundle]] = {}
        self._lock = threading.RLock()  # the CLI and warm-up may call from another thread
        self._audio_worker: AudioWorker | None = None
        self.code_fingerprint = code_fingerprint()  # once per backend (one per process)

    # ------------------------------------------------------------------ SpeakerFactory
    def speaker(self, voice: Voice, params: VoiceParams, mode: str) -> "GsvSpeaker":
        return GsvSpeaker(self, voice, params, mode)

    def output_rate(self, voice: Voice | None) -> int:
        """The voice's sample rate: its loaded SoVITS model's, else that of every supported version
        (a voice whose model does not load still gets answered in its format by the fallback)."""
        if voice is None:
            return SUPPORTED_OUTPUT_RATE
        pair = self._loaded_pair(voice)
        return pair.sovits.output_rate if pair is not None else _output_rate_of_file(voice.sovits)

    def audio_worker(self) -> AudioWorker | None:
        """The SoVITS worker thread when GPT and SoVITS overlap (started on first use). None when
        the GPT batches: its batcher's thread already runs beside the worker that vocodes."""
        if self.settings.vocoder_threads <= 0 or self.batches:
            return None
        with self._lock:
            if self._audio_worker is None:
                self._audio_worker = AudioWorker(self.settings.vocoder_threads)
            return self._audio_worker

    @property
    def batches(self) -> bool:
        """Whether the GPTs of concurrent requests share a ContinuousBatcher."""
        return self.settings.concurrent_requests > 1

    def close(self) -> None:
        with self._lock:
            worker, self._audio_worker = self._audio_worker, None
            batchers = [pair.batcher for pair in self._pairs.values() if pair.batcher is not None]
            for pair in self._pairs.values():
                pair.batcher = None
        if worker is not None:
            worker.close()
        for batcher in batchers:
            batcher.close()  # sentences still waiting on it end as cancelled

    # ------------------------------------------------------------------ models
    @property
    def device(self) -> torch.device:
        return torch.device(self.settings.device)

    def hubert(self) -> HubertEncoder:
        return self._shared_model("HuBERT", self.models.hubert, HubertEncoder.from_folder)

    def bert(self) -> BertFeaturizer:
        return self._shared_model("BERT", self.models.bert, BertFeaturizer.from_folder)

    def speaker_encoder(self) -> SpeakerEncoder:
        return self._shared_model(
            "the speaker-verification model", self.models.sv, lambda path, device, _dtype: SpeakerEncoder.from_file(path, device)
        )

    def _shared_model(self, what: str, path: Path, load: Callable):
        """One instance per process, loaded again when its files are replaced (size or mtime)."""
        identity = file_identity(path)
        with self._lock:
            known = self._shared.get(what)
            if known is None or known[0] != identity:
                _LOGGER.info("Loading %s from %s", what, path)
                self._shared[what] = (identity, load(path, self.device, self.settings.dtype))
                settle_cuda_work(self.device)  # other workers use it at once, on their own streams
            return self._shared[what][1]

    def model_pair(self, gpt: Path, sovits: Path) -> ModelPair:
        key = (gpt, sovits, file_identity(gpt), file_identity(sovits))  # a replaced file loads again
        with self._lock:
            pair = self._pairs.get(key)
            if pair is not None:
                self._pairs.move_to_end(key)
                return pair
            _LOGGER.info("Loading GPT %s and SoVITS %s", gpt, sovits)
            gpt_ckpt = load_gpt_checkpoint(gpt)
            sovits_ckpt = load_sovits_checkpoint(sovits)
            pair = ModelPair(
                t2s=Text2Semantic.from_checkpoint(gpt_ckpt, self.device, self.settings.dtype),
                sovits=self._sovits_model(sovits_ckpt),
                text_version=gpt_ckpt.version,
            )
            if self.settings.gpt_int8:
                try:
                    pair.t2s.quantize_int8()
                except ValueError as err:
                    _LOGGER.warning("Keeping float GPT weights: %s", err)
            settle_cuda_work(self.device)  # other workers use it at once, on their own streams
            self._pairs[key] = pair
            retired: list[ContinuousBatcher] = []
            while len(self._pairs) > self.settings.max_model_pairs:
                _key, evicted = self._pairs.popitem(last=False)
                evicted.evicted = True
                if evicted.batcher is not None and evicted.batcher_users == 0:
                    retired.append(evicted.batcher)
                    evicted.batcher = None
        for batcher in retired:
            batcher.close()  # idle: nothing is cancelled
        return pair

    @contextmanager
    def batcher(self, pair: ModelPair) -> Iterator[ContinuousBatcher]:
        """The pair's GPT batcher (started on first use) for one sentence. A pair unloaded
        meanwhile keeps it until its last sentence is done, then closes it."""
        with self._lock:
            if pair.batcher is None:
                on_start = (lambda: use_own_cuda_stream(self.device)) if self.device.type == "cuda" else None
                pair.batcher = ContinuousBatcher(pair.t2s, max_rows=self.settings.concurrent_requests, on_start=on_start)
                pair.batcher.start()
            pair.batcher_users += 1
            batcher = pair.batcher
        try:
            yield batcher
        finally:
            with self._lock:
                pair.batcher_users -= 1
                retired = pair.evicted and pair.batcher_users == 0 and pair.batcher is batcher
                if retired:
                    pair.batcher = None
            if retired:
                batcher.close()

    def set_decode_threads(self, pair: ModelPair) -> None:
        """Chooses the pair's GPT decode threads before it first generates (not at load: building a
        voice's bundle, e.g. `wyoming-gsv voices`, never generates and need not pay for the timing)."""
        with self._lock:
            if not pair.decode_threads_set:
                pair.t2s.decode_threads = self._decode_threads(pair.t2s)
                pair.decode_threads_set = True

    def _decode_threads(self, t2s: Text2Semantic) -> int | None:
        if self.settings.decode_threads is not None or self.device.type != "cpu":
            return self.settings.decode_threads
        threads = torch.get_num_threads()
        shape = (sum(p.numel() for p in t2s.parameters()), str(t2s.dtype), t2s.is_int8, threads)
        if shape not in self._timed_decode_threads:
            try:
                self._timed_decode_threads[shape] = choose_decode_threads(t2s, threads)
            except Exception as err:  # a model that loaded must not fail on a measurement
                _LOGGER.warning("Could not time the GPT's decode steps (%s); they use every thread", err)
                return None
        return self._timed_decode_threads[shape]

    def _sovits_model(self, ckpt: SovitsCheckpoint) -> SovitsBase:
        if ckpt.version not in VOCODER_VERSIONS:
            return sovits_from_checkpoint(ckpt, self.device, self.settings.dtype)
        # v3/v4: the vocoder (and a LoRA's base) sit in DIR/models/ under upstream's names.
        base, vocoder_path = self.models.v3_files(ckpt.version)
        vocoder = self._vocoders.get(vocoder_path)
        if vocoder is None:
            _LOGGER.info("Loading the SoVITS %s vocoder from %s", ckpt.version, vocoder_path)
            vocoder = load_vocoder(ckpt.version, vocoder_path)
            self._vocoders[vocoder_path] = vocoder
        return SovitsV3Model.from_checkpoint(ckpt, vocoder, base=base, device=self.device, dtype=self.settings.dtype)

    # ------------------------------------------------------------------ voice bundles
    def bundle(self, voice: Voice) -> VoiceBundle:
        """The voice's precomputed reference side: memory, else disk cache, else built now."""
        with self._lock:
            name = voice.bundle_id  # a style has its own bundle
            known = self._bundles.get(name)
            if known is not None and known[0] is voice:
                return known[2]
            key = self.bundle_key(voice)
            if known is not None and known[1] == key:
                self._bundles[name] = (voice, key, known[2])
                return known[2]
            bundle = self.cache.load(name, key)
            if bundle is None:
                _LOGGER.info("Building voice bundle for %r", name)
                bundle = self.build_bundle(voice)
                try:
                    self.cache.save(name, key, bundle)
                except OSError as err:  # e.g. a data dir mounted read-only: speak anyway
                    _LOGGER.warning("Cannot cache the bundle of voice %r (%s); it is rebuilt each start", name, err)
            bundle = bundle.to(self.device, self.settings.dtype)
            settle_cuda_work(self.device)  # other workers use it at once, on their own streams
            self._bundles[name] = (voice, key, bundle)
            return bundle

    def bundle_key(self, voice: Voice) -> str:
        return bundle_key(voice, self.models, {"dtype": str(self.settings.dtype), "code": self.code_fingerprint})

    def has_bundle(self, voice: Voice, key: str | None = None) -> bool:
        """Whether the voice's bundle is in memory or in the disk cache (nothing is built or loaded);
        `key`: its bundle_key, if the caller has it. Reads without the lock (a single dict read is
        atomic): a status request must not wait for a build that holds it."""
        known = self._bundles.get(voice.bundle_id)
        if known is not None and known[0] is voice:
            return True
        key = key or self.bundle_key(voice)
        return (known is not None and known[1] == key) or self.cache.path_for(voice.bundle_id, key).is_file()

    def loaded_version(self, voice: Voice) -> str | None:
        """The SoVITS version of the voice's model files, if they are loaded."""
        pair = self._loaded_pair(voice)
        return pair.sovits.version if pair is not None else None

    def _loaded_pair(self, voice: Voice) -> ModelPair | None:
        """The most recently used loaded pair of the voice's model files (pairs are keyed by their
        file identities too). Reads a snapshot without the lock, as has_bundle does: a status
        request must not wait for a load that holds it."""
        pairs = [pair for key, pair in list(self._pairs.items()) if key[:2] == (voice.gpt, voice.sovits)]
        return pairs[-1] if pairs else None

    def build_bundle(self, voice: Voice) -> VoiceBundle:
        pair = self.model_pair(voice.gpt, voice.sovits)
        sovits = pair.sovits
        wav16k = load_audio(voice.reference.path, SSL_SAMPLE_RATE)
        features = self.hubert().features(wav16k, ssl_pad_samples(sovits.sampling_rate))
        prompt_codes = sovits.extract_prompt_codes(features).reshape(-1).to("cpu", torch.int64)
        # v3/v4 use the first reference only (upstream ignores aux references there).
        refs = (voice.reference,) if isinstance(sovits, SovitsV3Model) else (voice.reference, *voice.aux_references)
        references = [load_reference_audio(ref.path, sovits.sampling_rate) for ref in refs]
        specs = [sovits.spectrogram(torch.from_numpy(audio)) for audio in references]
        speakers = None
        if sovits.needs_speaker_embedding:  # v2Pro family: ge also carries the speaker
            encoder = self.speaker_encoder()
            speakers = [encoder.embed(audio, sovits.sampling_rate) for audio in references]
        ge = sovits.global_embedding(specs, speakers)
        prompt = self.text_features(prompt_text(voice), voice.prompt_language, pair.text_version)
        # Kept beside ge so the speaker network never runs again for this voice (one row per reference).
        extras = {"speaker_embeddings": torch.stack(speakers).float().cpu()} if speakers else {}
        if isinstance(sovits, SovitsV3Model):  # the sampler's in-context prompt: reference mel + features
            context = sovits.prompt_context(prompt_codes, prompt.phone_ids, ge, sovits.reference_mel(voice.reference.path))
            extras |= {"prompt_mel": context.mel[0].float().cpu(), "prompt_features": context.features[0].float().cpu()}
        return VoiceBundle(
            prompt_codes=prompt_codes,
            prompt_phones=prompt.phone_ids,
            prompt_bert=prompt.bert.float().cpu(),
            ge=ge.float().cpu(),
            extras=extras,
        )

    def prepare(self, voice: Voice) -> tuple[ModelPair, VoiceBundle]:
        """Models and bundle for a voice; a broken file marks the voice broken and is reported."""
        try:
            return self.model_pair(voice.gpt, voice.sovits), self.bundle(voice)
        except (ModelFileError, AudioFileError) as err:
            self._left_out(voice, str(err), err)
        except Exception as err:  # e.g. the text frontend on the transcript: unusable all the same
            _LOGGER.exception("Preparing voice %r failed", voice.bundle_id)
            self._left_out(voice, f"cannot prepare the voice: {type(err).__name__}: {err}", err)

    def _left_out(self, voice: Voice, problem: str, cause: Exception) -> NoReturn:
        """Every request of the voice would fail the same way: it is left out until its files
        change. A style's bad clip spoils that style only; bad model files spoil the voice."""
        if self.on_broken is not None and (voice.style is None or isinstance(cause, ModelFileError)):
            self.on_broken(voice.id, problem)
        raise SynthesisError(f"voice {voice.bundle_id!r} cannot be used: {problem}", code="voice-unusable") from cause

    # ------------------------------------------------------------------ text
    def text_features(self, text: str, mode: str, version: str, *, other_scripts: bool = False) -> TextFeatures:
        """Phone ids and BERT features (BERT only for Chinese segments, zeros elsewhere);
        ``other_scripts``: spans in a script ``mode`` does not read are read in ``auto`` mode.
        Under the backend's lock: the frontend (its dictionaries and segmenters) is not made for
        several threads, and one lock, not two, since bundles are built under it and the BERT
        model loads under it (two locks taken in both orders could deadlock)."""
        with self._lock:
            phonemized = self.frontend.phonemize(text, mode, version, other_scripts=other_scripts)
            parts = []
            for segment in phonemized.segments:
                if not segment.phone_ids:
                    continue
                if segment.lang == "zh" and segment.word2ph:
                    parts.append(self.bert().features(segment.norm_text, segment.word2ph).float().cpu())
                else:
                    parts.append(torch.zeros(BERT_DIM, len(segment.phone_ids)))
        return TextFeatures(
            phone_ids=torch.tensor(phonemized.phone_ids, dtype=torch.int64),
            bert=torch.cat(parts, dim=1) if parts else torch.zeros(BERT_DIM, 0),
        )

    # ------------------------------------------------------------------ synthesis
    def speak_features(
        self,
        pair: ModelPair,
        bundle: VoiceBundle,
        target: TextFeatures,
        params: VoiceParams,
        should_stop: ShouldStop,
        generator: torch.Generator | None,
        emit: Emit,
        run_audio: RunAudio = run_now,
        audio_generator: torch.Generator | None = None,
    ) -> None:
        """GPT then SoVITS for one sentence, then the silence between sentences. With sub-sentence
        streaming (upstream's streaming modes) the audio goes to `emit` chunk by chunk while the
        GPT is still generating; otherwise (or for a model without streaming) as one piece.
        Every SoVITS call and emit goes through `run_audio` (at once, or in order on the
        vocoder worker while the GPT goes on). `generator` drives the GPT's sampling,
        `audio_generator` SoVITS's noise (None: the default generators)."""
        device, dtype = self.device, self.settings.dtype
        self.set_decode_threads(pair)
        phones = torch.cat([bundle.prompt_phones, target.phone_ids.to(device)])
        bert = torch.cat([bundle.prompt_bert, target.bert.to(device, dtype)], dim=1)
        sampling = SamplingParams(
            top_k=params.top_k,
            top_p=params.top_p,
            temperature=params.temperature,
            repetition_penalty=params.repetition_penalty,
        )
        target_phones = target.phone_ids.to(device)
        rate = pair.sovits.output_rate
        streaming = streaming_config(params, pair.sovits)
        stream = None
        if streaming is not None:
            stream = SentenceStream(pair, target_phones, bundle.ge, params, streaming, sampling, audio_generator, emit, run_audio)
        on_token = stream.on_token if stream is not None else None
        try:
            if self.batches:
                with self.batcher(pair) as batcher:
                    request = DecodeRequest(phones, bert, bundle.prompt_codes, sampling, generator, should_stop)
                    codes = decode_in_batch(batcher, request, on_token, device)
            else:
                codes = pair.t2s.generate(
                    phones,
                    bert,
                    bundle.prompt_codes,
                    sampling,
                    generator=generator,
                    should_stop=should_stop,
                    on_token=on_token,
                )
        except GenerationCancelled:
            return
        if should_stop():
            return
        if stream is not None:
            if not stream.finish():
                return
        elif codes.numel() == 0:
            return
        else:

            def vocode() -> None:
                if isinstance(pair.sovits, SovitsV3Model):  # v3/v4: whole sentences (upstream has no finer streaming)
                    context = PromptContext(bundle.extras["prompt_features"][None], bundle.extras["prompt_mel"][None])
                    audio = pair.sovits.synthesize(
                        codes, target_phones, bundle.ge, context, sample_steps=params.sample_steps, speed=params.speed,
                        generator=audio_generator,
                    )
                else:
                    audio = pair.sovits.decode(
                        codes, target_phones, bundle.ge, speed=params.speed, noise_scale=params.noise_scale,
                        generator=audio_generator,
                    )
                emit(Speech(rate=rate, samples=to_int16(audio)))

            run_audio(vocode)
        gap = np.zeros(int(self.settings.sentence_gap * rate), dtype=np.int16)
        run_audio(lambda: emit(Speech(rate=rate, samples=gap)))


def streaming_config(params: VoiceParams, sovits: SovitsBase) -> StreamingConfig | None:
    """The request's sub-sentence streaming settings; None for whole sentences (asked for, or a
    model without upstream's streaming: v3/v4)."""
    if params.chunking == "sentence" or not getattr(sovits, "supports_streaming", False):
        return None
    return StreamingConfig(rule=params.chunking, min_chunk_tokens=params.min_chunk_tokens)  # type: ignore[arg-type]


class SentenceStream:
    """One sentence streamed as upstream's streaming modes do: the GPT's tokens are cut into
    chunks (`TokenChunker`) and each chunk is vocoded and played at once (`StreamDecoder`)."""

    def __init__(
        self,
        pair: ModelPair,
        phones: torch.Tensor,
        ge: torch.Tensor,
        params: VoiceParams,
        config: StreamingConfig,
        sampling: SamplingParams,
        generator: torch.Generator | None,
        emit: Emit,
        run_audio: RunAudio = run_now,
    ) -> None:
        early_stop = sampling.early_stop if sampling.early_stop is not None else pair.t2s.config.early_stop_num
        stop_after = sampling.max_tokens if early_stop is None else min(sampling.max_tokens, early_stop + 1)
        similarity = pair.t2s.mute_similarity() if config.rule == "split" else None
        self.chunker = TokenChunker(config, similarity, stop_after)
        self.decoder = StreamDecoder(
            pair.sovits, phones, ge, config, speed=params.speed, noise_scale=params.noise_scale, generator=generator
        )
        self.rate = pair.sovits.sampling_rate
        self.emit = emit
        self.run_audio = run_audio
        self.chunks = 0  # chunks handed to the vocoder so far

    def on_token(self, token: int) -> None:
        chunk = self.chunker.add(token)
        if chunk is not None:
            self._play(lambda: self.decoder.piece(chunk, final=False))

    def finish(self) -> bool:
        """The last chunk (or the held-back tail); False if the sentence had no tokens at all."""
        rest = self.chunker.finish()
        if rest is not None:
            self._play(lambda: self.decoder.piece(rest, final=True))
        elif self.chunks:
            self._play(self.decoder.tail)
        return self.chunks > 0

    def _play(self, make_audio: Callable[[], torch.Tensor | None]) -> None:
        self.chunks += 1

        def vocode() -> None:
            audio = make_audio()
            if audio is not None:
                self.emit(Speech(rate=self.rate, samples=to_int16(audio)))

        self.run_audio(vocode)


def _output_rate_of_file(sovits: Path) -> int:
    """The output rate of a SoVITS file not loaded yet, from its version (read from the first bytes)."""
    try:
        with open(sovits, "rb") as file:
            head = file.read(HASH_PREFIX_BYTES)
        version = guess_sovits_version(head, sovits.stat().st_size)[1]
    except (OSError, ValueError):
        return SUPPORTED_OUTPUT_RATE
    return VOCODER_OUTPUT_RATES.get(version, SUPPORTED_OUTPUT_RATE)


def prompt_text(voice: Voice) -> str:
    """The transcript as upstream feeds it: ending in a full stop if it ends in no split mark."""
    text = voice.transcript.strip("\n")
    if text[-1] not in SPLITS:
        text += "." if voice.prompt_language == "en" else "。"
    return text


class GsvSpeaker:
    """A voice with its settings for one request; the seed (if any) drives its two generators."""

    def __init__(self, backend: GsvBackend, voice: Voice, params: VoiceParams, mode: str) -> None:
        self.backend = backend
        self.voice = voice
        self.params = params
        self.mode = mode  # text language mode of this request
        self._generator: torch.Generator | None = None  # the GPT's sampling
        self._audio_generator: torch.Generator | None = None  # SoVITS's noise
        if params.seed is not None:
            self._generator = torch.Generator(backend.device).manual_seed(params.seed)
            self._audio_generator = torch.Generator(backend.device).manual_seed(params.seed ^ AUDIO_SEED_SALT)
        self._audio_started = False  # the request's first SoVITS call went out

    def prepare(self) -> None:
        self.backend.prepare(self.voice)

    def speak(self, text: str, should_stop: ShouldStop, emit: Emit) -> PendingAudio | None:
        """Speak one sentence. With the vocoder worker this returns as soon as the GPT is done,
        and the PendingAudio tells when (and whether) the audio is all out; None: it is out."""
        worker = self.backend.audio_worker()
        if worker is None:
            self._speak(text, should_stop, emit, run_now)
            return None
        own_threads = torch.get_num_threads()
        if worker.idle and not self._streams():
            # One SoVITS call per sentence leaves nothing to overlap within it, and halving the
            # threads made whole sentences 5-12 % slower (bench_cpu): one after the other here,
            # on the worker's threads too.
            with intra_op_threads(own_threads + worker.threads):
                self._speak(text, should_stop, emit, run_now)
            return None
        pending = PendingAudio(worker, should_stop)
        if not self._audio_started and worker.idle:
            # The fast path to the first audio: until it is out, the GPT and that first SoVITS
            # call run here with the worker's threads too, as without the worker.
            torch.set_num_threads(own_threads + worker.threads)
        try:
            self._speak(text, should_stop, emit, self._overlapped(pending, own_threads))
        except Exception as err:  # reported after the audio already handed over, in order
            pending.submit(functools.partial(_raise, err))  # bound now: `err` is unset after the block
        finally:
            torch.set_num_threads(own_threads)
        return pending

    def _streams(self) -> bool:
        """Whether this request's sentences are vocoded chunk by chunk as the GPT goes."""
        if self.params.chunking == "sentence":
            return False  # no need to load the models to know
        pair, _bundle = self.backend.prepare(self.voice)
        return streaming_config(self.params, pair.sovits) is not None

    def _overlapped(self, pending: PendingAudio, own_threads: int) -> RunAudio:
        """SoVITS calls for the vocoder worker, but the request's first one here, while the GPT
        waits (the first audio is what a listener waits for; overlapping pays from the second
        chunk on); then the GPT goes back to its own threads."""

        def run_audio(task: Callable[[], None]) -> None:
            if self._audio_started:
                pending.submit(task)
                return
            self._audio_started = True
            pending.run_here_if_idle(task)
            torch.set_num_threads(own_threads)

        return run_audio

    def _speak(self, text: str, should_stop: ShouldStop, emit: Emit, run_audio: RunAudio) -> None:
        pair, bundle = self.backend.prepare(self.voice)
        if self.voice.text_split:
            chunks = [text]  # already one of pre_seg_text's chunks (the voice's OfficialSplitter)
        else:
            try:
                # Upstream's per-text fix-ups (a leading mark before a very short text, a closing
                # full stop, very long text split); "cut0": the sentence splitter already cut it.
                chunks = pre_seg_text(text, self.mode, "cut0")
            except EmptyTextError:
                return
        for chunk in chunks:
            if should_stop():
                return
            try:
                target = self.backend.text_features(chunk, self.mode, pair.text_version, other_scripts=True)
            except EmptyTextError:
                continue
            self.backend.speak_features(
                pair, bundle, target, self.params, should_stop, self._generator, emit, run_audio, self._audio_generator
            )


def _raise(err: BaseException) -> None:
    raise err
