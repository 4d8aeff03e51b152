"""The GPT's decode steps on their own thread count: the switch inside `generate`, the timing
that picks the count when a model loads, and the backend/CLI settings that fix it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from voice_data import make_tiny_data_dir
from wyoming_gsv.__main__ import parse_args, runtime_settings
from wyoming_gsv.gsv.checkpoints import load_gpt_checkpoint
from wyoming_gsv.gsv.t2s import GenerationCancelled, SamplingParams, Text2Semantic, intra_op_threads
from wyoming_gsv.synthesis import decode_threads
from wyoming_gsv.synthesis.decode_threads import candidate_threads, choose_decode_threads, pick_threads, step_timer
from wyoming_gsv.synthesis.gsv_backend import BackendSettings, GsvBackend
from wyoming_gsv.voices import BundleCache, ModelPaths, VoiceRegistry

GREEDY = SamplingParams(top_k=1, max_tokens=14, early_stop=14)


@pytest.fixture
def two_threads() -> Iterator[None]:
    with intra_op_threads(2):
        yield


@pytest.fixture(scope="module")
def model(v2_tiny: Path) -> Text2Semantic:
    return Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"))


@pytest.fixture(scope="module")
def inputs(model: Text2Semantic) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    phones = torch.randint(0, model.config.phoneme_vocab_size, (20,), generator=gen)
    return phones, torch.randn(1024, 20, generator=gen), torch.randint(0, model.config.eos, (30,), generator=gen)


def _threads_seen(model: Text2Semantic, inputs, **kwargs) -> tuple[torch.Tensor, list[int], list[int]]:
    """generate's tokens, the thread count at each logits computation (prefill first), and at each on_token."""
    in_steps: list[int] = []
    in_callbacks: list[int] = []
    hook = model.ar_predict_layer.register_forward_hook(lambda *_: in_steps.append(torch.get_num_threads()))
    try:
        tokens = model.generate(*inputs, GREEDY, generator=torch.Generator().manual_seed(0),
                                on_token=lambda _t: in_callbacks.append(torch.get_num_threads()), **kwargs)
    finally:
        hook.remove()
    return tokens, in_steps, in_callbacks


@pytest.mark.usefixtures("two_threads")
def test_decode_steps_run_on_decode_threads_while_prefill_and_on_token_keep_the_callers(model, inputs) -> None:
    model.decode_threads = None
    all_threads, steps_all, _ = _threads_seen(model, inputs)
    assert set(steps_all) == {2}
    model.decode_threads = 1
    try:
        tokens, steps, callbacks = _threads_seen(model, inputs)
    finally:
        model.decode_threads = None
    assert steps[0] == 2, "the prefill (a GEMM over the whole prefix) keeps every thread"
    assert len(steps) > 1 and set(steps[1:]) == {1}, "each decode step runs on decode_threads"
    # on_token is where streaming vocodes a chunk: it must get the caller's threads back.
    assert callbacks and set(callbacks) == {2}
    assert torch.get_num_threads() == 2
    np.testing.assert_array_equal(tokens.numpy(), all_threads.numpy())


@pytest.mark.usefixtures("two_threads")
def test_decode_threads_are_restored_when_generation_is_cancelled(model, inputs) -> None:
    calls = iter(range(100))
    model.decode_threads = 1
    try:
        with pytest.raises(GenerationCancelled):
            model.generate(*inputs, GREEDY, should_stop=lambda: next(calls) >= 5)
    finally:
        model.decode_threads = None
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_decode_threads_never_exceed_the_callers(model, inputs) -> None:
    model.decode_threads = 8
    try:
        _tokens, steps, _ = _threads_seen(model, inputs)
    finally:
        model.decode_threads = None
    assert set(steps) == {2}


def test_candidate_thread_counts() -> None:
    assert candidate_threads(1) == [1]
    assert candidate_threads(2) == [1, 2]
    assert candidate_threads(6) == [1, 2, 4, 6]
    assert candidate_threads(8) == [1, 2, 4, 8]


@pytest.mark.parametrize(
    ("seconds", "chosen"),
    [
        ({1: [0.040, 0.041, 0.039], 2: [0.038, 0.039, 0.050]}, 1),  # 2 threads ~3 % faster: not worth it
        ({1: [0.040, 0.041, 0.039], 2: [0.030, 0.031, 0.029]}, 2),  # 25 % faster: worth it
        ({1: [0.012, 0.012, 0.013], 2: [0.021, 0.020, 0.022]}, 1),  # more threads slower (int8 here)
        ({1: [0.080], 2: [0.045], 4: [0.030], 8: [0.029]}, 4),  # 8 within 10 % of 4: the fewer
    ],
)
def test_pick_threads_takes_the_fewest_within_the_tolerance(seconds, chosen) -> None:
    assert pick_threads(seconds) == chosen


def test_choose_decode_threads_times_each_candidate_interleaved(model, caplog) -> None:
    timed: list[int] = []
    per_step = {1: 0.010, 2: 0.004, 4: 0.0039}

    def timer(threads: int) -> list[float]:
        timed.append(threads)
        return [per_step[threads]] * 2

    with caplog.at_level(logging.INFO, logger="wyoming_gsv.synthesis.decode_threads"):
        assert choose_decode_threads(model, 4, timer) == 2
    assert timed == [4] + [1, 2, 4] * decode_threads.ROUNDS  # a warm-up, then rounds in turn
    assert "GPT decode steps on 2 of 4 threads" in caplog.text and "1: 10.0" in caplog.text
    assert choose_decode_threads(model, 1, lambda _t: pytest.fail("nothing to choose on one thread")) == 1


@pytest.mark.usefixtures("two_threads")
def test_step_timer_times_real_steps_and_leaves_the_model_as_it_was(model) -> None:
    model.decode_threads = None
    seconds = step_timer(model)(1)
    assert len(seconds) == decode_threads.STEPS and all(0 < step < 5 for step in seconds)
    assert model.decode_threads is None and torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_step_timer_runs_a_bf16_model(v2_tiny: Path) -> None:
    half = Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"), dtype=torch.bfloat16)
    assert len(step_timer(half)(1)) == decode_threads.STEPS


@pytest.fixture(scope="module")
def tiny_voice(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("decode-threads"), unpacked_v2)
    models = ModelPaths.resolve(data_dir)
    voice = VoiceRegistry(models).get("tiny")
    assert voice is not None
    return models, BundleCache(data_dir / "cache"), voice


@pytest.mark.usefixtures("two_threads")
def test_backend_times_decode_threads_before_a_model_first_speaks(tiny_voice, caplog) -> None:
    models, cache, voice = tiny_voice
    backend = GsvBackend(models, cache)
    with caplog.at_level(logging.INFO, logger="wyoming_gsv.synthesis.decode_threads"):
        backend.prepare(voice)  # loading and building the bundle (`wyoming-gsv voices`) does not time
        pair = backend.model_pair(voice.gpt, voice.sovits)
        assert pair.t2s.decode_threads is None and "GPT decode steps" not in caplog.text
        pieces: list = []
        backend.speaker(voice, voice.params, "en").speak("Hello there.", lambda: False, pieces.append)
    assert pieces and pair.t2s.decode_threads in (1, 2)
    assert f"GPT decode steps on {pair.t2s.decode_threads} of 2 threads" in caplog.text


@pytest.mark.usefixtures("two_threads")
def test_backend_times_a_gpt_shape_once(tiny_voice, tmp_path, monkeypatch) -> None:
    models, cache, voice = tiny_voice
    timings: list[int] = []

    def counting(_model, most):
        timings.append(most)
        return 1

    monkeypatch.setattr("wyoming_gsv.synthesis.gsv_backend.choose_decode_threads", counting)
    backend = GsvBackend(models, cache)
    other_weights = tmp_path / "same-architecture.ckpt"  # a voice's own GPT file, same shapes
    other_weights.write_bytes(voice.gpt.read_bytes())
    first = backend.model_pair(voice.gpt, voice.sovits)
    second = backend.model_pair(other_weights, voice.sovits)
    for pair in (first, second, first):
        backend.set_decode_threads(pair)
    assert first is not second and first.t2s.decode_threads == second.t2s.decode_threads == 1
    assert timings == [2]


@pytest.mark.usefixtures("two_threads")
def test_backend_setting_fixes_decode_threads_without_timing(tiny_voice, monkeypatch) -> None:
    models, cache, voice = tiny_voice
    monkeypatch.setattr("wyoming_gsv.synthesis.gsv_backend.choose_decode_threads",
                        lambda *_: pytest.fail("a fixed setting is not timed"))
    backend = GsvBackend(models, cache, BackendSettings(decode_threads=1))
    pair = backend.model_pair(voice.gpt, voice.sovits)
    backend.set_decode_threads(pair)
    assert pair.t2s.decode_threads == 1


@pytest.mark.usefixtures("two_threads")
def test_a_failed_timing_is_logged_and_the_model_still_loads(tiny_voice, monkeypatch, caplog) -> None:
    models, cache, voice = tiny_voice

    def broken(*_args):
        raise RuntimeError("no clock")

    monkeypatch.setattr("wyoming_gsv.synthesis.gsv_backend.choose_decode_threads", broken)
    backend = GsvBackend(models, cache)
    pair = backend.model_pair(voice.gpt, voice.sovits)
    backend.set_decode_threads(pair)
    assert pair.t2s.decode_threads is None
    assert "Could not time the GPT's decode steps (no clock)" in caplog.text


def test_cli_decode_threads_flag() -> None:
    assert runtime_settings(parse_args(["serve", "--data-dir", "/d", "--decode-threads", "1"])).decode_threads == 1
    assert runtime_settings(parse_args(["serve", "--data-dir", "/d"])).decode_threads is None
    with pytest.raises(SystemExit):
        parse_args(["serve", "--data-dir", "/d", "--decode-threads", "0"])
