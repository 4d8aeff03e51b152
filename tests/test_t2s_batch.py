"""Continuous batching of the GPT (t2s_batch.ContinuousBatcher) on the tiny official model: rows
join and leave between steps, and every request gets exactly the tokens `generate` gives it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_npz
from wyoming_gsv.gsv.checkpoints import load_gpt_checkpoint
from wyoming_gsv.gsv.t2s import GenerationCancelled, SamplingParams, Text2Semantic, make_generator
from wyoming_gsv.gsv.t2s_batch import ContinuousBatcher, DecodeRequest

GREEDY = SamplingParams(top_k=1)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "t2s_golden.npz")


@pytest.fixture(scope="module")
def model(v2_tiny: Path) -> Text2Semantic:
    return Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"))


@pytest.fixture(scope="module")
def eos_prone(v2_tiny: Path, golden) -> Text2Semantic:
    """EOS logit row = a scaled copy of a frequent token's row: sentences end by EOS at
    different steps, so rows leave the batch at different times."""
    ckpt = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt")
    weight = ckpt.weights["ar_predict_layer.weight"]
    weight[-1] = 1.1 * weight[int(golden["naive_semantic"][0])]
    return Text2Semantic.from_checkpoint(ckpt)


def _requests(golden, count: int, **settings) -> list[DecodeRequest]:
    """`count` sentences of different lengths (cut from the golden text) with the golden prompt."""
    phones = torch.from_numpy(golden["all_phones"])
    bert = torch.from_numpy(golden["all_bert"])
    prompt = torch.from_numpy(golden["prompt_semantic"])
    cuts = [len(phones) - 4 * n for n in range(count)]
    return [DecodeRequest(phones[:n], bert[:, :n], prompt, **settings) for n in cuts]


def _alone(model: Text2Semantic, request: DecodeRequest, generator=None) -> list[int]:
    return model.generate(request.phone_ids, request.bert, request.prompt, request.params,
                          generator=generator, path=request.path).tolist()


def _steps(batcher: ContinuousBatcher, count: int) -> None:
    for _ in range(count):
        batcher.step()


@pytest.mark.parametrize("which", ["golden", "eos_prone"])
def test_rows_join_and_leave_between_steps(model, eos_prone, golden, which: str) -> None:
    chosen = model if which == "golden" else eos_prone
    requests = _requests(golden, 4, params=GREEDY)
    requests[3].path = "naive"
    batcher = ContinuousBatcher(chosen, max_rows=4)
    futures = [batcher.submit(requests[0])]
    _steps(batcher, 5)
    futures.append(batcher.submit(requests[1]))
    _steps(batcher, 1)
    assert batcher.rows == 2  # the second request joined while the first was running
    _steps(batcher, 7)
    futures += [batcher.submit(request) for request in requests[2:]]
    batcher.run_until_idle()
    results = [future.result().tolist() for future in futures]
    assert results == [_alone(chosen, request) for request in requests]
    if which == "eos_prone":
        assert len({len(tokens) for tokens in results}) > 1  # rows ended at different steps
    batcher.close()


def test_ref_free_rows_and_a_full_batch_queue(model, golden) -> None:
    """More requests than rows: the rest wait and join as rows free up. Ref-free rows (no
    prompt) share the step with prompted ones."""
    requests = _requests(golden, 5, params=SamplingParams(top_k=1, max_tokens=30,
                                                          early_stop=10_000))
    n_prompt = len(golden["prompt_phones"])
    requests[1] = DecodeRequest(requests[1].phone_ids[n_prompt:], requests[1].bert[:, n_prompt:],
                                None, params=GREEDY)
    batcher = ContinuousBatcher(model, max_rows=2)
    futures = [batcher.submit(request) for request in requests]
    batcher.step()
    assert batcher.rows == 2
    batcher.run_until_idle()
    assert [f.result().tolist() for f in futures] == [_alone(model, r) for r in requests]


def test_each_request_keeps_its_sampling_settings_and_seed(model, golden) -> None:
    settings = [SamplingParams(top_k=15, temperature=1.0), SamplingParams(top_k=5, top_p=0.8),
                SamplingParams(top_k=30, temperature=0.7, repetition_penalty=1.0)]
    seeds = [11, 22, 33]
    requests = _requests(golden, 3)
    for request, params, seed in zip(requests, settings, seeds):
        request.params, request.generator = params, make_generator(seed)
    batcher = ContinuousBatcher(model, max_rows=3)
    futures = [batcher.submit(request) for request in requests]
    batcher.run_until_idle()
    alone = [_alone(model, request, make_generator(seed))
             for request, seed in zip(requests, seeds)]
    assert [f.result().tolist() for f in futures] == alone
    assert len({tuple(tokens) for tokens in alone}) == 3


def test_rows_sharing_their_settings_sample_in_the_fused_step(model, golden,
                                                               monkeypatch) -> None:
    """Same settings, own seeds, joining at different steps: once every running row may draw
    EOS (or none may), they take the fused step, each row's noise from its own generator, and
    still get the tokens each gets alone."""
    params = SamplingParams(top_k=15, top_p=0.9, temperature=0.8, max_tokens=80,
                            early_stop=10_000)
    requests = _requests(golden, 3, params=params)
    seeds = [5, 6, 7]
    for request, seed in zip(requests, seeds):
        request.generator = make_generator(seed)
    fused_rows: list[int] = []
    sample_static = model.sample_static

    def counting(tokens, *args, **kwargs):
        fused_rows.append(tokens.shape[0])
        return sample_static(tokens, *args, **kwargs)

    monkeypatch.setattr(model, "sample_static", counting)
    batcher = ContinuousBatcher(model, max_rows=3)
    futures = [batcher.submit(requests[0])]
    _steps(batcher, 4)
    futures += [batcher.submit(request) for request in requests[1:]]
    batcher.run_until_idle()
    monkeypatch.undo()
    alone = [_alone(model, request, make_generator(seed))
             for request, seed in zip(requests, seeds)]
    assert [f.result().tolist() for f in futures] == alone
    assert len({tuple(tokens) for tokens in alone}) == 3
    assert 1 in fused_rows and 3 in fused_rows  # alone, then all three rows in one fused step


def test_a_cancelled_request_leaves_at_the_next_step(model, golden) -> None:
    seen: list[int] = []
    requests = _requests(golden, 3, params=GREEDY)
    requests[1].on_token = seen.append
    requests[1].should_stop = lambda: len(seen) >= 5
    batcher = ContinuousBatcher(model, max_rows=3)
    futures = [batcher.submit(request) for request in requests]
    _steps(batcher, 5)
    assert batcher.rows == 3 and len(seen) == 5
    batcher.step()
    assert batcher.rows == 2 and len(seen) == 5
    with pytest.raises(GenerationCancelled):
        futures[1].result()
    batcher.run_until_idle()
    assert [futures[i].result().tolist() for i in (0, 2)] == [
        _alone(model, requests[i]) for i in (0, 2)]


def test_bad_or_oversized_requests_fail_alone(model, golden) -> None:
    good, bad, big = _requests(golden, 3, params=SamplingParams(top_k=1, max_tokens=100))
    bad.bert = bad.bert[:, :-1]
    big.params = SamplingParams(max_tokens=1500)
    batcher = ContinuousBatcher(model, max_rows=2, max_len=512)
    futures = [batcher.submit(request) for request in (bad, big, good)]
    batcher.run_until_idle()
    with pytest.raises(ValueError, match="bert"):
        futures[0].result()
    with pytest.raises(ValueError, match="KV positions"):
        futures[1].result()
    assert futures[2].result().tolist() == _alone(model, good)


def test_concurrent_requests_share_decode_steps(model, golden, monkeypatch) -> None:
    """Requests from several threads through the worker: each gets its own tokens, and the
    decode steps run once per round for all rows (not once per request and token)."""
    steps = 0
    decode_step = model.decode_step

    def counting(*args, **kwargs):
        nonlocal steps
        steps += 1
        return decode_step(*args, **kwargs)

    monkeypatch.setattr(model, "decode_step", counting)
    requests = _requests(golden, 4, params=GREEDY)
    expected = [_alone(model, request) for request in requests]
    batcher = ContinuousBatcher(model, max_rows=4)
    batcher.start()
    start = threading.Barrier(len(requests))

    def submit(request: DecodeRequest) -> list[int]:
        start.wait()
        return batcher.submit(request).result(timeout=120).tolist()

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(submit, requests))
    batcher.close()
    assert results == expected
    assert steps < sum(len(tokens) for tokens in expected)


def test_close_cancels_what_is_left(model, golden) -> None:
    batcher = ContinuousBatcher(model, max_rows=1)
    running, waiting = (batcher.submit(r) for r in _requests(golden, 2, params=GREEDY))
    batcher.step()
    batcher.close()
    for future in (running, waiting):
        with pytest.raises(GenerationCancelled):
            future.result()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(_requests(golden, 1)[0])


def test_cpu_runs_the_static_step_eagerly(model) -> None:
    assert ContinuousBatcher(model).mode == "bucketed"
    with pytest.raises(ValueError, match="static-shape"):
        ContinuousBatcher(model, mode="exact")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            ContinuousBatcher(model, mode="graph")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graph_batcher_matches_single_runs(v2_tiny: Path, golden) -> None:
    """On CUDA (fp32): rows joining at different steps, replayed graphs per row count and KV
    bucket, the same tokens as each request alone."""
    cuda = Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"),
                                         device="cuda")
    requests = _requests(golden, 3, params=SamplingParams(top_k=1, max_tokens=300,
                                                          early_stop=10_000))
    batcher = ContinuousBatcher(cuda, max_rows=3)
    assert batcher.mode == "graph"
    futures = [batcher.submit(requests[0])]
    _steps(batcher, 9)
    futures += [batcher.submit(request) for request in requests[1:]]
    batcher.run_until_idle()
    batcher.close()
    assert [f.result().tolist() for f in futures] == [_alone(cuda, r) for r in requests]
