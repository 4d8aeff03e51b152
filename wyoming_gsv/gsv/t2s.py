"""The GPT-SoVITS "t2s" GPT: phones + BERT features (+ prompt semantic tokens) -> semantic tokens.

One readable file in the gpt-fast manner: a post-norm transformer whose parameter names match
the official `Text2SemanticDecoder` state dict (after the s1 `model.` prefix is stripped), a
static KV cache allocated once per generation, a prefill with the official mask (text columns
bidirectional, audio causal, text rows never see audio) and a lean single-token decode step.

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

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoints import GptCheckpoint
from .errors import ModelFileError

BERT_DIM = 1024
SEMANTIC_HZ_CONSTANT = 50  # upstream `hz`: early_stop_num = 50 * max_sec (tokens are 25 Hz)
MIN_TOKENS_BEFORE_EOS = 11  # EOS is impossible for the first 11 generated tokens
HARD_CAP_TOKENS = 1500
MUTE_TOKEN = 486  # semantic id of "silence", used to pick streaming split points
LAYER_NORM_EPS = 1e-5

DecodePath = Literal["batched", "naive"]


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
        index = previous_tokens.long()
        score = logits.gather(1, index)
        score = torch.where(score < 0, score * repetition_penalty, score / repetition_penalty)
        logits.scatter_(1, index, score)

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


class SelfAttention(nn.Module):
    """Fused q,k,v projection stored like `nn.MultiheadAttention` (`in_proj_*`, `out_proj`)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)


def pack_int8(weight: Tensor, bias: Tensor | None) -> Any:
    """Symmetric per-output-channel int8 weights, packed for fbgemm's dynamic-quantized GEMM.
    (torch 2.13 marks quantized-tensor creation deprecated; the warning is silenced here and a
    torch without it makes `Text2Semantic.quantize_int8` raise ValueError.)"""
    scale = (weight.float().abs().amax(dim=1).clamp_min(1e-12) / 127).double()
    zero_point = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*deprecated")
        quantized = torch.quantize_per_channel(weight.float(), scale, zero_point, 0, torch.qint8)
    return torch.ops.quantized.linear_prepack(quantized, None if bias is None else bias.float())


def int8_matmul(rows: Tensor, packed: Any) -> Tensor:
    # reduce_range: 7-bit activations, so AVX2 CPUs without VNNI cannot saturate int16 sums.
    return torch.ops.quantized.linear_dynamic(rows, packed, True)


@dataclass
class Int8Weights:
    """One layer's four matmuls as packed int8 weights (opt-in CPU mode, not bit-exact)."""

    qkv: Any
    out: Any
    ffn_in: Any
    ffn_out: Any


class EncoderLayer(nn.Module):
    """Post-norm block: x = LN1(x + MHA(x)); x = LN2(x + W2 relu(W1 x))."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.self_attn = SelfAttention(dim)
        self.linear1 = nn.Linear(dim, 4 * dim)
        self.linear2 = nn.Linear(4 * dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.int8: Int8Weights | None = None

    def pack_int8(self) -> None:
        attn = self.self_attn
        self.int8 = Int8Weights(
            qkv=pack_int8(attn.in_proj_weight, attn.in_proj_bias),
            out=pack_int8(attn.out_proj.weight, attn.out_proj.bias),
            ffn_in=pack_int8(self.linear1.weight, self.linear1.bias),
            ffn_out=pack_int8(self.linear2.weight, self.linear2.bias),
        )

    def forward(self, x: Tensor, k_cache: Tensor, v_cache: Tensor, start: int,
                attn_mask: Tensor | None) -> Tensor:
        """x [B, T, D] at cache positions start..start+T-1; k/v caches [B, H, S_max, hd].

        Matmuls run on [B*T, D] rows with fused bias (addmm) and in-place relu/residual: the
        single-token decode step is bound by reading the weights, so every saved op counts."""
        batch, length, dim = x.shape
        end = start + length
        rows = x.reshape(batch * length, dim)
        attn_w, ffn_in, ffn_out, int8 = self.self_attn, self.linear1, self.linear2, self.int8
        if int8 is None:
            qkv = torch.addmm(attn_w.in_proj_bias, rows, attn_w.in_proj_weight.t())
        else:
            qkv = int8_matmul(rows, int8.qkv)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).unbind(2)
        k_cache[:, :, start:end] = k.transpose(1, 2)
        v_cache[:, :, start:end] = v.transpose(1, 2)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k_cache[:, :, :end],
                                              v_cache[:, :, :end], attn_mask=attn_mask)
        attn = attn.transpose(1, 2).reshape(batch * length, dim)
        if int8 is None:
            out = torch.addmm(attn_w.out_proj.bias, attn, attn_w.out_proj.weight.t())
        else:
            out = int8_matmul(attn, int8.out)
        rows = F.layer_norm(out.add_(rows), (dim,), self.norm1.weight, self.norm1.bias,
                            LAYER_NORM_EPS)
        if int8 is None:
            hidden = torch.addmm(ffn_in.bias, rows, ffn_in.weight.t()).relu_()
            out = torch.addmm(ffn_out.bias, hidden, ffn_out.weight.t())
        else:
            out = int8_matmul(int8_matmul(rows, int8.ffn_in).relu_(), int8.ffn_out)
        rows = F.layer_norm(out.add_(rows), (dim,), self.norm2.weight, self.norm2.bias,
                            LAYER_NORM_EPS)
        return rows.view(batch, length, dim)


class Encoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads) for _ in range(num_layers))


@dataclass
class KVCache:
    """Static per-generation cache: [layers, batch, heads, max_len, head_dim] for k and v."""

    k: Tensor
    v: Tensor

    @classmethod
    def allocate(cls, config: T2SConfig, batch: int, max_len: int, device: torch.device,
                 dtype: torch.dtype) -> KVCache:
        shape = (config.num_layers, batch, config.num_heads, max_len, config.head_dim)
        return cls(torch.empty(shape, device=device, dtype=dtype),
                   torch.empty(shape, device=device, dtype=dtype))

    def keep_rows(self, rows: Tensor) -> None:
        self.k = self.k.index_select(1, rows)
        self.v = self.v.index_select(1, rows)


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
        self.h = Encoder(dim, config.num_heads, config.num_layers)
        self.ar_predict_layer = nn.Linear(dim, config.vocab_size, bias=False)
        self.int8_head: Any = None  # set by quantize_int8()

    # ---------------------------------------------------------------------------- loading

    @classmethod
    def from_checkpoint(cls, ckpt: GptCheckpoint, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> Text2Semantic:
        config = T2SConfig.from_config(ckpt.config)
        with torch.device("meta"):
            model = cls(config)
        try:
            missing, _unexpected = model.load_state_dict(ckpt.weights, strict=False, assign=True)
        except RuntimeError as err:  # shape mismatches
            raise ModelFileError(ckpt.path, f"GPT weights do not fit the config: {err}") from err
        if missing:
            raise ModelFileError(ckpt.path, f"GPT weights lack {missing[:5]}")
        return model.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def quantize_int8(self) -> Text2Semantic:
        """Opt-in CPU speed mode: int8 per-channel weights for every matmul (fbgemm dynamic
        quantization), about 4-6x less weight traffic per decode step. Tokens are no longer
        bit-exact with the official model. Needs a float32 model on the CPU."""
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise ValueError("int8 weights need a float32 model on the CPU")
        if "fbgemm" not in torch.backends.quantized.supported_engines:
            raise ValueError("this torch build has no fbgemm engine for int8 matmuls")
        try:
            for layer in self.h.layers:
                layer.pack_int8()
            self.int8_head = pack_int8(self.ar_predict_layer.weight, None)
        except (AttributeError, RuntimeError) as err:
            for layer in self.h.layers:
                layer.int8 = None
            raise ValueError(f"int8 matmuls are unavailable in this torch: {err}") from err
        return self

    @property
    def device(self) -> torch.device:
        return self.ar_predict_layer.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ar_predict_layer.weight.dtype

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
        """x [B, T, D] through all layers at cache positions start..; logits of the last [B, V]."""
        for layer, k_cache, v_cache in zip(self.h.layers, cache.k, cache.v):
            # .forward directly: nn.Module.__call__ costs ~10 us x 24 layers per token.
            x = layer.forward(x, k_cache, v_cache, start, attn_mask)
        if self.int8_head is not None:
            return int8_matmul(x[:, -1], self.int8_head)
        return F.linear(x[:, -1], self.ar_predict_layer.weight)

    # ---------------------------------------------------------------------------- generation

    @torch.inference_mode()
    def generate(self, phone_ids: Tensor, bert: Tensor, prompt: Tensor | None,
                 params: SamplingParams = SamplingParams(), *,
                 generator: torch.Generator | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_token: Callable[[int], None] | None = None,
                 path: DecodePath = "batched") -> Tensor:
        """Semantic tokens [N] for one sentence: phone ids [Tx] (prompt text + target text),
        BERT features [1024, Tx], prompt semantic ids [Ty] or None (ref-free).

        `on_token` sees every generated token as it is accepted (for streaming); the return
        value follows upstream's slicing (see module doc). Raises `GenerationCancelled` when
        `should_stop()` turns True (checked before every step)."""
        rows = self._run([phone_ids], [bert], prompt, params, generator, should_stop, on_token)
        return self._official_slice(rows[0], prompt is not None, path)

    @torch.inference_mode()
    def generate_batch(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
                       params: SamplingParams = SamplingParams(), *,
                       generator: torch.Generator | None = None,
                       should_stop: Callable[[], bool] | None = None,
                       path: DecodePath = "batched") -> list[Tensor]:
        """Several sentences at once (left-padded text, padding masks). Each row gives the same
        tokens as `generate` would for it alone, up to sampling noise (exactly with top_k=1).
        Ref-free batches run row by row, as upstream does."""
        if len(phone_ids) != len(bert) or not phone_ids:
            raise ValueError("generate_batch needs one BERT tensor per phone sequence (>= 1)")
        if prompt is None:
            return [self.generate(p, b, None, params, generator=generator,
                                  should_stop=should_stop, path=path)
                    for p, b in zip(phone_ids, bert)]
        rows = self._run(phone_ids, bert, prompt, params, generator, should_stop, None)
        return [self._official_slice(row, True, path) for row in rows]

    def _official_slice(self, row: _Row, has_prompt: bool, path: DecodePath) -> Tensor:
        tokens = row.tokens
        if not row.finished_by_eos and has_prompt:
            # Early stop / hard cap: upstream's `y[-idx:]` drops one token (see module doc).
            tokens = tokens[:-1] if path == "batched" else tokens[1:]
        return torch.tensor(tokens, dtype=torch.long)

    def _check_inputs(self, phone_ids: list[Tensor], bert: list[Tensor],
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

    def _prefill_inputs(self, phone_ids: list[Tensor], bert: list[Tensor],
                        prompt: Tensor | None, max_len: int) -> tuple[Tensor, Tensor, Tensor]:
        """Prefill embeddings [B, S, D] (left-padded text, then the prompt audio), the per-row
        valid-column flags [B, max_len] and the prefill attention mask [B, 1, S, S]."""
        cfg, device, dtype = self.config, self.device, self.dtype
        batch, text_len = len(phone_ids), max(p.numel() for p in phone_ids)
        prompt_len = 0 if prompt is None else prompt.numel()
        prefix_len = text_len + prompt_len
        x = torch.zeros(batch, prefix_len, cfg.embedding_dim, device=device, dtype=dtype)
        valid = torch.ones(batch, max_len, dtype=torch.bool, device=device)
        for row, (phones, features) in enumerate(zip(phone_ids, bert)):
            pad = text_len - phones.numel()
            x[row, pad:text_len] = self.embed_text(phones.to(device), features.to(device))
            valid[row, :pad] = False
        if prompt is not None:
            x[:, text_len:] = self.embed_audio(prompt.to(device))
        # Text rows see all text, never audio; audio rows see all text and earlier audio.
        allowed = torch.ones(prefix_len, prefix_len, dtype=torch.bool, device=device)
        allowed[:text_len, text_len:] = False
        allowed[text_len:, text_len:] = torch.ones(prompt_len, prompt_len, dtype=torch.bool,
                                                   device=device).tril()
        return x, valid, allowed[None, None] & valid[:, None, None, :prefix_len]

    def _run(self, phone_ids: list[Tensor], bert: list[Tensor], prompt: Tensor | None,
             params: SamplingParams, generator: torch.Generator | None,
             should_stop: Callable[[], bool] | None,
             on_token: Callable[[int], None] | None) -> list[_Row]:
        """The shared decode loop (upstream `infer_panel_batch_infer` / `infer_panel_naive`).
        Rows that end are dropped from the batch (cache, history, masks), as upstream does."""
        self._check_inputs(phone_ids, bert, prompt)
        cfg, device, dtype = self.config, self.device, self.dtype
        prompt_len = 0 if prompt is None else prompt.numel()
        prefix_len = max(p.numel() for p in phone_ids) + prompt_len
        early_stop = params.early_stop if params.early_stop is not None else cfg.early_stop_num
        max_steps = params.max_tokens

        x, valid, prefill_mask = self._prefill_inputs(phone_ids, bert, prompt,
                                                      prefix_len + max_steps)
        padded = not bool(valid.all())
        audio_pe = self.ar_audio_position.table(prompt_len + max_steps, device, dtype)
        cache = KVCache.allocate(cfg, len(phone_ids), prefix_len + max_steps, device, dtype)
        # Repetition-penalty history: prompt tokens, then each step's sample.
        history = torch.empty(len(phone_ids), prompt_len + max_steps, dtype=torch.long,
                              device=device)
        if prompt is not None:
            history[:, :prompt_len] = prompt.to(device)
        rows = [_Row(tokens=[]) for _ in phone_ids]
        active = list(range(len(phone_ids)))  # batch position -> row index

        logits = self.forward_cached(x, cache, 0, prefill_mask)
        for step in range(max_steps):
            if should_stop is not None and should_stop():
                raise GenerationCancelled()
            if step > 0:  # feed the previous sample; it sits at cache index prefix_len + step - 1
                length = prefix_len + step
                token_emb = self.ar_audio_embedding(sampled)[:, None]
                token_emb = token_emb + audio_pe[prompt_len + step - 1]
                mask = valid[:, None, None, :length] if padded else None
                logits = self.forward_cached(token_emb, cache, length - 1, mask)

            if step < MIN_TOKENS_BEFORE_EOS:
                logits = logits[:, : cfg.eos]  # EOS is the last column
            probs = logits_to_probs(logits, history[:, : prompt_len + step], top_k=params.top_k,
                                    top_p=params.top_p, temperature=params.temperature,
                                    repetition_penalty=params.repetition_penalty)
            sampled = sample_from_probs(probs, generator=generator)
            # Upstream stops on a sampled EOS or an EOS argmax of the (penalised) logits.
            ended = ((sampled == cfg.eos) | (logits.argmax(dim=-1) == cfg.eos)).tolist()
            for position, token in enumerate(sampled.tolist()):
                row = rows[active[position]]
                if ended[position]:
                    row.finished_by_eos = True
                else:
                    row.tokens.append(token)
                    if on_token is not None:
                        on_token(token)
            history[:, prompt_len + step] = sampled

            if (early_stop is not None and step + 1 > early_stop) or step == max_steps - 1:
                break  # early stop / hard cap for every row still running
            if any(ended):
                keep = [position for position, end in enumerate(ended) if not end]
                if not keep:
                    break
                index = torch.tensor(keep, device=device)
                cache.keep_rows(index)
                history = history.index_select(0, index)
                valid = valid.index_select(0, index)
                sampled = sampled.index_select(0, index)
                active = [active[position] for position in keep]
        return rows
