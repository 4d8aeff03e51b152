"""The t2s GPT against the official goldens (t2s_golden.npz, sampler_golden.npz)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_npz
from wyoming_gsv.gsv.checkpoints import load_gpt_checkpoint
from wyoming_gsv.gsv.t2s import (
    KV_BUCKETS,
    MIN_TOKENS_BEFORE_EOS,
    CapturedStep,
    GemvLinear,
    GenerationCancelled,
    Int8Linear,
    KVCache,
    SamplerSpec,
    SamplingParams,
    T2SConfig,
    Text2Semantic,
    kv_bucket,
    logits_to_probs,
    float_layer_forward,
    make_generator,
    penalise_in_place,
    penalised_history_prefix,
    sample_from_probs,
)

ATOL = RTOL = 1e-4
GREEDY = SamplingParams(top_k=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def golden(v2_tiny: Path) -> dict[str, np.ndarray]:
    return load_npz(v2_tiny / "t2s_golden.npz")


@pytest.fixture(scope="module")
def sampler_golden(v2_tiny: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    cases = json.loads((v2_tiny / "manifest.json").read_text())["sampler_golden.npz"]["cases"]
    return load_npz(v2_tiny / "sampler_golden.npz"), cases


@pytest.fixture(scope="module")
def model(v2_tiny: Path) -> Text2Semantic:
    return Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"))


@pytest.fixture
def fresh(v2_tiny: Path) -> Text2Semantic:
    """The tiny model loaded for one test alone: for tests that change its state (a failed capture
    or compile, patched methods, its buffer pool)."""
    return Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"))


@pytest.fixture(scope="module")
def inputs(golden: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(golden["all_phones"]), torch.from_numpy(golden["all_bert"]),
            torch.from_numpy(golden["prompt_semantic"]))


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(actual.detach().float().numpy(), expected, atol=ATOL, rtol=RTOL)


def _tokens(actual: torch.Tensor, expected: np.ndarray) -> None:
    assert actual.dtype == torch.long
    np.testing.assert_array_equal(actual.numpy(), expected.astype(np.int64))


# ------------------------------------------------------------------------------ model pieces


def test_state_dict_keeps_the_official_names(v2_tiny: Path, model: Text2Semantic) -> None:
    """The fused projection is an nn.Linear inside, `in_proj_weight`/`in_proj_bias` outside:
    files written from our model (benchmarks) load in the official code and back here."""
    weights = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt").weights
    state = model.state_dict()
    assert set(state) == set(weights)
    assert all(torch.equal(state[key], weights[key]) for key in weights)


def test_config_from_checkpoint(model: Text2Semantic, golden: dict[str, np.ndarray]) -> None:
    assert model.config.early_stop_num == int(golden["early_stop_num"])
    assert model.config.eos == model.config.vocab_size - 1


def test_embeddings_and_positions(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, prompt = inputs
    _close(model.ar_text_embedding(phones), golden["x_tok_emb"])
    _close(model.bert_proj(bert.T), golden["x_bert_proj"])
    _close(model.ar_text_position.table(len(phones), torch.device("cpu"), torch.float32)
           / model.ar_text_position.alpha, golden["pe_text"])
    _close(model.embed_text(phones, bert), golden["x_pos"])
    _close(model.embed_audio(prompt), golden["y_pos"])


def test_logits_of_first_steps(model: Text2Semantic, golden, inputs) -> None:
    """Teacher-forced on the golden stream: prefill + decode steps give the official logits."""
    phones, bert, prompt = inputs
    cfg, steps = model.config, golden["naive_logits"].shape[0]
    text_len, prompt_len = len(phones), len(prompt)
    prefix = text_len + prompt_len
    x = torch.cat([model.embed_text(phones, bert), model.embed_audio(prompt)])[None]
    mask = torch.ones(prefix, prefix, dtype=torch.bool)
    mask[:text_len, text_len:] = False
    mask[text_len:, text_len:] = torch.ones(prompt_len, prompt_len, dtype=torch.bool).tril()
    cache = KVCache.allocate(cfg, 1, prefix + steps, torch.device("cpu"), torch.float32)
    generated = torch.from_numpy(golden["naive_y"][prompt_len:])
    pe = model.ar_audio_position.table(prompt_len + steps, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        logits = [model.forward_cached(x, cache, 0, mask[None, None])]
        for step in range(1, steps):
            token = generated[step - 1 : step]
            emb = model.ar_audio_embedding(token)[None] + pe[prompt_len + step - 1]
            logits.append(model.forward_cached(emb, cache, prefix + step - 1, None))
    _close(torch.cat(logits), golden["naive_logits"])
    np.testing.assert_array_equal(golden["naive_logits"], golden["batch_logits"])


def test_mute_similarity(model: Text2Semantic, golden) -> None:
    _close(model.mute_similarity(), golden["mute_emb_sim"])


# ------------------------------------------------------------------------------ token streams


def test_batched_path_stream(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, prompt = inputs
    idx = int(golden["batch_idx"])
    out = model.generate(phones, bert, prompt, GREEDY)  # the default path is "batched"
    _tokens(out, golden["batch_y"][-idx:])
    _tokens(out, golden["batch_semantic"])


def test_naive_path_stream(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, prompt = inputs
    idx = int(golden["naive_idx"])
    out = model.generate(phones, bert, prompt, GREEDY, path="naive")
    _tokens(out, golden["naive_y"][-idx:])
    _tokens(out, golden["naive_semantic"])


def test_on_token_sees_every_generated_token(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, prompt = inputs
    seen: list[int] = []
    model.generate(phones, bert, prompt, GREEDY, on_token=seen.append)
    np.testing.assert_array_equal(seen, golden["naive_y"][len(prompt):])


def test_no_repetition_penalty_stream(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, prompt = inputs
    idx = int(golden["norep_idx"])
    params = SamplingParams(top_k=1, repetition_penalty=1.0)
    _tokens(model.generate(phones, bert, prompt, params, path="naive"), golden["norep_y"][-idx:])


def test_ref_free_stream(model: Text2Semantic, golden, inputs) -> None:
    phones, bert, _ = inputs
    text = torch.from_numpy(golden["text_phones"])
    n_prompt = len(golden["prompt_phones"])
    np.testing.assert_array_equal(phones[n_prompt:].numpy(), golden["text_phones"])
    assert int(golden["free_idx"]) == 0  # upstream keeps all of y (y[-0:])
    for path in ("batched", "naive"):
        out = model.generate(text, bert[:, n_prompt:], None, GREEDY, path=path)
        _tokens(out, golden["free_y"])


def test_early_stop_override_and_hard_cap(model: Text2Semantic, inputs) -> None:
    phones, bert, prompt = inputs
    seen: list[int] = []
    params = SamplingParams(top_k=1, early_stop=20)
    out = model.generate(phones, bert, prompt, params, on_token=seen.append)
    assert len(seen) == 21 and out.tolist() == seen[:-1]
    seen.clear()
    capped = SamplingParams(top_k=1, max_tokens=30, early_stop=10_000)
    out = model.generate(phones, bert, prompt, capped, on_token=seen.append, path="naive")
    assert len(seen) == 30 and out.tolist() == seen[1:]


# ------------------------------------------------------------------------------ EOS handling


@pytest.fixture(scope="module")
def eos_prone_model(v2_tiny: Path, golden) -> Text2Semantic:
    """The tiny model with its EOS logit row made a scaled copy of a frequent token's row, so
    that greedy decoding of different sentences ends by EOS at different steps."""
    ckpt = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt")
    weight = ckpt.weights["ar_predict_layer.weight"]
    weight[-1] = 1.1 * weight[int(golden["naive_semantic"][0])]
    return Text2Semantic.from_checkpoint(ckpt)


def _sentences(golden) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    phones, bert, _ = _sentences_of(torch.from_numpy(golden["all_phones"]),
                                    torch.from_numpy(golden["all_bert"]))
    return phones, bert, torch.from_numpy(golden["prompt_semantic"])


def _sentences_of(phones: torch.Tensor, bert: torch.Tensor):
    """Three sentences of different lengths (a left-padded batch)."""
    cuts = (len(phones), len(phones) - 7, len(phones) - 13)
    return [phones[:n] for n in cuts], [bert[:, :n] for n in cuts], None


def test_eos_not_before_min_tokens_and_dropped(eos_prone_model: Text2Semantic, golden) -> None:
    phones, bert, prompt = _sentences(golden)
    lengths = set()
    for p, b in zip(phones, bert):
        for path in ("batched", "naive"):
            seen: list[int] = []
            out = eos_prone_model.generate(p, b, prompt, GREEDY, on_token=seen.append, path=path)
            assert len(out) >= MIN_TOKENS_BEFORE_EOS
            assert len(out) < eos_prone_model.config.early_stop_num  # ended by EOS
            assert out.tolist() == seen and eos_prone_model.config.eos not in seen
            lengths.add(len(out))
    assert len(lengths) > 1, "the EOS-prone model should end sentences at different steps"


@pytest.mark.parametrize("which", ["golden", "eos_prone"])
def test_batch_rows_match_single_runs(model, eos_prone_model, golden, which: str) -> None:
    chosen = model if which == "golden" else eos_prone_model
    phones, bert, prompt = _sentences(golden)
    batch = chosen.generate_batch(phones, bert, prompt, GREEDY)
    singles = [chosen.generate(p, b, prompt, GREEDY) for p, b in zip(phones, bert)]
    assert [row.tolist() for row in batch] == [row.tolist() for row in singles]
    ref_free = chosen.generate_batch(phones[:2], [b for b in bert[:2]], None, GREEDY)
    assert [r.tolist() for r in ref_free] == [
        chosen.generate(p, b, None, GREEDY).tolist() for p, b in zip(phones[:2], bert[:2])]


# ------------------------------------------------------------------------------ sampling


def test_sampler_matches_golden(sampler_golden) -> None:
    data, cases = sampler_golden
    for n, case in enumerate(cases):
        logits = torch.from_numpy(data["logits"]).clone()
        probs = logits_to_probs(logits, torch.from_numpy(data["previous_tokens"]),
                                top_k=case["top_k"], top_p=case["top_p"],
                                temperature=case["temperature"],
                                repetition_penalty=case["repetition_penalty"])
        _close(probs, data[f"case{n}_probs"])
        _close(logits, data[f"case{n}_logits_after"])  # penalty applied in place
        sample = sample_from_probs(probs, noise=torch.from_numpy(data[f"case{n}_q"]))
        np.testing.assert_array_equal(sample.numpy(), data[f"case{n}_sample"][:, 0])


def test_seed_reproducibility(model: Text2Semantic, inputs) -> None:
    phones, bert, prompt = inputs
    params = SamplingParams(top_k=15, temperature=1.0)

    def run(seed: int | None) -> list[int]:
        return model.generate(phones, bert, prompt, params,
                              generator=make_generator(seed)).tolist()

    assert run(1234) == run(1234)
    assert run(1234) != run(4321)
    assert run(-1) != run(-1)  # upstream's seed -1: a fresh random seed each time


def test_cancellation_stops_generation(model: Text2Semantic, inputs) -> None:
    phones, bert, prompt = inputs
    seen: list[int] = []
    with pytest.raises(GenerationCancelled):
        model.generate(phones, bert, prompt, GREEDY, on_token=seen.append,
                       should_stop=lambda: len(seen) >= 5)
    assert len(seen) == 5


def test_bad_inputs_raise(model: Text2Semantic, inputs) -> None:
    phones, bert, prompt = inputs
    with pytest.raises(ValueError, match="bert"):
        model.generate(phones, bert[:, :-1], prompt)
    with pytest.raises(ValueError, match="phone_ids"):
        model.generate(phones + model.config.phoneme_vocab_size, bert, prompt)
    with pytest.raises(ValueError, match="prompt"):
        model.generate(phones, bert, torch.full((4,), model.config.eos))
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=5000)


def test_fp16_weights_run(v2_tiny: Path, inputs) -> None:
    """fp16 storage can be used as is (bf16/fp16 decode on GPU); tokens come out well-formed."""
    phones, bert, prompt = inputs
    ckpt = load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt", dtype=None)
    half = Text2Semantic.from_checkpoint(ckpt, dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    out = half.generate(phones, bert, prompt, GREEDY)
    assert out.dtype == torch.long and 0 < len(out) <= half.config.early_stop_num + 1


def test_config_without_max_sec() -> None:
    config = T2SConfig.from_config({"model": {"embedding_dim": 8, "head": 2, "n_layer": 1,
                                              "phoneme_vocab_size": 10, "vocab_size": 5, "EOS": 4}})
    assert config.early_stop_num is None and config.head_dim == 4


def test_decode_buffers_are_allocated_once_and_reused(fresh: Text2Semantic, inputs,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-fast's setup_caches: a generation takes its KV cache (and history, masks) from the
    model's pool; the next one reuses it instead of allocating ~177 MB (real size) again."""
    phones, bert, prompt = inputs
    allocated: list[KVCache] = []
    allocate = KVCache.allocate.__func__

    def counting(cls, *args, **kwargs):
        allocated.append(allocate(cls, *args, **kwargs))
        return allocated[-1]

    monkeypatch.setattr(KVCache, "allocate", classmethod(counting))
    first = fresh.generate(phones, bert, prompt, GREEDY)
    second = fresh.generate(phones, bert, prompt, GREEDY)
    assert first.tolist() == second.tolist() and len(allocated) == 1
    cfg, cache = fresh.config, allocated[0]
    capacity = kv_bucket(len(phones) + len(prompt) + GREEDY.max_tokens)
    assert capacity in KV_BUCKETS
    assert cache.k.shape == (cfg.num_layers, 1, cfg.num_heads, capacity, cfg.head_dim)
    # Three rows need a larger buffer once; afterwards a single row reuses the larger one.
    sentences, berts, _ = _sentences_of(phones, bert)
    fresh.generate_batch(sentences, berts, prompt, GREEDY)
    assert len(allocated) == 2 and allocated[1].batch == 3
    assert fresh.generate(phones, bert, prompt, GREEDY).tolist() == first.tolist()
    fresh.generate_batch(sentences, berts, prompt, GREEDY)
    assert len(allocated) == 2


def test_concurrent_generations_get_their_own_buffers(model: Text2Semantic, inputs) -> None:
    phones, bert, prompt = inputs
    expected = model.generate(phones, bert, prompt, GREEDY).tolist()
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda _: model.generate(phones, bert, prompt, GREEDY).tolist(),
                                range(6)))
    assert results == [expected] * 6


def test_kv_buckets() -> None:
    assert [kv_bucket(n) for n in (1, 256, 257, 1500, 2048, 2049, 3000)] == [
        256, 256, 512, 1536, 2048, 4096, 4096]


# ------------------------------------------------------------------------------ static-shape step


def test_bucketed_step_logits_match_golden(model: Text2Semantic, golden, inputs) -> None:
    """The static-shape step (KV bucket span, valid-column mask, per-row write positions), run
    eagerly on the CPU, teacher-forced on the golden stream: the official logits."""
    phones, bert, prompt = inputs
    steps, prompt_len = golden["naive_logits"].shape[0], len(prompt)
    prefix = len(phones) + prompt_len
    generated = torch.from_numpy(golden["naive_y"][prompt_len:])
    cache = model.setup_caches(1, prefix + steps)
    try:
        with torch.inference_mode():
            cache.make_finite()
            logits = [model.prefill([phones], [bert], prompt, cache)]
            for step in range(1, steps):
                position = torch.tensor([prefix + step - 1])
                logits.append(model.decode_step(generated[step - 1 : step], position,
                                                position - len(phones), cache,
                                                kv_bucket(prefix + step)))
    finally:
        model.release_caches(cache)
    assert kv_bucket(prefix + steps) == KV_BUCKETS[0] < cache.capacity
    _close(torch.cat(logits), golden["naive_logits"])


@pytest.mark.parametrize("path", ["batched", "naive"])
def test_bucketed_mode_gives_the_golden_streams(model: Text2Semantic, golden, inputs,
                                                path: str) -> None:
    phones, bert, prompt = inputs
    prefix = "batch" if path == "batched" else "naive"
    idx = int(golden[f"{prefix}_idx"])
    out = model.generate(phones, bert, prompt, GREEDY, path=path, mode="bucketed")
    _tokens(out, golden[f"{prefix}_y"][-idx:])
    norep = SamplingParams(top_k=1, repetition_penalty=1.0)
    _tokens(model.generate(phones, bert, prompt, norep, path="naive", mode="bucketed"),
            golden["norep_y"][-int(golden["norep_idx"]):])
    n_prompt = len(golden["prompt_phones"])
    free = model.generate(torch.from_numpy(golden["text_phones"]), bert[:, n_prompt:], None,
                          GREEDY, path=path, mode="bucketed")
    _tokens(free, golden["free_y"])


def test_bucketed_mode_crosses_buckets_like_exact_mode(model: Text2Semantic, inputs) -> None:
    """300 tokens after a 72-position prefix: the step moves from the 256 to the 512 bucket."""
    phones, bert, prompt = inputs
    long_run = SamplingParams(top_k=1, max_tokens=300, early_stop=10_000)
    assert len(phones) + len(prompt) < KV_BUCKETS[0] < len(phones) + len(prompt) + 300
    exact = model.generate(phones, bert, prompt, long_run, mode="exact")
    assert len(exact) == 299
    assert model.generate(phones, bert, prompt, long_run, mode="bucketed").tolist() == \
        exact.tolist()
    sampled = SamplingParams(top_k=15, max_tokens=300, early_stop=10_000)
    runs = [model.generate(phones, bert, prompt, sampled, generator=make_generator(7), mode=mode)
            for mode in ("exact", "bucketed")]
    assert runs[0].tolist() == runs[1].tolist()


def test_bucketed_batches_drop_rows_like_exact_mode(eos_prone_model: Text2Semantic,
                                                   golden) -> None:
    phones, bert, prompt = _sentences(golden)
    exact = eos_prone_model.generate_batch(phones, bert, prompt, GREEDY, mode="exact")
    bucketed = eos_prone_model.generate_batch(phones, bert, prompt, GREEDY, mode="bucketed")
    assert len({len(row) for row in exact}) > 1  # rows left the batch at different steps
    assert [row.tolist() for row in bucketed] == [row.tolist() for row in exact]


def test_graph_mode_needs_cuda(model: Text2Semantic, inputs) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    phones, bert, prompt = inputs
    with pytest.raises(ValueError, match="CUDA"):
        model.generate(phones, bert, prompt, GREEDY, mode="graph")
    assert model.default_decode_mode == "exact"
    model.decode_mode = "graph"  # a model-wide choice (benchmarks compare modes this way)
    try:
        with pytest.raises(ValueError, match="CUDA"):
            model.generate(phones, bert, prompt, GREEDY)
    finally:
        model.decode_mode = None


def test_a_failed_graph_capture_falls_back_to_the_eager_step(
        fresh: Text2Semantic, inputs, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A driver or op that CUDA graphs do not support must cost speed, not every request."""
    phones, bert, prompt = inputs
    captures: list[int] = []

    def failing_capture(step) -> None:
        captures.append(step.span)
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(CapturedStep, "_capture", failing_capture)
    prefix = len(phones) + len(prompt)
    graphed, eager, cache = _twice_then_eager(
        fresh, inputs, lambda token, position, cache: fresh.static_step(
            token, position, position - len(phones), cache, prefix + 1, graphed=True))
    assert captures == [kv_bucket(prefix + 1)]  # tried once, then eager for good
    assert all(torch.equal(logits, eager) for logits in graphed)
    assert "CUDA graph capture failed, decoding eagerly" in caplog.text and not cache.graphs


def _twice_then_eager(model: Text2Semantic, inputs, step: Callable) -> tuple[list, torch.Tensor, KVCache]:
    """After a prefill: `step(token, position, cache)` twice at the first decode position, then
    the eager static step there (its logits to compare against), and the cache used."""
    phones, bert, prompt = inputs
    prefix = len(phones) + len(prompt)
    token, position = torch.tensor([5]), torch.tensor([prefix])
    cache = model.setup_caches(1, prefix + 10)
    with torch.inference_mode():
        cache.make_finite()
        model.prefill([phones], [bert], prompt, cache)
        stepped = [step(token, position, cache) for _ in range(2)]
        eager = model.decode_step(token, position, position - len(phones), cache,
                                  kv_bucket(prefix + 1))
    model.release_caches(cache)
    return stepped, eager, cache


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graph_mode_gives_the_golden_streams(v2_tiny: Path, golden, inputs) -> None:
    """fp32 on CUDA: captured steps replayed per token give the official streams."""
    phones, bert, prompt = inputs
    cuda = Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"),
                                         device="cuda")
    assert cuda.default_decode_mode == "graph"
    for path, name in (("batched", "batch"), ("naive", "naive")):
        out = cuda.generate(phones, bert, prompt, GREEDY, path=path)
        _tokens(out, golden[f"{name}_y"][-int(golden[f"{name}_idx"]):])
    long_run = SamplingParams(top_k=1, max_tokens=300, early_stop=10_000)
    assert cuda.generate(phones, bert, prompt, long_run).tolist() == \
        cuda.generate(phones, bert, prompt, long_run, mode="bucketed").tolist()
    half = Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"),
                                         device="cuda", dtype=torch.float16)
    assert len(half.generate(phones, bert, prompt, GREEDY)) > 1


def test_int8_mode_is_close_but_opt_in(v2_tiny: Path, model: Text2Semantic, golden,
                                       inputs) -> None:
    """quantize_int8 (CPU speed mode): first-step logits stay close to the exact model's."""
    phones, bert, prompt = inputs
    quantized = Text2Semantic.from_checkpoint(
        load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt")).quantize_int8()
    exact_first = torch.from_numpy(golden["naive_logits"][0])
    text_len, prefix = len(phones), len(phones) + len(prompt)
    mask = torch.ones(prefix, prefix, dtype=torch.bool)
    mask[:text_len, text_len:] = False
    mask[text_len:, text_len:] = torch.ones(len(prompt), len(prompt), dtype=torch.bool).tril()
    x = torch.cat([quantized.embed_text(phones, bert), quantized.embed_audio(prompt)])[None]
    cache = KVCache.allocate(quantized.config, 1, prefix, torch.device("cpu"), torch.float32)
    with torch.inference_mode():
        logits = quantized.forward_cached(x, cache, 0, mask[None, None])[0]
    assert torch.nn.functional.cosine_similarity(logits, exact_first, dim=0) > 0.999
    assert int(logits.argmax()) == int(exact_first.argmax())
    out = quantized.generate(phones, bert, prompt, GREEDY)
    assert out[0] == model.generate(phones, bert, prompt, GREEDY)[0]
    # A module swap: every matmul of the decode step is an Int8Linear, the prefill-only BERT
    # projection and the model's float weights elsewhere stay as they were.
    linears = [m for m in quantized.h.modules() if isinstance(m, (torch.nn.Linear, Int8Linear))]
    assert len(linears) == 4 * quantized.config.num_layers
    assert all(isinstance(m, Int8Linear) for m in linears) and quantized.is_int8
    assert isinstance(quantized.ar_predict_layer, Int8Linear) and not model.is_int8
    assert type(quantized.bert_proj) is torch.nn.Linear
    with pytest.raises(ValueError, match="float32"):
        Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"),
                                      dtype=torch.bfloat16).quantize_int8()


def test_gemv_linear_runs_one_row_through_numpy_and_keeps_nn_linear_otherwise(monkeypatch) -> None:
    """One fp32 CPU row: numpy's BLAS on the weight moved (once) to the [in, out] layout, the
    same values as F.linear; several rows, a row that needs grad, other dtypes: F.linear itself."""
    torch.manual_seed(0)
    linear = GemvLinear(48, 80)
    reference = torch.nn.Linear(48, 80)
    reference.load_state_dict(linear.state_dict())
    row, rows = torch.randn(1, 48), torch.randn(5, 48)
    with torch.inference_mode():
        expected, expected_rows = reference(row), reference(rows)

    with torch.inference_mode():
        assert torch.allclose(linear(row), expected, atol=1e-6, rtol=1e-5)
    assert linear.weight.t().is_contiguous()  # moved to the transposed layout
    assert torch.equal(linear.weight, reference.weight)  # same values, same state dict
    assert set(linear.state_dict()) == {"weight", "bias"}

    calls: list[int] = []
    plain_linear = torch.nn.functional.linear
    monkeypatch.setattr(torch.nn.functional, "linear", lambda x, *rest: calls.append(x.shape[0]) or plain_linear(x, *rest))
    with torch.inference_mode():
        assert torch.allclose(linear(row), expected, atol=1e-6, rtol=1e-5)
        assert calls == []  # one row: numpy
        assert torch.allclose(linear(rows), expected_rows, atol=1e-6, rtol=1e-5)
        assert calls == [5]  # several rows: F.linear
    assert torch.allclose(linear(row.clone().requires_grad_()), expected, atol=1e-6, rtol=1e-5)
    assert calls == [5, 1]  # a row that needs grad: F.linear (autograd goes through it)
    with torch.inference_mode():
        linear.double()
        assert linear(row.double()).dtype == torch.float64
    assert calls == [5, 1, 1]  # float64: F.linear


def test_gemv_linear_follows_replaced_weights() -> None:
    """Weights loaded later (load_state_dict(assign=True), .to()) are the ones a row meets."""
    torch.manual_seed(0)
    linear, other = GemvLinear(16, 24), torch.nn.Linear(16, 24)
    row = torch.randn(1, 16)
    with torch.inference_mode():
        linear(row)  # the numpy views of the first weights are cached
    linear.load_state_dict(other.state_dict(), assign=True)
    with torch.inference_mode():
        assert torch.allclose(linear(row), other(row), atol=1e-6, rtol=1e-5)
        linear.weight.mul_(2)  # in place: the cached views share the storage
        assert torch.allclose(linear(row), torch.nn.functional.linear(row, linear.weight, linear.bias),
                              atol=1e-6, rtol=1e-5)


def test_decode_steps_use_gemv_linear_with_the_official_tokens(model: Text2Semantic, golden, inputs) -> None:
    """Every matmul of a decode step is a GemvLinear (the prefill-only BERT projection is not);
    after a generation their weights sit in the numpy layout, and the golden streams hold
    (test_batched_path_stream, test_naive_path_stream run the same model)."""
    phones, bert, prompt = inputs
    decode_linears = [m for m in model.h.modules() if isinstance(m, torch.nn.Linear)] + [model.ar_predict_layer]
    assert len(decode_linears) == 4 * model.config.num_layers + 1
    assert all(type(m) is GemvLinear for m in decode_linears)
    assert type(model.bert_proj) is torch.nn.Linear
    model.generate(phones, bert, prompt, GREEDY)
    assert all(m.weight.t().is_contiguous() for m in decode_linears)


def test_one_row_cpu_steps_run_in_numpy_like_the_torch_layers(fresh: Text2Semantic, golden, inputs,
                                                                 monkeypatch) -> None:
    """A one-token, one-row fp32 step on the CPU (the default decode step) runs every layer by
    `row_layer_forward`: no torch attention call, the logits and the keys/values written equal
    the torch layers' (`layer_forward`). Int8 layers keep the torch path."""
    phones, bert, prompt = inputs
    model, cfg = fresh, fresh.config
    prefix = len(phones) + len(prompt)
    x = torch.cat([model.embed_text(phones, bert), model.embed_audio(prompt)])[None]
    mask = torch.ones(prefix, prefix, dtype=torch.bool)
    mask[: len(phones), len(phones):] = False
    mask[len(phones):, len(phones):] = torch.ones(len(prompt), len(prompt), dtype=torch.bool).tril()
    token = model.ar_audio_embedding(torch.tensor([int(golden["naive_y"][len(prompt)])]))[None]
    caches = [KVCache.allocate(cfg, 1, prefix + 1, torch.device("cpu"), torch.float32) for _ in range(2)]
    attention_calls: list[int] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda q, *rest, **kw: attention_calls.append(q.shape[2]) or sdpa(q, *rest, **kw))
    logits = []
    with torch.inference_mode():
        for cache, row_path in zip(caches, (True, False)):
            model.forward_cached(x, cache, 0, mask[None, None])  # the prefill: torch layers
            if not row_path:
                monkeypatch.setattr(model, "_row_layers", lambda *_args: None)
            logits.append(model.forward_cached(token, cache, prefix, None))
    per_call = cfg.num_layers
    assert attention_calls == [prefix] * per_call + [prefix] * per_call + [1] * per_call
    torch.testing.assert_close(logits[0], logits[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[0].k, caches[1].k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(caches[0].v, caches[1].v, atol=1e-5, rtol=1e-5)
    assert all(layer.arrays() is not None for layer in model.h.layers)

    model.quantize_int8()
    assert all(layer.arrays() is None for layer in model.h.layers)
    attention_calls.clear()
    with torch.inference_mode():
        model.forward_cached(token, caches[0], prefix, None)
    assert attention_calls == [1] * per_call


def test_row_step_arrays_follow_loaded_weights(fresh: Text2Semantic) -> None:
    """The numpy arrays a layer hands the row step are dropped when a state dict is loaded
    (assign=True gives new tensors) or the model moves, so a step never reads stale weights."""
    layer = fresh.h.layers[0]
    first = layer.arrays()
    assert first is not None and np.shares_memory(first.in_w, layer.self_attn.in_proj.weight.numpy())
    state = {name: tensor * 2 for name, tensor in layer.state_dict().items()}
    layer.load_state_dict(state, assign=True)
    second = layer.arrays()
    assert second is not None and second is not first
    np.testing.assert_array_equal(second.norm1_w, state["norm1.weight"].numpy())
    np.testing.assert_array_equal(second.ffn_out_w, state["linear2.weight"].numpy().T)
    fresh.to(torch.float64)
    assert layer.arrays() is None  # not fp32: the torch layers run


# ------------------------------------------------------------------------------ fused sampler


def test_static_history_penalty_equals_the_in_place_one() -> None:
    """Columns past `seen` (stale tokens of an earlier sentence, repeats) must not count."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 40, generator=gen)
    history = torch.randint(0, 40, (3, 16), generator=gen)
    history[:, 6:9] = history[:, :3]  # repeats inside the seen prefix
    seen = torch.tensor([9, 12, 1])
    static = penalised_history_prefix(logits, history, seen, 1.35)
    for row, count in enumerate(seen.tolist()):
        expected = logits[row : row + 1].clone()
        penalise_in_place(expected, history[row : row + 1, :count], 1.35)
        assert torch.equal(static[row : row + 1], expected)
    assert not torch.equal(static, logits)


def test_bucketed_sampling_with_top_p_and_temperature_matches_exact_mode(
        model: Text2Semantic, eos_prone_model: Text2Semantic, inputs, golden) -> None:
    """The fused static step samples as the eager sampler does: same generator, same tokens."""
    phones, bert, prompt = inputs
    params = SamplingParams(top_k=20, top_p=0.8, temperature=0.7, repetition_penalty=1.2,
                            max_tokens=120, early_stop=10_000)
    runs = [model.generate(phones, bert, prompt, params, generator=make_generator(11), mode=mode)
            for mode in ("exact", "bucketed")]
    assert len(runs[0]) > 20 and runs[0].tolist() == runs[1].tolist()
    rows_phones, rows_bert, rows_prompt = _sentences(golden)
    batches = [eos_prone_model.generate_batch(rows_phones, rows_bert, rows_prompt, params,
                                              generator=make_generator(5), mode=mode)
               for mode in ("exact", "bucketed")]
    assert [row.tolist() for row in batches[0]] == [row.tolist() for row in batches[1]]


def test_a_failed_compile_falls_back_to_uncompiled_layers(
        fresh: Text2Semantic, inputs, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """torch.compile needing a compiler the host lacks must cost speed, not the request."""
    phones, bert, prompt = inputs
    calls: list[int] = []

    def failing_layer(*_args) -> torch.Tensor:
        calls.append(1)
        raise RuntimeError("InductorError: no working C compiler")

    monkeypatch.setattr(fresh, "_compiled_layer",
                        lambda: None if fresh._compile_failure else failing_layer)
    span = kv_bucket(len(phones) + len(prompt) + 1)
    compiled, eager, _cache = _twice_then_eager(
        fresh, inputs, lambda token, position, cache: fresh.decode_step(
            token, position, position - len(phones), cache, span, compiled=True))
    assert calls == [1]  # tried once, then uncompiled for good
    assert all(torch.equal(logits, eager) for logits in compiled)
    assert "torch.compile of the decode step failed" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_graph_samples_like_the_eager_static_step(v2_tiny: Path, inputs) -> None:
    """The sampler inside the captured graph draws what the eager one draws (same kernels, the
    noise from the same generator); compiled layers keep greedy decoding's tokens."""
    phones, bert, prompt = inputs
    cuda = Text2Semantic.from_checkpoint(load_gpt_checkpoint(v2_tiny / "s1_tiny_v2.ckpt"),
                                         device="cuda")
    params = SamplingParams(top_k=20, top_p=0.8, temperature=0.7, max_tokens=300,
                            early_stop=10_000)
    cuda.compile_steps = False
    runs = [cuda.generate(phones, bert, prompt, params, generator=make_generator(11, "cuda"),
                          mode=mode) for mode in ("bucketed", "graph")]
    assert runs[0].tolist() == runs[1].tolist()
    cuda.compile_steps = True
    greedy = SamplingParams(top_k=1, max_tokens=300, early_stop=10_000)
    assert cuda.generate(phones, bert, prompt, greedy).tolist() == \
        cuda.generate(phones, bert, prompt, greedy, mode="bucketed").tolist()
    assert cuda._compile_failure is None


def test_captured_steps_are_kept_per_shape_sampler_and_compilation(model: Text2Semantic) -> None:
    """A graph captured with uncompiled layers must not serve once compilation is switched on
    (benchmarks compare the two), nor one sampler's graph another's."""
    cache = model.setup_caches(2, 300)
    greedy = SamplerSpec(True, 1, 1.0, 1.0, 1.35)
    try:
        first = model._captured(cache, 256, greedy)
        assert model._captured(cache.rows(2), 256, greedy) is first  # row views share the graphs
        assert model._captured(cache, 512, greedy) is not first
        assert model._captured(cache, 256, greedy._replace(top_k=15)) is not first
        assert model._captured(cache, 256, None) is not first
        model.compile_steps = not model.compile_steps
        assert model._captured(cache, 256, greedy) is not first
    finally:
        model.compile_steps = True
        cache.graphs.clear()
        model.release_caches(cache)


def test_compiled_layers_decode_like_the_uncompiled_ones(fresh: Text2Semantic, inputs,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The program every CUDA box runs by default, compiled here by the CPU's inductor: its
    cache writes (a scatter into a view of the KV buffer) land, and one program serves the KV
    buckets a long sentence crosses, with the tokens of the uncompiled layers."""
    phones, bert, prompt = inputs
    compiled = torch.compile(float_layer_forward, fullgraph=True)
    monkeypatch.setattr(fresh, "_compiled_layer", lambda: compiled)
    decode_step = fresh.decode_step
    monkeypatch.setattr(fresh, "decode_step",
                        lambda *args, **kwargs: decode_step(*args, **{**kwargs, "compiled": True}))
    long_run = SamplingParams(top_k=15, max_tokens=300, early_stop=10_000)
    assert len(phones) + len(prompt) < KV_BUCKETS[0] < len(phones) + len(prompt) + 300
    ours = fresh.generate(phones, bert, prompt, long_run, generator=make_generator(3),
                          mode="bucketed")
    monkeypatch.undo()
    reference = fresh.generate(phones, bert, prompt, long_run, generator=make_generator(3),
                               mode="bucketed")
    assert fresh._compile_failure is None
    assert len(ours) == 299 and ours.tolist() == reference.tolist()
