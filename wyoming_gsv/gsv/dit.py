"""The v3/v4 mel generator: a diffusion transformer (DiT) sampled by conditional flow matching.

SoVITS v3/v4 replace the VITS flow + HiFi-GAN by: features [512, T] from the text encoder ->
this DiT predicts a velocity over a 100-band normalised log-mel -> Euler steps from noise to mel,
with the reference mel as an in-context prompt. Parameter names follow the checkpoint keys
(`cfm.estimator.*`) so official state dicts load unchanged.

Inference only, batch items of equal length (no padding mask: every frame is valid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LAYER_NORM_EPS = 1e-6
TEXT_POSITIONS = 4096  # the text embedding's precomputed absolute positions (later frames reuse the last)


@dataclass(frozen=True)
class DiTConfig:
    """The official dimensions (hard-coded upstream, not stored in the files)."""

    dim: int = 1024
    depth: int = 22
    heads: int = 16
    head_dim: int = 64
    ff_mult: int = 2
    mel_dim: int = 100
    text_dim: int = 512
    conv_layers: int = 4
    time_freq_dim: int = 256


def sinusoidal_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """[B] -> [B, dim]: sin then cos of scale * t * 10000^(-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    angles = scale * t.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


def absolute_positions(dim: int, length: int, theta: float = 10000.0) -> Tensor:
    """[length, dim]: cos | sin of pos * theta^(-2j/dim), the text embedding's position code."""
    freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
    angles = torch.outer(torch.arange(length, device=freqs.device), freqs).float()
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Scalar time -> [B, dim] through sinusoids and a two-layer MLP (`time_mlp.0/.2`)."""

    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.time_mlp(sinusoidal_embedding(t, self.freq_dim).to(t.dtype))


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN over [B, T, C]: each channel's L2 norm over TIME, relative to the channel mean."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        norm = torch.norm(x, p=2, dim=1, keepdim=True)
        scaled = norm / (norm.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * scaled) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise conv k7 -> LayerNorm -> Linear -> GELU -> GRN -> Linear, residual; on [B, T, C]."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.grn = GlobalResponseNorm(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        y = self.grn(F.gelu(self.pwconv1(self.norm(y))))
        return x + self.pwconv2(y)


class TextEmbedding(nn.Module):
    """The conditioning features [B, T, 512] + absolute sinusoidal positions -> ConvNeXt blocks."""

    def __init__(self, dim: int, conv_layers: int) -> None:
        super().__init__()
        self.dim = dim
        self.text_blocks = nn.Sequential(*[ConvNeXtBlock(dim, 2 * dim) for _ in range(conv_layers)])

    def forward(self, text: Tensor) -> Tensor:
        length = text.shape[1]
        positions = absolute_positions(self.dim, min(length, TEXT_POSITIONS)).to(text.device, text.dtype)
        if length > TEXT_POSITIONS:  # upstream clamps the position index
            positions = torch.cat([positions, positions[-1:].expand(length - TEXT_POSITIONS, -1)])
        return self.text_blocks(text + positions)


class ConvPositionEmbedding(nn.Module):
    """Two grouped convs (k31, 16 groups) with Mish, on [B, T, C] (`conv1d.0/.2`)."""

    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1d(x.transpose(1, 2)).transpose(1, 2)


class InputEmbedding(nn.Module):
    """Noisy mel, prompt mel and text embedding concatenated -> model width, plus conv positions."""

    def __init__(self, mel_dim: int, text_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * mel_dim + text_dim, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim)

    def forward(self, x: Tensor, prompt: Tensor, text: Tensor) -> Tensor:
        x = self.proj(torch.cat((x, prompt, text), dim=-1))
        return self.conv_pos_embed(x) + x


def rotary_angles(inv_freq: Tensor, length: int) -> Tensor:
    """[length, 2 * len(inv_freq)]: pos * inv_freq[j], each repeated for an interleaved pair."""
    angles = torch.arange(length, device=inv_freq.device).to(inv_freq.dtype)[:, None] * inv_freq[None, :]
    return torch.stack((angles, angles), dim=-1).flatten(-2)


def apply_rotary(x: Tensor, angles: Tensor) -> Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of the first angles.shape[-1] channels of [B, T, C].

    Upstream applies it before splitting heads, so only the first head's 64 channels rotate.
    """
    width = angles.shape[-1]
    rotated, rest = x[..., :width], x[..., width:]
    pairs = rotated.unflatten(-1, (-1, 2))
    half_turn = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    rotated = rotated * angles.cos() + half_turn * angles.sin()
    return torch.cat((rotated, rest), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention with q/k/v/out Linears (`to_q`, `to_k`, `to_v`, `to_out.0`)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, angles: Tensor) -> Tensor:
        batch = x.shape[0]
        q = apply_rotary(self.to_q(x), angles)
        k = apply_rotary(self.to_k(x), angles)
        v = self.to_v(x)
        q, k, v = (y.view(batch, -1, self.heads, y.shape[-1] // self.heads).transpose(1, 2) for y in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out[0](out.transpose(1, 2).reshape(batch, -1, q.shape[1] * q.shape[3]))


class FeedForward(nn.Module):
    """Linear -> GELU (tanh approximation) -> Linear, under upstream's `ff.0.0` / `ff.2` names."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh")),
            nn.Identity(),  # dropout slot
            nn.Linear(hidden, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.ff(x)


class AdaptiveNorm(nn.Module):
    """Parameter-free LayerNorm modulated by `linear(silu(c))` (adaLN-Zero); `chunks` outputs."""

    def __init__(self, dim: int, chunks: int) -> None:
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def modulation(self, c: Tensor) -> tuple[Tensor, ...]:
        return self.linear(F.silu(c)).unsqueeze(1).chunk(self.chunks, dim=-1)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LAYER_NORM_EPS) * (1 + scale) + shift


class DiTBlock(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.attn_norm = AdaptiveNorm(config.dim, 6)
        self.attn = Attention(config.dim, config.heads, config.head_dim)
        self.ff = FeedForward(config.dim, config.dim * config.ff_mult)

    def forward(self, x: Tensor, c: Tensor, angles: Tensor) -> Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.attn_norm.modulation(c)
        x = x + gate_msa * self.attn(modulate(x, shift_msa, scale_msa), angles)
        return x + gate_mlp * self.ff(modulate(x, shift_mlp, scale_mlp))


@dataclass
class ConditionCache:
    """What stays the same over the sampling steps of one call: text embedding and step-size embedding."""

    text: Tensor
    step: Tensor


class DiT(nn.Module):
    """Velocity estimator: (noisy mel, prompt mel, features, t, step size) -> velocity."""

    def __init__(self, config: DiTConfig | None = None) -> None:
        super().__init__()
        c = config or DiTConfig()
        self.config = c
        self.time_embed = TimestepEmbedding(c.dim, c.time_freq_dim)
        self.d_embed = TimestepEmbedding(c.dim, c.time_freq_dim)
        self.text_embed = TextEmbedding(c.text_dim, c.conv_layers)
        self.input_embed = InputEmbedding(c.mel_dim, c.text_dim, c.dim)
        rotary = torch.zeros(c.head_dim // 2)  # loaded from the file (stored rounded to fp16)
        self.rotary_embed = nn.Module()
        self.rotary_embed.register_buffer("inv_freq", rotary)
        self.transformer_blocks = nn.ModuleList(DiTBlock(c) for _ in range(c.depth))
        self.norm_out = AdaptiveNorm(c.dim, 2)
        self.proj_out = nn.Linear(c.dim, c.mel_dim)

    def conditions(self, features: Tensor, step: Tensor) -> ConditionCache:
        """features [B, 512, T], step size [B] -> the per-call constants."""
        return ConditionCache(text=self.text_embed(features.transpose(1, 2)), step=self.d_embed(step))

    def forward(self, x: Tensor, prompt: Tensor, t: Tensor, cache: ConditionCache) -> Tensor:
        """x, prompt [B, mel, T]; t [B] -> velocity [B, mel, T]."""
        c = self.time_embed(t) + cache.step
        h = self.input_embed(x.transpose(1, 2), prompt.transpose(1, 2), cache.text)
        angles = rotary_angles(self.rotary_embed.inv_freq, h.shape[1])
        for block in self.transformer_blocks:
            h = block(h, c, angles)
        scale, shift = self.norm_out.modulation(c)
        return self.proj_out(modulate(h, shift, scale)).transpose(1, 2)


class FlowMatching(nn.Module):
    """`cfm`: Euler integration of the DiT's velocity from Gaussian noise (t=0) to a mel (t=1)."""

    def __init__(self, estimator: DiT) -> None:
        super().__init__()
        self.estimator = estimator

    @torch.inference_mode()
    def sample(
        self,
        features: Tensor,
        prompt: Tensor,
        steps: int,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """features [B, 512, T], prompt mel [1 or B, mel, P] (normalised) -> mel [B, mel, T].

        The first P frames are the prompt's place: held at zero in the output, as upstream.
        `noise` [B, mel, T] replaces the Gaussian draw from `generator`.
        """
        if steps < 1:
            raise ValueError(f"sample_steps must be at least 1, got {steps}")
        batch, _, frames = features.shape
        mel_dim, prompt_len = self.estimator.config.mel_dim, prompt.shape[-1]
        shape = (batch, mel_dim, frames)
        if noise is None:
            x = torch.randn(shape, generator=generator, device=features.device, dtype=features.dtype)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, sampling needs {shape}")
        else:
            x = noise.to(features.device, features.dtype).clone()
        prompt_x = torch.zeros_like(x)
        prompt_x[..., :prompt_len] = prompt
        x[..., :prompt_len] = 0
        dt = 1 / steps
        ones = torch.ones(batch, device=x.device, dtype=x.dtype)
        cache = self.estimator.conditions(features, ones * dt)
        t = 0.0  # accumulated in Python floats, as upstream
        for _ in range(steps):
            velocity = self.estimator(x, prompt_x, ones * t, cache)
            x = x + dt * velocity
            t = t + dt
            x[:, :, :prompt_len] = 0
        return x
