"""The GPT-SoVITS "t2s" GPT: phones + BERT features (+ prompt semantic tokens) -> semantic tokens.

One readable file in the gpt-fast manner: a post-norm transformer that loads the official
`Text2SemanticDecoder` state dict (after the s1 `model.` prefix is stripped), static decode
buffers set up once per model and KV size class and reused (`setup_caches`), a prefill with the
official mask (text columns bidirectional, audio causal, text rows never see audio) and a lean
single-token decode step. The step runs over exactly the valid KV columns (CPU), or at static
shapes per KV bucket, eagerly or captured as a CUDA graph and replayed per token (GPU). The
step's matmuls are `GemvLinear`s (one row on the CPU: numpy's BLAS), and a one-row fp32 step on
the CPU runs each whole layer in numpy (`row_layer_forward`); the opt-in int8 mode swaps the
matmuls for `Int8Linear`.

The sampler reproduces `AR.models.utils.logits_to_probs` + `sample` exactly: repetition
penalty over the whole history (prompt included, in place), top-p, temperature, top-k, then
an exponential race (argmax of probs / Exp(1) noise), which is multinomial sampling.

Return values follow what upstream `TTS.py` keeps (`y[-idx:]`):
* on EOS, both upstream paths give exactly the generated tokens;
* on early stop / the hard cap, the batched path (`infer_panel_batch_infer`, upstream's default
  `parallel_infer=True`, our default `path="batched"`) drops the LAST generated token, while the
  naive path (`path="naive"`) drops the FIRST one;
* without a prompt (ref-free) upstream always runs the naive path and keeps every token.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import GptCheckpoint
from .derived import DerivedFromParameters
from .errors import ModelFileError

BERT_DIM = 1024
SEMANTIC_HZ_CONSTANT = 50  # upstream `hz`: early_stop_num = 50 * max_sec (tokens are 25 Hz)
MIN_TOKENS_BEFORE_EOS = 11  # EOS is impossible for the first 11 generated tokens
HARD_CAP_TOKENS = 1500
MUTE_TOKEN = 486  # semantic id of "silence", used to pick streaming split points
LAYER_NORM_EPS = 1e-5

# KV size classes (positions): a decode step's static shapes in the "bucketed"/"graph" modes and
# the sizes decode buffers are allocated at (longer: multiples of the last one).
KV_BUCKETS = (256, 512, 1024, 1536, 2048)

_LOGGER = logging.getLogger(__name__)

DecodePath = Literal["batched", "naive"]
# How decode steps run: "exact" attends to exactly the valid KV columns (eager; the CPU default),
# "bucketed" runs the static-shape step of a KV bucket eagerly (what "graph" captures; the CPU
# tests check it), "graph" replays that step as a CUDA graph per bucket (the CUDA default).
DecodeMode = Literal["exact", "bucketed", "graph"]


@contextlib.contextmanager
def intra_op_threads(count: int | None) -> Iterator[None]:
    """This thread's torch intra-op threads set to `count` for the block (None: unchanged)."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class GenerationCancelled(Exception):
    """Raised inside `generate` when `should_stop()` returned True."""


@dataclass(frozen=True)
class T2SConfig:
    embedding_dim: int
    num_heads: int
    num_layers: int
    phoneme_vocab_size: int
    vocab_size: int
    eos: int
    early_stop_num: int | None  # None: only the hard cap applies

    @property
    def head_dim(self) -> int:
        return self.embedding_dim // self.num_heads

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> T2SConfig:
        """From the s1 checkpoint's `config` dict (training YAML)."""
        model = config["model"]
        max_sec = (config.get("data") or {}).get("max_sec")
        return cls(
            embedding_dim=int(model["embedding_dim"]),
            num_heads=int(model["head"]),
            num_layers=int(model["n_layer"]),
            phoneme_vocab_size=int(model["phoneme_vocab_size"]),
            vocab_size=int(model["vocab_size"]),
            eos=int(model["EOS"]),
            early_stop_num=None if max_sec is None else int(SEMANTIC_HZ_CONSTANT * max_sec),
        )


@dataclass(frozen=True)
class SamplingParams:
    """Upstream TTS.run defaults. `top_k <= 0` disables top-k; `top_p >= 1` disables top-p."""

    top_k: int = 15
    top_p: float = 1.0
    temperature: float = 1.0
    repetition_penalty: float = 1.35
    max_tokens: int = HARD_CAP_TOKENS
    early_stop: int | None = None  # None: the checkpoint's 50 * max_sec

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= HARD_CAP_TOKENS:
            raise ValueError(f"max_tokens must be in 1..{HARD_CAP_TOKENS}, got {self.max_tokens}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not 0 < self.top_p:
            raise ValueError(f"top_p must be > 0, got {self.top_p}")


def make_generator(seed: int | None, device: str | torch.device = "cpu") -> torch.Generator:
    """A sampling generator on `device`; seed None or negative (upstream's -1) draws a fresh one."""
    generator = torch.Generator(device=device)
    if seed is None or seed < 0:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


# --------------------------------------------------------------------------------------------
# Sampler (upstream AR/models/utils.py semantics, batched over rows)


def logits_to_probs(logits: Tensor, previous_tokens: Tensor | None, *, top_k: int = 15,
                    top_p: float = 1.0, temperature: float = 1.0,
                    repetition_penalty: float = 1.35) -> Tensor:
    """Probabilities [B, V] from logits [B, V]. The repetition penalty is applied IN PLACE on
    `logits` (upstream does this, and the EOS check reads the penalised logits afterwards)."""
    if previous_tokens is not None and repetition_penalty != 1.0 and previous_tokens.numel():
        penalise_in_place(logits, previous_tokens.long(), repetition_penalty)
    return filtered_probs(logits, top_k=top_k, top_p=top_p, temperature=temperature)


def penalise_in_place(logits: Tensor, index: Tensor, repetition_penalty: float) -> None:
    """Upstream's repetition penalty on the columns `index` [B, N] of `logits` [B, V]: negative
    scores multiplied, positive ones divided (a token seen twice is penalised once)."""
    score = logits.gather(1, index)
    score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
    logits.scatter_(1, index, score)


def penalised_history_prefix(logits: Tensor, history: Tensor, seen: Tensor,
                             repetition_penalty: float) -> Tensor:
    """`logits` [B, V] penalised for the tokens in the first `seen` [B] columns of `history`
    [B, C], at static shapes (what a CUDA graph can hold): the columns past `seen` point at a
    scratch column V that is dropped again. A new tensor; the same values as penalising
    `history[:, :seen]` in place."""
    width = logits.shape[1]
    padded = F.pad(logits, (0, 1))
    columns = torch.arange(history.shape[1], device=history.device)
    penalise_in_place(padded, torch.where(columns < seen[:, None], history, width),
                      repetition_penalty)
    return padded[:, :width]


def filtered_probs(logits: Tensor, *, top_k: int, top_p: float, temperature: float) -> Tensor:
    """Top-p, temperature, top-k, softmax (upstream's order)."""
    if top_p < 1.0:
        sorted_logits, sorted_index = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cumulative > top_p
        drop_sorted[:, 0] = False  # always keep the most likely token
        drop = drop_sorted.scatter(1, sorted_index, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)

    logits = logits / max(temperature, 1e-5)

    if top_k > 0:
        kth_best = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = torch.where(logits < kth_best, -math.inf, logits)

    return logits.softmax(dim=-1)


def sample_from_probs(probs: Tensor, *, generator: torch.Generator | None = None,
                      noise: Tensor | None = None) -> Tensor:
    """Exponential race: argmax(probs / q), q ~ Exp(1). Returns ids [B]."""
    if noise is None:
        noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return torch.argmax(probs / noise, dim=-1)


def sample_rows(logits: Tensor, previous_tokens: Tensor, params: SamplingParams, *, eos: int,
                eos_allowed: bool, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Upstream's sampling of rows sharing their settings, eagerly: logits [B, V] (sampled in
    fp32; the penalty lands in place when they already are), the tokens so far [B, N] ->
    (samples [B], ended [B]). Upstream stops on a sampled EOS or an EOS argmax of the
    penalised logits; before `eos_allowed`, EOS (the last column) is not drawn."""
    logits = logits.float()
    if not eos_allowed:
        logits = logits[:, :eos]
    probs = logits_to_probs(logits, previous_tokens, top_k=params.top_k, top_p=params.top_p,
                            temperature=params.temperature,
                            repetition_penalty=params.repetition_penalty)
    sampled = sample_from_probs(probs, generator=generator)
    return sampled, (sampled == eos) | (logits.argmax(dim=-1) == eos)


# --------------------------------------------------------------------------------------------
# Modules (names mirror the official state dict)


class TokenEmbedding(nn.Module):
    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim)

    def forward(self, ids: Tensor) -> Tensor:
        return self.word_embeddings(ids)


class SinePosition(nn.Module):
    """`x + alpha * PE[p]` with the standard sine table (upstream scale=False, alpha=True)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.alpha = nn.Parameter(torch.ones(1))

    def table(self, length: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """alpha * PE[:length] ([length, dim]); PE is computed in float32 like upstream."""
        position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
        rate = torch.exp(torch.arange(0, self.dim, 2, dtype=torch.float32, device=device)
                         * -(math.log(10000.0) / self.dim))
        pe = torch.zeros(length, self.dim, device=device)
        pe[:, 0::2] = torch.sin(position * rate)
        pe[:, 1::2] = torch.cos(position * rate)
        return (self.alpha.float() * pe).to(dtype)


class GemvLinear(nn.Linear):
    """`nn.Linear` whose one-row products on the CPU in fp32 (every matmul of a decode step) run
    through numpy's BLAS (OpenBLAS, one thread: wyoming_gsv sets OPENBLAS_NUM_THREADS) on the
    weight stored transposed ([in, out] contiguous, its fastest layout there). A decode step
    only streams the weights through the core, and torch's CPU BLAS (MKL) did that at ~10 GB/s
    on the AMD EPYC here against ~16 GB/s for OpenBLAS: the real v2 GPT's step went from 35 to
    25 ms (benchmarks/bench_t2s.py). Several rows (the prefill), other devices and dtypes keep
    F.linear. Parameters and state dict are nn.Linear's."""

    _numpy: tuple[int, np.ndarray, np.ndarray | None] | None = None  # (weight data_ptr, *arrays())

    def forward(self, rows: Tensor) -> Tensor:
        if rows.shape[0] != 1 or rows.dtype != torch.float32 or rows.device.type != "cpu" or rows.requires_grad:
            return F.linear(rows, self.weight, self.bias)
        weight, bias = self.arrays()
        out = rows.numpy() @ weight
        if bias is not None:
            out += bias
        return torch.from_numpy(out)

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Numpy views of the weight [in, out] and bias (fp32 CPU weights only), the weight
        moved to the transposed layout the first time; they follow replaced weights."""
        cached = self._numpy
        if cached is None or cached[0] != self.weight.data_ptr():
            if not self.weight.t().is_contiguous():
                with torch.inference_mode(False):  # a plain tensor, usable outside inference mode too
                    self.weight.data = self.weight.detach().t().contiguous().t()
            weight = self.weight.detach()
            bias = None if self.bias is None else self.bias.detach().numpy()
            cached = self._numpy = (weight.data_ptr(), weight.t().numpy(), bias)
        return cached[1], cached[2]


class SelfAttention(nn.Module):
    """Fused q,k,v projection plus output projection. The official state dict stores the fused
    projection like `nn.MultiheadAttention` (`in_proj_weight`, `in_proj_bias`); state-dict hooks
    map those names to and from the `in_proj` Linear (as gpt-fast maps wq/wk/wv to wqkv), so
    every matmul of the model is an `nn.Linear` that `quantize_int8` can swap while the state
    dict keeps the official names both ways."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj = GemvLinear(dim, 3 * dim)
        self.out_proj = GemvLinear(dim, dim)
        self.register_load_state_dict_pre_hook(self._from_official_names)
        self.register_state_dict_post_hook(self._to_official_names)

    @staticmethod
    def _from_official_names(_module: nn.Module, state_dict: dict[str, Tensor], prefix: str,
                             *_args: Any) -> None:
        for name in ("weight", "bias"):
            if f"{prefix}in_proj_{name}" in state_dict:
                state_dict[f"{prefix}in_proj.{name}"] = state_dict.pop(f"{prefix}in_proj_{name}")

    @staticmethod
    def _to_official_names(_module: nn.Module, state_dict: dict[str, Tensor], prefix: str,
                           *_args: Any) -> None:
        for name in ("weight", "bias"):
            if f"{prefix}in_proj.{name}" in state_dict:
                state_dict[f"{prefix}in_proj_{name}"] = state_dict.pop(f"{prefix}in_proj.{name}")


class Int8Linear(nn.Module):
    """`nn.Linear` with symmetric per-output-channel int8 weights (opt-in CPU speed mode, not
    bit-exact), run by fbgemm's dynamic-quantized GEMM: about 4-6x less weight traffic per decode
    step. A plain int8 weight + scale matmul (`aten._weight_int8pack_mm`) measured ~25x slower
    than this on the CPU here, so the packed fbgemm weights stay; torch 2.13 marks the quantized
    tensor they are packed from deprecated, hence the silenced warning."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scale = (weight.abs().amax(dim=1).clamp_min(1e-12) / 127).double()
        zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
        bias = None if linear.bias is None else linear.bias.detach().float()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated")
            quantized = torch.quantize_per_channel(weight, scale, zero_point, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(quantized, bias)

    def forward(self, rows: Tensor) -> Tensor:
        # reduce_range: 7-bit activations, so AVX2 CPUs without VNNI cannot saturate int16 sums.
        return torch.ops.quantized.linear_dynamic(rows, self.packed, True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def swap_linears_for_int8(module: nn.Module) -> None:
    """Replace every `nn.Linear` under `module` by an `Int8Linear` (gpt-fast's module swap)."""
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            swap_linears_for_int8(child)
    if isinstance(module, EncoderLayer):
        module.forget_derived()


# Where one step writes its keys/values: a slice of cache columns shared by every row
# (prefill, exact decode), or each row's column as a scatter index [B, H, 1, head_dim]
# (static-shape decode: one scatter per cache, where index tensors cost an index_put kernel
# and two copies on the GPU).
CacheSlot = tuple[slice, slice, slice] | Tensor


class _LayerRefs(NamedTuple):
    """What one layer's forward touches, as plain references (see EncoderLayer.bind)."""

    in_proj: Callable[[Tensor], Tensor]
    out_proj: Callable[[Tensor], Tensor]
    ffn_in: Callable[[Tensor], Tensor]
    ffn_out: Callable[[Tensor], Tensor]
    norm1_weight: Tensor
    norm1_bias: Tensor
    norm2_weight: Tensor
    norm2_bias: Tensor


class EncoderLayer(DerivedFromParameters):
    """Post-norm block: x = LN1(x + MHA(x)); x = LN2(x + W2 relu(W1 x))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim)
        self.linear1 = GemvLinear(dim, 4 * dim)
        self.linear2 = GemvLinear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self._refs: _LayerRefs | None = None
        self._weights: LayerWeights[Tensor] | None = None
        self._arrays: LayerWeights[np.ndarray] | None = None

    def bind(self) -> _LayerRefs:
        """Resolve the submodules' forwards and norm weights once: nn.Module attribute lookups
        and __call__ cost ~20 us per layer per token (a quarter of a small layer's step)."""
        attn = self.self_attn
        self._refs = _LayerRefs(attn.in_proj.forward, attn.out_proj.forward, self.linear1.forward,
                                self.linear2.forward, self.norm1.weight, self.norm1.bias,
                                self.norm2.weight, self.norm2.bias)
        return self._refs

    def forget_derived(self) -> None:
        """Drop what `bind`, `weights` and `arrays` resolved (also after a module swap)."""
        self._refs = self._weights = self._arrays = None

    def forward(self, rows: Tensor, length: int, k_cache: Tensor, v_cache: Tensor,
                slot: CacheSlot, span: int, attn_mask: Tensor | None) -> Tensor:
        return layer_forward(rows, length, self._refs or self.bind(), k_cache, v_cache, slot, span,
                             attn_mask)

    def weights(self) -> LayerWeights[Tensor] | None:
        """The float weights in `float_layer_forward`'s order; None once swapped for int8."""
        if isinstance(self.linear1, Int8Linear):
            return None
        if self._weights is None:
            attn = self.self_attn
            self._weights = LayerWeights(
                attn.in_proj.weight, attn.in_proj.bias, attn.out_proj.weight, attn.out_proj.bias,
                self.linear1.weight, self.linear1.bias, self.linear2.weight, self.linear2.bias,
                self.norm1.weight, self.norm1.bias, self.norm2.weight, self.norm2.bias)
        return self._weights

    def arrays(self) -> LayerWeights[np.ndarray] | None:
        """The weights as numpy arrays for `row_layer_forward`; None unless every matmul is a
        GemvLinear with fp32 CPU weights (int8, other dtypes and devices run `layer_forward`)."""
        if self._arrays is None:
            attn = self.self_attn
            linears = (attn.in_proj, attn.out_proj, self.linear1, self.linear2)
            if not all(type(linear) is GemvLinear for linear in linears):
                return None
            weight = self.linear1.weight
            if weight.dtype != torch.float32 or weight.device.type != "cpu":
                return None
            norms = (self.norm1.weight, self.norm1.bias, self.norm2.weight, self.norm2.bias)
            self._arrays = LayerWeights(*(array for linear in linears for array in linear.arrays()),
                                       *(norm.detach().numpy() for norm in norms))
        return self._arrays


WeightT = TypeVar("WeightT", Tensor, np.ndarray)


class LayerWeights(NamedTuple, Generic[WeightT]):
    """One layer's parameters in one order: as tensors (`EncoderLayer.weights`, what a compiled
    program takes as inputs; linears [out, in]) or as numpy arrays (`EncoderLayer.arrays`, what
    `row_layer_forward` reads; linears [in, out], sharing the tensors' storage)."""

    in_w: WeightT
    in_b: WeightT
    out_w: WeightT
    out_b: WeightT
    ffn_in_w: WeightT
    ffn_in_b: WeightT
    ffn_out_w: WeightT
    ffn_out_b: WeightT
    norm1_w: WeightT
    norm1_b: WeightT
    norm2_w: WeightT
    norm2_b: WeightT


def layer_forward(rows: Tensor, length: int, refs: _LayerRefs, k_cache: Tensor, v_cache: Tensor,
                  slot: CacheSlot, span: int | None, attn_mask: Tensor | None) -> Tensor:
    """One layer: rows [B*T, D] (T = `length` tokens per row) whose keys/values go to `slot` of
    the k/v caches [B, H, S, hd]; attention reads cache columns 0..span-1 (None: all; `attn_mask`
    [B, 1, T, span], boolean or additive, marks the valid ones). Returns the new rows [B*T, D].

    A single-token decode step is bound by reading the weights, so the rest is kept to as few
    ops as possible: flat rows between layers, fused bias, in-place relu/residual."""
    in_proj, out_proj, ffn_in, ffn_out, norm1_w, norm1_b, norm2_w, norm2_b = refs
    count, dim = rows.shape
    batch = count // length
    heads = k_cache.shape[1]
    qkv = in_proj(rows).view(batch, length, 3, heads, dim // heads)
    q, k, v = qkv.transpose(1, 3).unbind(2)  # each [B, H, T, hd]
    if isinstance(slot, Tensor):
        k_cache.scatter_(2, slot, k)
        v_cache.scatter_(2, slot, v)
    else:
        k_cache[slot] = k
        v_cache[slot] = v
    attn = F.scaled_dot_product_attention(q, k_cache[:, :, :span], v_cache[:, :, :span],
                                          attn_mask=attn_mask)
    attn = attn.transpose(1, 2).reshape(count, dim)
    rows = F.layer_norm(out_proj(attn).add_(rows), (dim,), norm1_w, norm1_b, LAYER_NORM_EPS)
    out = ffn_out(ffn_in(rows).relu_())
    return F.layer_norm(out.add_(rows), (dim,), norm2_w, norm2_b, LAYER_NORM_EPS)


def float_layer_forward(rows: Tensor, length: int, weights: LayerWeights[Tensor],
                        k_cache: Tensor, v_cache: Tensor, slot: CacheSlot, span: int | None,
                        attn_mask: Tensor | None) -> Tensor:
    """`layer_forward` with the weights as arguments: what `torch.compile` turns into one
    program for every layer (weights as inputs, not constants), fusing the residual adds into
    the norms and the cache writes into one kernel."""
    w = weights
    refs = _LayerRefs(lambda x: F.linear(x, w.in_w, w.in_b), lambda x: F.linear(x, w.out_w, w.out_b),
                      lambda x: F.linear(x, w.ffn_in_w, w.ffn_in_b),
                      lambda x: F.linear(x, w.ffn_out_w, w.ffn_out_b),
                      w.norm1_w, w.norm1_b, w.norm2_w, w.norm2_b)
    return layer_forward(rows, length, refs, k_cache, v_cache, slot, span, attn_mask)


def row_layer_forward(row: np.ndarray, w: LayerWeights[np.ndarray], k_cache: np.ndarray,
                      v_cache: np.ndarray, column: int) -> np.ndarray:
    """`layer_forward` for one token of one row on the CPU (the default decode step), in numpy:
    row [D]; its key and value go to `column` of k/v [H, S, hd], attention reads columns
    0..column. A numpy op costs ~1 us where a torch op costs 5-10 us, and attention over the
    cache as two batched matrix-vector products took ~0.8x the time of SDPA's kernel: the real
    v2 step went from 1.23x to 1.12x its weights' GEMV time at 1 thread (benchmarks/bench_t2s.py).
    Same sums as `layer_forward` up to float rounding (~1e-6 on the logits)."""
    heads, _, head_dim = k_cache.shape
    qkv = row @ w.in_w
    qkv += w.in_b
    q, k, v = qkv.reshape(3, heads, head_dim)
    k_cache[:, column] = k
    v_cache[:, column] = v
    scores = np.matmul(k_cache[:, : column + 1], q[:, :, None])[:, :, 0]  # [H, columns]
    scores *= 1.0 / math.sqrt(head_dim)
    scores -= scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    attn = np.matmul(scores[:, None], v_cache[:, : column + 1]).reshape(-1)
    hidden = attn @ w.out_w
    hidden += w.out_b
    hidden += row
    hidden = _layer_norm_in_place(hidden, w.norm1_w, w.norm1_b)
    inner = hidden @ w.ffn_in_w
    inner += w.ffn_in_b
    np.maximum(inner, 0.0, out=inner)
    out = inner @ w.ffn_out_w
    out += w.ffn_out_b
    out += hidden
    return _layer_norm_in_place(out, w.norm2_w, w.norm2_b)


def _layer_norm_in_place(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x -= x.sum() / x.size  # ndarray.mean goes through Python code: ~3x the time
    x *= weight / np.sqrt(np.dot(x, x) / x.size + LAYER_NORM_EPS)
    x += bias
    return x


class Encoder(nn.Module):
    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim) for _ in range(num_layers))


def kv_bucket(length: int) -> int:
    """The KV size class holding `length` positions: the static shapes a decode step runs at."""
    for bucket in KV_BUCKETS:
        if length <= bucket:
            return bucket
    return -(-length // KV_BUCKETS[-1]) * KV_BUCKETS[-1]


@dataclass
class KVCache:
    """Static decode buffers of one generation: k and v [layers, batch, heads, capacity, head_dim],
    which columns hold real tokens (`valid`, [batch, capacity]: left padding and columns not yet
    written are False), the repetition-penalty history [batch, capacity] and the audio position
    table. `Text2Semantic.setup_caches` hands them out from a per-model pool, so they are
    allocated once per size class and reused; `rows(n)` views the first n rows (same storage,
    so CUDA graphs captured on them stay valid)."""

    k: Tensor
    v: Tensor
    valid: Tensor
    history: Tensor
    audio_pe: Tensor | None = None  # [capacity, D], set by Text2Semantic.setup_caches
    zeroed: bool = False  # every column holds a finite value (needed when a step reads past valid)
    graphs: dict[tuple, CapturedStep] = field(default_factory=dict)  # see Text2Semantic._captured
    root: KVCache | None = None  # the full-size buffers this is a view of

    @classmethod
    def allocate(cls, config: T2SConfig, batch: int, max_len: int, device: torch.device,
                 dtype: torch.dtype, *, zeroed: bool = False) -> KVCache:
        """`torch.empty` unless `zeroed`: on the CPU untouched pages then cost no memory."""
        make = torch.zeros if zeroed else torch.empty
        shape = (config.num_layers, batch, config.num_heads, max_len, config.head_dim)
        return cls(
            k=make(shape, device=device, dtype=dtype),
            v=make(shape, device=device, dtype=dtype),
            valid=torch.zeros(batch, max_len, dtype=torch.bool, device=device),
            history=torch.zeros(batch, max_len, dtype=torch.long, device=device),
            zeroed=zeroed,
        )

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    @property
    def full(self) -> KVCache:
        return self if self.root is None else self.root

    def rows(self, count: int, start: int = 0) -> KVCache:
        """A view of rows start..start+count-1 sharing this cache's storage (and, for start 0,
        its captured graphs, which are keyed by row count)."""
        full, end = self.full, start + count
        return replace(full, k=full.k[:, start:end], v=full.v[:, start:end],
                       valid=full.valid[start:end], history=full.history[start:end], root=full)

    def move_row(self, source: int, target: int, columns: int) -> None:
        """Copy row `source` (its first `columns` KV columns, its flags and history) to row
        `target` of the full buffers: a row leaving a continuous batch is refilled this way."""
        full = self.full
        full.k[:, target, :, :columns] = full.k[:, source, :, :columns]
        full.v[:, target, :, :columns] = full.v[:, source, :, :columns]
        full.valid[target] = full.valid[source]
        full.history[target] = full.history[source]

    def keep_rows(self, keep: Tensor) -> KVCache:
        """Move the rows `keep` (in order) to the front, in place; a view of them."""
        for buffer, dim in ((self.k, 1), (self.v, 1), (self.valid, 0), (self.history, 0)):
            buffer.narrow(dim, 0, keep.numel()).copy_(buffer.index_select(dim, keep))
        return self.rows(keep.numel())

    def make_finite(self) -> None:
        """Zero k and v once, for steps that read columns past the valid ones (masked out, but
        uninitialised memory could hold NaN, and NaN * 0 is NaN)."""
        full = self.full
        if not full.zeroed:
            full.k.zero_()
            full.v.zero_()
            full.zeroed = True


class SamplerSpec(NamedTuple):
    """How a fused step samples (fixed per captured graph): the request's settings, and whether
    EOS may be drawn yet (not in the first MIN_TOKENS_BEFORE_EOS tokens)."""

    eos_allowed: bool
    top_k: int
    top_p: float
    temperature: float
    repetition_penalty: float

    @classmethod
    def of(cls, params: SamplingParams, generated: int) -> SamplerSpec:
        """How a request samples its next token after `generated` tokens."""
        return cls(generated >= MIN_TOKENS_BEFORE_EOS, params.top_k, params.top_p,
                   params.temperature, params.repetition_penalty)

    def width(self, config: T2SConfig) -> int:
        """The logits columns sampled from: all, or all but EOS (the last) before it may come."""
        return config.vocab_size if self.eos_allowed else config.eos


class CapturedStep:
    """A static-shape step for fixed (rows, KV span[, sampler]), captured as a CUDA graph on
    the first call and replayed for every later token of that shape (no per-op launches).
    Without a sampler it is `Text2Semantic.decode_step` and returns the logits (the batcher
    samples row by row). With one it is `Text2Semantic.fused_step`: the caller draws the noise
    into `noise` (the request's own generator, outside the graph), and the graph samples,
    writes the history and advances its own tokens/positions/audio_index, so a token costs one
    replay and one read of [samples, ended] (the eager sampler cost ~0.5 ms of launches per
    token on an H200, a third of the step)."""

    def __init__(self, model: Text2Semantic, cache: KVCache, span: int,
                 sampler: SamplerSpec | None = None) -> None:
        self.model, self.cache, self.span, self.sampler = model, cache, span, sampler
        device = cache.k.device
        self.tokens = torch.zeros(cache.batch, dtype=torch.long, device=device)
        self.positions = torch.zeros_like(self.tokens)
        self.audio_index = torch.zeros_like(self.tokens)
        self.noise = None
        if sampler is not None:
            self.noise = torch.ones(cache.batch, sampler.width(model.config), device=device)
        self.graph: Any = None
        self.output: Tensor | None = None

    def __call__(self, tokens: Tensor, positions: Tensor, audio_index: Tensor) -> Tensor:
        for buffer, value in ((self.tokens, tokens), (self.positions, positions),
                              (self.audio_index, audio_index)):
            if value is not buffer:  # a fused step's own outputs come back as its inputs
                buffer.copy_(value)
        if self.graph is None:
            self._capture()
        self.graph.replay()
        assert self.output is not None
        return self.output

    def _step(self) -> Tensor:
        if self.sampler is None:
            return self.model.decode_step(self.tokens, self.positions, self.audio_index,
                                          self.cache, self.span, compiled=True)
        assert self.noise is not None
        return self.model.fused_step(self.tokens, self.positions, self.audio_index, self.noise,
                                     self.cache, self.span, self.sampler, compiled=True)

    def _capture(self) -> None:
        # Warm up on a side stream first (compilation, cuBLAS handles, kernel choice), as
        # torch.cuda.graphs requires. The warm-up runs the real step on the real inputs: the
        # replay that follows writes the same cache and history columns again, and a fused
        # step's inputs, which it advances, are put back first.
        inputs = (self.tokens, self.positions, self.audio_index)
        saved = [buffer.clone() for buffer in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._step()
        torch.cuda.current_stream().wait_stream(side)
        for buffer, value in zip(inputs, saved):
            buffer.copy_(value)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (SoVITS of other requests) may use the GPU meanwhile; its
        # own stream: torch.cuda.graph's default capture stream is one for the whole process,
        # and two batchers (two model pairs) may capture at the same time.
        with torch.cuda.graph(graph, pool=self.model.graph_pool(), stream=side,
                              capture_error_mode="thread_local"):
            self.output = self._step()
        self.graph = graph


@dataclass
class _Row:
    """Book-keeping for one sentence of a batch."""

    tokens: list[int]
    finished_by_eos: bool = False


class Text2Semantic(nn.Module):
    def __init__(self, config: T2SConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embedding_dim
        self.bert_proj = nn.Linear(BERT_DIM, dim)
        self.ar_text_embedding = TokenEmbedding(config.phoneme_vocab_size, dim)
        self.ar_text_position = SinePosition(dim)
        self.ar_audio_embedding = TokenEmbedding(config.vocab_size, dim)
        self.ar_audio_position = SinePosition(dim)
        self.h = Encoder(dim, config.num_layers)
        self.ar_predict_layer = GemvLinear(dim, config.vocab_size, bias=False)
        # How decode steps run when a call does not say; None: default_decode_mode.
        self.decode_mode: DecodeMode | None = None
        # Intra-op threads for the CPU decode steps (fewer than the caller's only); None: the
        # caller's. A step reads every weight for one row, so it is bound by memory bandwidth:
        # where one core already saturates it, more threads only add CPU time.
        self.decode_threads: int | None = None
        # Free decode buffers (KVCache), reused by later generations; see setup_caches.
        self._cache_pool: list[KVCache] = []
        self._cache_pool_lock = threading.Lock()
        self._graph_pool: Any = None
        self._graph_failure: str | None = None  # set when a capture failed: decode eagerly
        # Captured steps run their layers through torch.compile (CUDA only): 461 -> 245 kernels
        # per step of the real v2 GPT (benchmarks/bench_gpu.py).
        self.compile_steps = True
        self._compiled: Callable[..., Tensor] | None = None
        self._compile_failure: str | None = None

    # ---------------------------------------------------------------------------- loading

    @classmethod
    def from_checkpoint(cls, ckpt: GptCheckpoint, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> Text2Semantic:
        config = T2SConfig.from_config(ckpt.config)
        with torch.device("meta"):
            model = cls(config)
        try:
            missing, _unexpected = model.load_state_dict(dict(ckpt.weights), strict=False,
                                                         assign=True)
        except RuntimeError as err:  # shape mismatches
            raise ModelFileError(ckpt.path, f"GPT weights do not fit the config: {err}") from err
        if missing:
            raise ModelFileError(ckpt.path, f"GPT weights lack {missing[:5]}")
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def quantize_int8(self) -> Text2Semantic:
        """Opt-in CPU speed mode: every matmul of the decode step (the layers and the logits
        head) becomes an `Int8Linear`. Tokens are no longer bit-exact with the official model.
        Needs a float32 model on the CPU."""
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise ValueError("int8 weights need a float32 model on the CPU")
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            raise ValueError("this torch build has no fbgemm engine for int8 matmuls")
        try:
            Int8Linear(nn.Linear(8, 8))  # fails before any module is swapped
        except (AttributeError, RuntimeError) as err:
            raise ValueError(f"int8 matmuls are unavailable in this torch: {err}") from err
        swap_linears_for_int8(self.h)
        self.ar_predict_layer = Int8Linear(self.ar_predict_layer)
        return self

    @property
    def is_int8(self) -> bool:
        return isinstance(self.ar_predict_layer, Int8Linear)

    @property
    def device(self) -> torch.device:
        return self.ar_audio_embedding.word_embeddings.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ar_audio_embedding.word_embeddings.weight.dtype

    @property
    def default_decode_mode(self) -> DecodeMode:
        """CUDA: captured graphs. CPU: exact spans (a bucket would read padding KV for nothing)."""
        return "graph" if self.device.type == "cuda" else "exact"

    def step_threads(self) -> int | None:
        """The thread count decode steps run at when it differs from the caller's; else None."""
        wanted = self.decode_threads
        if wanted is None or self.device.type != "cpu" or wanted >= torch.get_num_threads():
            return None
        return max(1, wanted)

    # ---------------------------------------------------------------------------- buffers

    def setup_caches(self, batch: int, max_len: int) -> KVCache:
        """Decode buffers for `batch` rows and `max_len` positions (gpt-fast's setup_caches):
        a pooled one when one is large enough, else new ones sized to the KV bucket of
        `max_len`. Give them back with `release_caches` so the next generation reuses them."""
        device, dtype = self.device, self.dtype
        with self._cache_pool_lock:
            for index, cache in enumerate(self._cache_pool):
                if (cache.batch >= batch and cache.capacity >= max_len
                        and cache.k.device == device and cache.k.dtype == dtype):
                    return self._cache_pool.pop(index).rows(batch)
        cache = KVCache.allocate(self.config, batch, kv_bucket(max_len), device, dtype,
                                 zeroed=device.type == "cuda")
        cache.audio_pe = self.ar_audio_position.table(cache.capacity, device, dtype)
        return cache

    def release_caches(self, cache: KVCache) -> None:
        """Back to the pool. Buffers covered by larger ones are dropped, which bounds the pool."""
        full = cache.full
        with self._cache_pool_lock:
            if any(_covers(kept, full) for kept in self._cache_pool):
                return
            self._cache_pool = [kept for kept in self._cache_pool if not _covers(full, kept)]
            self._cache_pool.append(full)

    def graph_pool(self) -> Any:
        """One CUDA memory pool for all of this model's captured steps."""
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        return self._graph_pool

    # ---------------------------------------------------------------------------- pieces

    def embed_text(self, phone_ids: Tensor, bert: Tensor) -> Tensor:
        """phone ids [T] + BERT features [1024, T] -> positioned text embeddings [T, D]."""
        x = self.ar_text_embedding(phone_ids) + self.bert_proj(bert.transpose(0, 1).to(self.dtype))
        return x + self.ar_text_position.table(x.shape[0], x.device, x.dtype)

    def embed_audio(self, semantic_ids: Tensor) -> Tensor:
        """prompt semantic ids [T] -> positioned audio embeddings [T, D] (positions from 0)."""
        y = self.ar_audio_embedding(semantic_ids)
        return y + self.ar_audio_position.table(y.shape[0], y.device, y.dtype)

    def mute_similarity(self, mute_token: int = MUTE_TOKEN) -> Tensor:
        """Cosine similarity of every audio-embedding row with the mute token's row [V]."""
        table = self.ar_audio_embedding.word_embeddings.weight.float()
        return F.cosine_similarity(table[mute_token : mute_token + 1], table, dim=-1)

    def forward_cached(self, x: Tensor, cache: KVCache, start: int,
                       attn_mask: Tensor | None) -> Tensor:
        """x [B, T, D] through all layers at cache columns start..start+T-1, attending to the
        columns before its end; logits of the last position [B, V]."""
        end = start + x.shape[1]
        return self._layers(x, cache, (slice(None), slice(None), slice(start, end)), end,
                            attn_mask)

    def decode_step(self, tokens: Tensor, positions: Tensor, audio_index: Tensor,
                    cache: KVCache, span: int, *, compiled: bool = False) -> Tensor:
        """One token per row at static shapes (what a CUDA graph captures): token ids [B] at
        cache columns `positions` [B] with audio positions `audio_index` [B]; attention over
        the first `span` columns (a KV bucket), masked to the valid ones. Logits [B, V].
        `compiled`: the layers through torch.compile where this model allows it."""
        x = self.ar_audio_embedding(tokens) + cache.audio_pe[audio_index]
        valid = cache.valid.scatter_(1, positions[:, None], True)[:, None, None, :span]
        # Additive, built once per step: a boolean mask is converted in every layer's attention.
        mask = torch.full(valid.shape, -math.inf, dtype=x.dtype, device=x.device).masked_fill_(valid, 0.0)
        config = self.config
        slot = positions[:, None, None, None].expand(-1, config.num_heads, 1, config.head_dim)
        return self._layers(x[:, None], cache, slot, span, mask, compiled=compiled)

    def fused_step(self, tokens: Tensor, positions: Tensor, audio_index: Tensor, noise: Tensor,
                   cache: KVCache, span: int, sampler: SamplerSpec, *,
                   compiled: bool = False) -> Tensor:
        """`decode_step`, then each row's sample (the sampler above at static shapes, with the
        exponential `noise` [B, V or EOS] drawn by the caller), written to the history; the
        inputs advance in place to the next step. Returns [2, B]: the samples, and whether each
        row ended (EOS drawn, or EOS the argmax of the penalised logits)."""
        eos = self.config.eos
        logits = self.decode_step(tokens, positions, audio_index, cache, span,
                                  compiled=compiled).float()
        logits = logits[:, : sampler.width(self.config)]
        seen = audio_index + 1  # history columns so far: the prompt, then every earlier sample
        if sampler.repetition_penalty != 1.0:
            logits = penalised_history_prefix(logits, cache.history, seen,
                                              sampler.repetition_penalty)
        probs = filtered_probs(logits, top_k=sampler.top_k, top_p=sampler.top_p,
                               temperature=sampler.temperature)
        sampled = sample_from_probs(probs, noise=noise)
        ended = (sampled == eos) | (logits.argmax(dim=-1) == eos)
        cache.history.scatter_(1, seen[:, None], sampled[:, None])
        tokens.copy_(sampled)
        positions += 1
        audio_index += 1
        return torch.stack((sampled, ended.long()))

    def _layers(self, x: Tensor, cache: KVCache, slot: CacheSlot, span: int,
                attn_mask: Tensor | None, *, compiled: bool = False) -> Tensor:
        """x [B, T, D] through every layer; logits of each row's last position [B, V]."""
        batch, length, dim = x.shape
        if batch * length == 1 and attn_mask is None and isinstance(slot, tuple):
            logits = self._row_layers(x, cache, slot[2].start)
            if logits is not None:
                return logits
        rows = x.reshape(batch * length, dim)
        compiled_layer = self._compiled_layer() if compiled else None
        if compiled_layer is not None and attn_mask is not None:
            # One program for every KV bucket: the span is a dynamic size, not a constant.
            torch._dynamo.mark_dynamic(attn_mask, 3)
        for layer, k_cache, v_cache in zip(self.h.layers, cache.k, cache.v):
            weights = layer.weights() if compiled_layer is not None else None
            if weights is not None:
                keys, values = k_cache[:, :, :span], v_cache[:, :, :span]
                torch._dynamo.mark_dynamic(keys, 2)
                torch._dynamo.mark_dynamic(values, 2)
                try:
                    rows = compiled_layer(rows, length, weights, keys, values, slot, None,
                                          attn_mask)
                    continue
                except Exception as err:  # no compiler, an unsupported op: eager from now on
                    self._compile_failure = f"{type(err).__name__}: {err}"
                    _LOGGER.warning("torch.compile of the decode step failed, running it "
                                    "uncompiled from now on: %s", self._compile_failure)
                    compiled_layer = None
            # .forward directly: nn.Module.__call__ costs ~10 us x 24 layers per token.
            rows = layer.forward(rows, length, k_cache, v_cache, slot, span, attn_mask)
        return self.ar_predict_layer(rows.view(batch, length, dim)[:, -1])

    def _row_layers(self, x: Tensor, cache: KVCache, column: int) -> Tensor | None:
        """One token of one row at cache `column` through every layer by `row_layer_forward`;
        logits [1, V], or None where that does not apply (int8, not fp32 on the CPU, grad)."""
        if x.requires_grad or x.device.type != "cpu" or x.dtype != torch.float32:
            return None
        layers = [layer.arrays() for layer in self.h.layers]
        if any(arrays is None for arrays in layers):
            return None
        row = x.reshape(-1).numpy()
        for arrays, k_cache, v_cache in zip(layers, cache.k.numpy(), cache.v.numpy()):
            row = row_layer_forward(row, arrays, k_cache[0], v_cache[0], column)
        return self.ar_predict_layer(torch.from_numpy(row)[None])

    def _compiled_layer(self) -> Callable[..., Tensor] | None:
        """`float_layer_forward` compiled (one program for every layer and KV bucket; a batch of
        several rows, or other buffers, compile once more), or None: off, not CUDA, failed."""
        if not self.compile_steps or self.device.type != "cuda" or self._compile_failure:
            return None
        if self._compiled is None:
            self._compiled = torch.compile(float_layer_forward, fullgraph=True)
        return self._compiled

    # ---------------------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, phone_ids: Tensor, bert: Tensor, prompt: Tensor | None,
                 params: SamplingParams = SamplingParams(), *,
                 generator: torch.Generator | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_token: Callable[[int], None] | None = None,
                 path: DecodePath = "batched", mode: DecodeMode | None = None) -> Tensor:
        """Semantic tokens [N] for one sentence: phone ids [Tx] (prompt text + target text),
        BERT features [1024, Tx], prompt semantic ids [Ty] or None (ref-free).

        `on_token` sees every generated token as it is accepted (for streaming); the return
        value follows upstream's slicing (see module doc). Raises `GenerationCancelled` when
        `should_stop()` turns True (checked before every step). `mode` picks how decode steps
        run (see `DecodeMode`; default: the model's `decode_mode`, else `default_decode_mode`)."""
        rows = self._run([phone_ids], [bert], prompt, params, generator, should_stop, on_token,
                         mode)
        return official_slice(rows[0].tokens, rows[0].finished_by_eos, prompt is not None, path)

    @torch.inference_mode()
    def generate_batch(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
                       params: SamplingParams = SamplingParams(), *,
                       generator: torch.Generator | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       path: DecodePath = "batched",
                       mode: DecodeMode | None = None) -> list[Tensor]:
        """Several sentences at once (left-padded text, padding masks). Each row gives the same
        tokens as `generate` would for it alone, up to sampling noise (exactly with top_k=1).
        Ref-free batches run row by row, as upstream does."""
        if len(phone_ids) != len(bert) or not phone_ids:
            raise ValueError("generate_batch needs one BERT tensor per phone sequence (>= 1)")
        if prompt is None:
            return [self.generate(p, b, None, params, generator=generator,
                                  should_stop=should_stop, path=path, mode=mode)
                    for p, b in zip(phone_ids, bert)]
        rows = self._run(phone_ids, bert, prompt, params, generator, should_stop, None, mode)
        return [official_slice(row.tokens, row.finished_by_eos, True, path) for row in rows]

    def check_inputs(self, phone_ids: list[Tensor], bert: list[Tensor],
                      prompt: Tensor | None) -> None:
        cfg = self.config
        for i, (phones, features) in enumerate(zip(phone_ids, bert)):
            if phones.ndim != 1 or phones.numel() == 0:
                raise ValueError(f"phone_ids[{i}] must be a non-empty 1-D tensor")
            if features.shape != (BERT_DIM, phones.numel()):
                raise ValueError(f"bert[{i}] must be [{BERT_DIM}, {phones.numel()}], "
                                 f"got {list(features.shape)}")
            if int(phones.min()) < 0 or int(phones.max()) >= cfg.phoneme_vocab_size:
                raise ValueError(f"phone_ids[{i}] outside 0..{cfg.phoneme_vocab_size - 1}")
        if prompt is not None:
            if prompt.ndim != 1 or prompt.numel() == 0:
                raise ValueError("prompt must be a non-empty 1-D tensor (or None for ref-free)")
            if int(prompt.min()) < 0 or int(prompt.max()) >= cfg.eos:
                raise ValueError(f"prompt semantic ids outside 0..{cfg.eos - 1}")

    def prefill(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
                 cache: KVCache) -> Tensor:
        """Runs the prefix (left-padded text, then the prompt audio) into `cache`, marks its
        valid columns and fills the history with the prompt; logits of the last position."""
        cfg, device, dtype = self.config, self.device, self.dtype
        batch, text_len = len(phone_ids), max(p.numel() for p in phone_ids)
        prompt_len = 0 if prompt is None else prompt.numel()
        prefix_len = text_len + prompt_len
        x = torch.zeros(batch, prefix_len, cfg.embedding_dim, device=device, dtype=dtype)
        valid = cache.valid
        valid.zero_()
        valid[:, :prefix_len] = True
        for row, (phones, features) in enumerate(zip(phone_ids, bert)):
            pad = text_len - phones.numel()
            x[row, pad:text_len] = self.embed_text(phones.to(device), features.to(device))
            valid[row, :pad] = False
        if prompt is not None:
            x[:, text_len:] = self.embed_audio(prompt.to(device))
            cache.history[:, :prompt_len] = prompt.to(device)
        # Text rows see all text, never audio; audio rows see all text and earlier audio.
        allowed = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=device)
        allowed[:text_len, text_len:] = False
        allowed[text_len:, text_len:] = torch.ones(prompt_len, prompt_len, dtype=torch.bool,
                                                   device=device).tril()
        mask = allowed[None, None] & valid[:, None, None, :prefix_len]
        return self.forward_cached(x, cache, 0, mask)

    def _run(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
             params: SamplingParams, generator: torch.Generator | None,
             should_stop: Callable[[], bool] | None,
             on_token: Callable[[int], None] | None, mode: DecodeMode | None) -> list[_Row]:
        self.check_inputs(phone_ids, bert, prompt)
        mode = mode or self.decode_mode or self.default_decode_mode
        if mode == "graph" and self.device.type != "cuda":
            raise ValueError("decode mode 'graph' (CUDA graphs) needs a model on a CUDA device")
        prefix_len = max(p.numel() for p in phone_ids) + (0 if prompt is None else prompt.numel())
        cache = self.setup_caches(len(phone_ids), prefix_len + params.max_tokens)
        try:
            return self._decode(phone_ids, bert, prompt, params, generator, should_stop,
                                on_token, mode, cache)
        finally:
            self.release_caches(cache)

    def _decode(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
                params: SamplingParams, generator: torch.Generator | None,
                should_stop: Callable[[], bool] | None, on_token: Callable[[int], None] | None,
                mode: DecodeMode, cache: KVCache) -> list[_Row]:
        """The shared decode loop (upstream `infer_panel_batch_infer` / `infer_panel_naive`).
        Rows that end are dropped from the batch (cache, history, masks), as upstream does.
        One host sync per step: the sampled tokens and their EOS flags, read together. In the
        static modes every step after the first is a `fused_step` (sampling included)."""
        cfg, device = self.config, self.device
        prompt_len = 0 if prompt is None else prompt.numel()
        prefix_len = max(p.numel() for p in phone_ids) + prompt_len
        early_stop = params.early_stop if params.early_stop is not None else cfg.early_stop_num
        max_steps = params.max_tokens
        padded = any(p.numel() != phone_ids[0].numel() for p in phone_ids)
        if mode != "exact":
            cache.make_finite()
            positions = torch.full((len(phone_ids),), prefix_len, device=device)
            audio_index = torch.full_like(positions, prompt_len)
        rows = [_Row(tokens=[]) for _ in phone_ids]
        active = list(range(len(phone_ids)))  # batch position -> row index

        logits = self.prefill(phone_ids, bert, prompt, cache)
        sampled = torch.empty(0, dtype=torch.long)  # each step's samples; the first from the prefill
        step_threads = self.step_threads()
        for step in range(max_steps):
            if should_stop is not None and should_stop():
                raise GenerationCancelled()
            with intra_op_threads(step_threads):  # the model step and sampler; on_token as called
                if step > 0 and mode != "exact":
                    sampler = SamplerSpec.of(params, step)
                    sampled, positions, audio_index, out = self.sample_static(
                        sampled, positions, audio_index, cache, prefix_len + step, sampler,
                        lambda noise: noise.exponential_(1.0, generator=generator),
                        graphed=mode == "graph")
                    tokens, ended = out.tolist()
                else:
                    if step > 0:  # exact: feed the previous sample at cache column prefix_len + step - 1
                        length = prefix_len + step
                        token_emb = self.ar_audio_embedding(sampled)[:, None]
                        token_emb = token_emb + cache.audio_pe[prompt_len + step - 1]
                        mask = None
                        if padded:
                            cache.valid[:, length - 1] = True
                            mask = cache.valid[:, None, None, :length]
                        logits = self.forward_cached(token_emb, cache, length - 1, mask)
                    sampled, ended_now = sample_rows(
                        logits, cache.history[:, : prompt_len + step], params, eos=cfg.eos,
                        eos_allowed=step >= MIN_TOKENS_BEFORE_EOS, generator=generator)
                    tokens, ended = torch.stack((sampled, ended_now.long())).tolist()
                    cache.history[:, prompt_len + step] = sampled
            for position, token in enumerate(tokens):
                row = rows[active[position]]
                if ended[position]:
                    row.finished_by_eos = True
                else:
                    row.tokens.append(token)
                    if on_token is not None:
                        on_token(token)

            if (early_stop is not None and step + 1 > early_stop) or step == max_steps - 1:
                break  # early stop / hard cap for every row still running
            if any(ended):
                keep = [position for position, end in enumerate(ended) if not end]
                if not keep:
                    break
                index = torch.tensor(keep, device=device)
                cache = cache.keep_rows(index)
                sampled = sampled.index_select(0, index)
                if mode != "exact":
                    positions, audio_index = positions[: len(keep)], audio_index[: len(keep)]
                active = [active[position] for position in keep]
        return rows

    def sample_static(self, tokens: Tensor, positions: Tensor, audio_index: Tensor,
                      cache: KVCache, length: int, sampler: SamplerSpec,
                      draw_noise: Callable[[Tensor], object], *,
                      graphed: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One `fused_step` at the KV bucket of `length` (the longest row's columns after it),
        replayed from its CUDA graph when `graphed` (captured on first use, kept with the
        cache): (tokens, positions, audio_index) to feed next, and [samples, ended].
        `draw_noise` fills the exponential noise [rows, V or EOS] as the eager sampler draws
        it (the same generators in the same order), so the tokens are the same either way."""
        span = kv_bucket(length)
        step = self._captured(cache, span, sampler) if graphed else None
        if step is not None:
            assert step.noise is not None
            draw_noise(step.noise)
            try:
                out = step(tokens, positions, audio_index)
                return step.tokens, step.positions, step.audio_index, out
            except RuntimeError as err:
                self._capture_failed(cache, step, err)
                noise = step.noise
        else:
            noise = torch.empty(tokens.shape[0], sampler.width(self.config), device=tokens.device)
            draw_noise(noise)
        out = self.fused_step(tokens, positions, audio_index, noise, cache, span, sampler)
        return tokens, positions, audio_index, out

    def static_step(self, tokens: Tensor, positions: Tensor, audio_index: Tensor,
                    cache: KVCache, length: int, *, graphed: bool) -> Tensor:
        """`decode_step` at the KV bucket of `length` (the cache holds `length` columns after
        it). With `graphed`, replayed from the CUDA graph of this cache's rows and bucket,
        captured on first use and kept with the cache for later generations. A capture that
        fails (a driver or op that graphs do not support) is logged once, and this model then
        decodes eagerly: slower, never broken."""
        span = kv_bucket(length)
        step = self._captured(cache, span, None) if graphed else None
        if step is not None:
            try:
                return step(tokens, positions, audio_index)
            except RuntimeError as err:
                self._capture_failed(cache, step, err)
        return self.decode_step(tokens, positions, audio_index, cache, span)

    def _captured(self, cache: KVCache, span: int, sampler: SamplerSpec | None) -> CapturedStep | None:
        """The cache's captured step for its rows, `span` and `sampler` (and whether the layers
        are compiled), made on first use; None once a capture has failed on this model."""
        if self._graph_failure is not None:
            return None
        key = (cache.batch, span, sampler, self.compile_steps)
        step = cache.graphs.get(key)
        if step is None:
            step = cache.graphs[key] = CapturedStep(self, cache, span, sampler)
        return step

    def _capture_failed(self, cache: KVCache, step: CapturedStep, err: RuntimeError) -> None:
        for key in [key for key, kept in cache.graphs.items() if kept is step]:
            del cache.graphs[key]  # in place: every row view of the cache shares this dict
        self._graph_failure = str(err)
        _LOGGER.warning("CUDA graph capture failed, decoding eagerly from now on: %s", err)


def official_slice(tokens: list[int], finished_by_eos: bool, has_prompt: bool,
                   path: DecodePath) -> Tensor:
    """What upstream keeps of a sentence's generated tokens (see the module doc)."""
    if not finished_by_eos and has_prompt:
        # Early stop / hard cap: upstream's `y[-idx:]` drops one token.
        tokens = tokens[:-1] if path == "batched" else tokens[1:]
    return torch.tensor(tokens, dtype=torch.long)


def _covers(big: KVCache, small: KVCache) -> bool:
    return (big.batch >= small.batch and big.capacity >= small.capacity
            and big.k.device == small.k.device and big.k.dtype == small.k.dtype)
