"""The GPT-SoVITS backend on the tiny fixture models: bundles, seeds, low-latency chunked vocoding."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from voice_data import make_tiny_data_dir
from wyoming_gsv.synthesis.gsv_backend import BUNDLE_CODE, BackendSettings, GsvBackend, code_fingerprint
from wyoming_gsv.synthesis.speech import Speech, SynthesisError
from wyoming_gsv.voices import BundleCache, ModelPaths, VoiceRegistry

TEXT = "Hello there, how are you doing today?"


@pytest.fixture(scope="module")
def setup(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    torch.set_num_threads(1)
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("gsv-backend"), unpacked_v2)
    models = ModelPaths.resolve(data_dir)
    voice = VoiceRegistry(models).get("tiny")
    assert voice is not None
    backend = GsvBackend(models, BundleCache(data_dir / "cache"))
    return backend, voice


def _sibling(backend: GsvBackend, settings: BackendSettings) -> GsvBackend:
    """A backend on the same models, bundle cache and text frontend, with other settings."""
    return GsvBackend(backend.models, backend.cache, settings, frontend=backend.frontend)


def _speak(backend: GsvBackend, voice, params=None, stop=lambda: False) -> list[Speech]:
    pieces: list[Speech] = []
    backend.speaker(voice, params or voice.params, "en").speak(TEXT, stop, pieces.append)
    return pieces


def test_whole_sentence_then_gap(setup) -> None:
    backend, voice = setup
    speech, gap = _speak(backend, voice, replace(voice.params, chunking="sentence"))
    assert speech.rate == 32000 and speech.samples.dtype == np.int16
    assert speech.samples.size % backend.model_pair(voice.gpt, voice.sovits).sovits.samples_per_code == 0
    assert gap.samples.size == int(0.3 * 32000) and not gap.samples.any()


def test_loaded_version_names_the_loaded_sovits_model(setup) -> None:
    """What the voice page shows: None before the voice's models load, their version after."""
    backend, voice = setup
    fresh = _sibling(backend, backend.settings)
    assert fresh.loaded_version(voice) is None
    pair = fresh.model_pair(voice.gpt, voice.sovits)
    assert fresh.loaded_version(voice) == pair.sovits.version == "v2"
    assert fresh.output_rate(voice) == pair.sovits.output_rate


def test_seed_makes_sampling_repeatable(setup) -> None:
    backend, voice = setup
    params = replace(voice.params, top_k=15, noise_scale=0.5, seed=1234)
    first = np.concatenate([p.samples for p in _speak(backend, voice, params)])
    second = np.concatenate([p.samples for p in _speak(backend, voice, params)])
    other = np.concatenate([p.samples for p in _speak(backend, voice, replace(params, seed=99))])
    assert np.array_equal(first, second)
    assert not (first.shape == other.shape and np.array_equal(first, other))


def test_cancelled_before_start_emits_nothing(setup) -> None:
    backend, voice = setup
    assert _speak(backend, voice, stop=lambda: True) == []


@pytest.mark.parametrize("chunking", ["fixed", "split"])
def test_streaming_sends_audio_while_the_gpt_is_still_decoding(setup, chunking: str) -> None:
    """The default: upstream's streaming (chunk by chunk; fixture-exact in test_streaming.py)."""
    backend, voice = setup
    assert voice.params.chunking == "fixed" and voice.params.min_chunk_tokens == 12
    pair = backend.model_pair(voice.gpt, voice.sovits)
    generated = 0
    original_forward = pair.t2s.forward_cached

    def counting_forward(*args, **kwargs):
        nonlocal generated
        generated += 1
        return original_forward(*args, **kwargs)

    pair.t2s.forward_cached = counting_forward
    pieces: list[Speech] = []
    tokens_at_emit: list[int] = []

    def emit(speech: Speech) -> None:
        tokens_at_emit.append(generated)
        pieces.append(speech)

    try:
        params = replace(voice.params, chunking=chunking, min_chunk_tokens=4)
        backend.speaker(voice, params, "en").speak(TEXT, lambda: False, emit)
    finally:
        del pair.t2s.forward_cached
    assert len(pieces) >= 3  # at least two audio pieces plus the gap
    assert tokens_at_emit[0] < tokens_at_emit[-1]  # the first audio left while the GPT was still decoding
    assert pieces[-1].samples.size == int(0.3 * 32000) and not pieces[-1].samples.any()


def test_v2pro_voice_uses_the_speaker_embedding(setup, v2pro_tiny: Path, tmp_path_factory) -> None:
    """A v2Pro SoVITS file: the bundle's ge comes from spectrogram + ERes2NetV2 speaker embedding."""
    from conftest import reference_clip, unpack_xz
    from voice_data import make_voice, tiny_voice_config

    backend, voice = setup
    shared = tmp_path_factory.getbasetemp() / "sv-shared"  # the same place test_sovits_pro unpacks to
    sv = unpack_xz(v2pro_tiny / "sv" / "pretrained_eres2netv2w24s4ep4.ckpt.xz", shared / "pretrained_eres2netv2w24s4ep4.ckpt")
    sovits = unpack_xz(v2pro_tiny / "s2_tiny_v2pro.pth.xz", shared / "s2_tiny_v2pro.pth")
    data_dir = backend.models.data_dir
    folder = make_voice(data_dir, "pro", reference=reference_clip(v2pro_tiny), config=tiny_voice_config(sovits=str(sovits)))
    models = ModelPaths.resolve(data_dir, sv=sv, allowed_roots=(shared,))  # the sovits file lies outside the data dir
    pro_voice = VoiceRegistry(models).get(folder.name)
    assert pro_voice is not None
    pro = GsvBackend(models, backend.cache, frontend=backend.frontend)
    pieces: list[Speech] = []
    pro.speaker(pro_voice, pro_voice.params, "en").speak(TEXT, lambda: False, pieces.append)
    assert pro.model_pair(pro_voice.gpt, pro_voice.sovits).sovits.needs_speaker_embedding
    assert pieces and pieces[0].samples.size > 0
    # Without the speaker model the voice is unusable, with a message naming the file.
    missing = GsvBackend(ModelPaths.resolve(data_dir, sv=data_dir / "nope.ckpt"), BundleCache(data_dir / "other-cache"))
    with pytest.raises(SynthesisError, match="nope.ckpt"):
        missing.prepare(pro_voice)


def test_voice_speaks_when_its_bundle_cannot_be_cached(setup, tmp_path: Path, caplog) -> None:
    """A read-only (or full) cache folder made every request of the voice fail; the bundle is
    only a cache."""
    backend, voice = setup
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    uncached = GsvBackend(backend.models, BundleCache(blocked / "cache"), frontend=backend.frontend)
    with caplog.at_level("WARNING"):
        pieces: list[Speech] = []
        uncached.speaker(voice, voice.params, "en").speak(TEXT, lambda: False, pieces.append)
    assert pieces and pieces[0].samples.size > 0
    assert "Cannot cache the bundle of voice 'tiny'" in caplog.text


def test_int8_gpt_mode_still_speaks(setup) -> None:
    backend, voice = setup
    fast = _sibling(backend, BackendSettings(gpt_int8=True))
    pieces: list[Speech] = []
    fast.speaker(voice, voice.params, "en").speak(TEXT, lambda: False, pieces.append)
    assert pieces and pieces[0].samples.size > 0
    assert fast.model_pair(voice.gpt, voice.sovits).t2s.is_int8


def test_prompt_text_gets_a_closing_mark_like_upstream(setup) -> None:
    from wyoming_gsv.synthesis.gsv_backend import prompt_text

    _, voice = setup
    assert prompt_text(replace(voice, transcript="Hi there")) == "Hi there."
    assert prompt_text(replace(voice, transcript="你好", prompt_language="zh")) == "你好。"
    assert prompt_text(replace(voice, transcript="Hi there!")) == "Hi there!"


def test_code_fingerprint_follows_the_code(tmp_path: Path) -> None:
    """Any change to a source or data file changes the fingerprint; compiled caches do not."""
    package = tmp_path / "text"
    (package / "data").mkdir(parents=True)
    (package / "frontend.py").write_text("A = 1\n")
    (package / "data" / "dict.txt").write_text("word W ER1 D\n")
    before = code_fingerprint((package,))
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "frontend.cpython-311.pyc").write_bytes(b"compiled")
    assert code_fingerprint((package,)) == before
    (package / "data" / "dict.txt").write_text("word W ER0 D\n")
    assert code_fingerprint((package,)) != before
    assert {p.name for p in BUNDLE_CODE} == {"text", "gsv", "gsv_backend.py"}


def test_changed_bundle_code_rebuilds_the_bundle(setup, tmp_path: Path, monkeypatch) -> None:
    """The bundle key covers the code: a backend whose code differs builds anew, an equal one loads."""
    backend, voice = setup
    cache = BundleCache(tmp_path / "cache")
    built = []
    first = GsvBackend(backend.models, cache)
    build = GsvBackend.build_bundle
    monkeypatch.setattr(GsvBackend, "build_bundle", lambda self, v: built.append(1) or build(self, v))
    first.bundle(voice)
    GsvBackend(backend.models, cache).bundle(voice)
    assert len(built) == 1  # same code: loaded from the cache
    changed = GsvBackend(backend.models, cache)
    changed.code_fingerprint = "0" * 64  # as if the frontend had changed
    changed.bundle(voice)
    assert len(built) == 2


def test_overlap_vocodes_on_its_own_worker_while_the_gpt_goes_on(setup) -> None:
    """With the vocoder worker: speak() returns once the GPT is done; the first piece is made on
    the fast path (the calling thread, before the GPT goes on), the rest on the worker thread, in
    order; and it is the audio of the serial path."""
    import threading

    backend, voice = setup
    params = replace(voice.params, min_chunk_tokens=4)
    serial = _speak(backend, voice, params)
    overlapped = _sibling(backend, BackendSettings(vocoder_threads=1))
    pieces: list[Speech] = []
    threads: list[str] = []
    intra_op: list[int] = []
    own = torch.get_num_threads()

    def emit(speech: Speech) -> None:
        threads.append(threading.current_thread().name)
        intra_op.append(torch.get_num_threads())
        pieces.append(speech)

    try:
        pending = overlapped.speaker(voice, params, "en").speak(TEXT, lambda: False, emit)
        assert pending is not None
        assert torch.get_num_threads() == own  # the GPT's own threads again
        pending.wait()
    finally:
        overlapped.close()
    assert len(pieces) > 2
    assert threads[0] == threading.current_thread().name
    assert intra_op[0] == own + 1  # the first audio had the worker's thread too
    assert set(threads[1:]) == {"gsv-vocoder"}
    assert [p.samples.size for p in pieces] == [p.samples.size for p in serial]
    for ours, reference in zip(pieces, serial):
        assert np.abs(ours.samples.astype(int) - reference.samples.astype(int)).max() <= 2


def test_overlap_stops_vocoding_once_cancelled(setup) -> None:
    backend, voice = setup
    overlapped = _sibling(backend, BackendSettings(vocoder_threads=1))
    cancelled = False
    pieces: list[Speech] = []

    def emit(speech: Speech) -> None:
        nonlocal cancelled
        pieces.append(speech)
        cancelled = True  # the client goes away after the first piece

    try:
        params = replace(voice.params, min_chunk_tokens=4)
        pending = overlapped.speaker(voice, params, "en").speak(TEXT, lambda: cancelled, emit)
        pending.wait()
    finally:
        overlapped.close()
    assert len(pieces) == 1


def test_overlap_reports_the_gpt_error_itself(setup, monkeypatch) -> None:
    """A sentence whose GPT side fails reports that error once its earlier audio is out."""
    import threading

    backend, voice = setup
    overlapped = _sibling(backend, BackendSettings(vocoder_threads=1))
    order: list[str] = []
    release = threading.Event()

    def broken(_voice):
        raise RuntimeError("the GPT failed")

    monkeypatch.setattr(overlapped, "prepare", broken)
    try:
        overlapped.audio_worker().put(lambda: (release.wait(30), order.append("earlier audio")))
        pending = overlapped.speaker(voice, voice.params, "en").speak(TEXT, lambda: False, lambda _speech: None)
        assert order == []  # not raised from speak(), ahead of the earlier audio
        release.set()
        with pytest.raises(RuntimeError, match="the GPT failed"):
            pending.wait()
        assert order == ["earlier audio"]
    finally:
        overlapped.close()


def test_whole_sentences_do_not_overlap(setup) -> None:
    """With the vocoder worker, a whole-sentence request (nothing to overlap within a sentence)
    runs one step after the other on the calling thread with the worker's threads too, and
    speak() returns once its audio is out; the audio is the serial path's."""
    import threading

    backend, voice = setup
    params = replace(voice.params, chunking="sentence")
    serial = _speak(backend, voice, params)
    overlapped = _sibling(backend, BackendSettings(vocoder_threads=1))
    pieces: list[Speech] = []
    where: list[tuple[str, int]] = []
    own = torch.get_num_threads()

    def emit(speech: Speech) -> None:
        where.append((threading.current_thread().name, torch.get_num_threads()))
        pieces.append(speech)

    try:
        assert overlapped.speaker(voice, params, "en").speak(TEXT, lambda: False, emit) is None
        assert torch.get_num_threads() == own
    finally:
        overlapped.close()
    assert where == [(threading.current_thread().name, own + 1)] * len(serial)
    assert [p.samples.size for p in pieces] == [p.samples.size for p in serial]
    for ours, reference in zip(pieces, serial):
        assert np.abs(ours.samples.astype(int) - reference.samples.astype(int)).max() <= 2


def test_overlap_first_piece_waits_its_turn_behind_a_busy_worker(setup) -> None:
    """The fast path never overtakes audio still on the worker: with the worker busy, the first
    piece goes to the worker's queue too, after what was there."""
    import threading

    backend, voice = setup
    overlapped = _sibling(backend, BackendSettings(vocoder_threads=1))
    order: list[str] = []
    release = threading.Event()
    try:
        worker = overlapped.audio_worker()
        worker.put(lambda: (release.wait(30), order.append("earlier audio")))
        params = replace(voice.params, min_chunk_tokens=4)
        emit = lambda speech: order.append(threading.current_thread().name)  # noqa: E731
        pending = overlapped.speaker(voice, params, "en").speak(TEXT, lambda: False, emit)
        release.set()
        pending.wait()
    finally:
        overlapped.close()
    assert order[0] == "earlier audio"
    assert set(order[1:]) == {"gsv-vocoder"}


def test_a_seed_gives_the_same_audio_serial_overlapped_and_batched(setup) -> None:
    """The GPT and SoVITS draw from generators of their own: overlapped (vocoder worker) or
    batched (concurrent requests), where they draw at the same time, a seed still gives the
    audio of the serial path."""
    backend, voice = setup
    params = replace(voice.params, top_k=15, noise_scale=0.6, seed=4321, min_chunk_tokens=4)
    serial = np.concatenate([p.samples for p in _speak(backend, voice, params)])
    for settings in (BackendSettings(vocoder_threads=1), BackendSettings(concurrent_requests=2)):
        other = _sibling(backend, settings)
        pieces: list[Speech] = []
        try:
            pending = other.speaker(voice, params, "en").speak(TEXT, lambda: False, pieces.append)
            if pending is not None:
                pending.wait()
        finally:
            other.close()
        audio = np.concatenate([p.samples for p in pieces])
        assert audio.shape == serial.shape, settings
        assert np.abs(audio.astype(int) - serial.astype(int)).max() <= 2, settings
