"""Building blocks of the SoVITS decoder (VITS family), inference only.

Parameter names follow the official GPT-SoVITS modules so that checkpoint state dicts load
as they are. Masks are omitted: at inference every sequence is a single, unpadded item, so
the official all-ones masks change nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .derived import DerivedFromParameters
from .overlap_save import SpectralWeights, block_work_ratio, overlap_save_conv, spectral_weights

# HiFi-GAN's slope inside the generator; the final activation uses PyTorch's default 0.01.
LRELU_SLOPE = 0.1


WEIGHT_NORM_NAMES = (
    ("weight_g", "weight_v"),  # legacy torch.nn.utils.weight_norm (official checkpoints)
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)


def _module_prefix(key: str, name: str) -> str | None:
    """"a.b." for key "a.b.<name>", "" for key "<name>", None when the key is not that name."""
    if key == name:
        return ""
    if key.endswith("." + name):
        return key[: -len(name)]
    return None


def fold_weight_norm(weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """Replace weight-norm pairs by the effective weight W = g * v / ||v||.

    The norm runs over every dim but 0, which `g`'s shape already encodes (for
    ConvTranspose1d dim 0 is the input channel, and `g` is stored that way), so one rule fits
    all layers. The result is float32 (as the official fp32 model computes it from fp16
    files); the caller casts to the model dtype.
    """
    folded: dict[str, Tensor] = {}
    consumed: set[str] = set()
    for key, value in weights.items():
        for g_name, v_name in WEIGHT_NORM_NAMES:
            prefix = _module_prefix(key, g_name)
            if prefix is not None and prefix + v_name in weights:
                v = weights[prefix + v_name].float()
                norm = v.norm(dim=list(range(1, v.dim())), keepdim=True)
                folded[prefix + "weight"] = v * (value.float() / norm)
                consumed.add(prefix + v_name)
                break
        else:
            folded[key] = value
    return {key: value for key, value in folded.items() if key not in consumed}


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of [B, C, T] (VITS' `gamma`/`beta` naming)."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.transpose(1, -1), self.gamma.shape, self.gamma, self.beta, self.eps)
        return x.transpose(1, -1)


class MultiHeadAttention(nn.Module):
    """VITS attention on [B, C, T] with 1x1 conv projections.

    With `window_size` set, adds the shared relative-position terms (keys and values) for
    offsets within +-window_size, as in the official encoder (self-attention only).
    """

    def __init__(self, channels: int, out_channels: int, n_heads: int, window_size: int | None = None) -> None:
        super().__init__()
        assert channels % n_heads == 0
        self.n_heads = n_heads
        self.head_dim = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, out_channels, 1)
        if window_size is not None:
            span = 2 * window_size + 1
            self.emb_rel_k = nn.Parameter(torch.zeros(1, span, self.head_dim))
            self.emb_rel_v = nn.Parameter(torch.zeros(1, span, self.head_dim))

    def _heads(self, x: Tensor) -> Tensor:
        b, _, t = x.shape
        return x.view(b, self.n_heads, self.head_dim, t).transpose(2, 3)  # [B, H, T, Dh]

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        q = self._heads(self.conv_q(x)) / math.sqrt(self.head_dim)
        k = self._heads(self.conv_k(context))
        v = self._heads(self.conv_v(context))
        scores = q @ k.transpose(-2, -1)
        if self.window_size is not None:
            offsets, inside = self._relative_offsets(q.shape[2], q.device)
            rel = q @ self.emb_rel_k.transpose(-2, -1)  # [B, H, T, 2w+1]
            rel_scores = torch.gather(rel, -1, offsets.expand(*rel.shape[:2], -1, -1))
            scores = scores + rel_scores * inside
        probs = torch.softmax(scores, dim=-1)
        out = probs @ v
        if self.window_size is not None:
            out = out + self._relative_weights(probs) @ self.emb_rel_v
        b, h, t, d = out.shape
        return self.conv_o(out.transpose(2, 3).reshape(b, h * d, t))

    def _relative_offsets(self, length: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Index into the 2w+1 relative table for each (query i, key j), and where it applies."""
        w = self.window_size
        pos = torch.arange(length, device=device)
        offset = pos[None, :] - pos[:, None] + w
        inside = (offset >= 0) & (offset <= 2 * w)
        return offset.clamp(0, 2 * w), inside

    def _relative_weights(self, probs: Tensor) -> Tensor:
        """probs[..., i, i + r - w] for r in 0..2w (zero outside the sequence): [B, H, T, 2w+1]."""
        w = self.window_size
        length = probs.shape[-1]
        padded = F.pad(probs, (w, w))
        index = torch.arange(length, device=probs.device)[:, None] + torch.arange(2 * w + 1, device=probs.device)
        return torch.gather(padded, -1, index.expand(*probs.shape[:2], -1, -1))


class FFN(nn.Module):
    """Conv1d -> ReLU -> Conv1d with "same" padding (left (k-1)//2, right k//2)."""

    def __init__(self, channels: int, filter_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.padding = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.conv_1(F.pad(x, self.padding)))
        return self.conv_2(F.pad(x, self.padding))


class AttentionEncoder(nn.Module):
    """Post-norm transformer encoder with relative positions (VITS `attentions.Encoder`)."""

    def __init__(
        self, channels: int, filter_channels: int, n_heads: int, n_layers: int, kernel_size: int, window_size: int = 4
    ) -> None:
        super().__init__()
        self.attn_layers = nn.ModuleList(
            MultiHeadAttention(channels, channels, n_heads, window_size) for _ in range(n_layers)
        )
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(FFN(channels, filter_channels, kernel_size) for _ in range(n_layers))
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(channels) for _ in range(n_layers))

    def forward(self, x: Tensor) -> Tensor:
        for attn, norm1, ffn, norm2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm1(x + attn(x))
            x = norm2(x + ffn(x))
        return x


class MRTE(nn.Module):
    """Multi-reference timbre encoder: content attends to text, plus the global embedding."""

    def __init__(self, content_channels: int = 192, hidden: int = 512, n_heads: int = 4) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(hidden, hidden, n_heads)
        self.c_pre = nn.Conv1d(content_channels, hidden, 1)
        self.text_pre = nn.Conv1d(content_channels, hidden, 1)
        self.c_post = nn.Conv1d(hidden, content_channels, 1)

    def forward(self, content: Tensor, text: Tensor, ge: Tensor) -> Tensor:
        content = self.c_pre(content)
        x = self.cross_attention(content, self.text_pre(text)) + content + ge
        return self.c_post(x)


def gated_activation(x: Tensor, channels: int) -> Tensor:
    """WaveNet gate: tanh(first half) * sigmoid(second half)."""
    return torch.tanh(x[:, :channels]) * torch.sigmoid(x[:, channels:])


class WN(nn.Module):
    """Non-causal WaveNet stack conditioned on a global vector (weights already folded)."""

    def __init__(self, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.n_layers = n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(nn.Conv1d(hidden, 2 * hidden, kernel_size, dilation=dilation, padding=padding))
            out = 2 * hidden if i < n_layers - 1 else hidden
            self.res_skip_layers.append(nn.Conv1d(hidden, out, 1))

    def forward(self, x: Tensor, g: Tensor, mask: Tensor | None = None) -> Tensor:
        """mask [B, 1, T] (optional): frames past a length are zeroed after every layer, as upstream."""
        cond = self.cond_layer(g)
        output = torch.zeros_like(x)
        step = 2 * self.hidden
        for i, (in_layer, res_skip) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            acts = gated_activation(in_layer(x) + cond[:, i * step : (i + 1) * step], self.hidden)
            res_skip_acts = res_skip(acts)
            if i < self.n_layers - 1:
                x = x + res_skip_acts[:, : self.hidden]
                if mask is not None:
                    x = x * mask
                output = output + res_skip_acts[:, self.hidden :]
            else:
                output = output + res_skip_acts
        return output if mask is None else output * mask


class ResidualCouplingLayer(nn.Module):
    """Mean-only affine coupling; only the reverse direction is needed for synthesis."""

    def __init__(
        self, channels: int, hidden: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int
    ) -> None:
        super().__init__()
        self.half = channels // 2
        self.pre = nn.Conv1d(self.half, hidden, 1)
        self.enc = WN(hidden, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden, self.half, 1)

    def reverse(self, x: Tensor, g: Tensor) -> Tensor:
        x0, x1 = x[:, : self.half], x[:, self.half :]
        mean = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - mean], dim=1)


class Flip(nn.Module):
    """Channel reversal between coupling layers (no parameters; keeps checkpoint indices)."""

    def reverse(self, x: Tensor, g: Tensor) -> Tensor:
        return torch.flip(x, [1])


class ResidualCouplingBlock(nn.Module):
    """`flow`: n_flows x (coupling + flip), run backwards to go from prior to latent."""

    def __init__(
        self,
        channels: int,
        hidden: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int,
        n_flows: int = 4,
    ) -> None:
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            coupling = ResidualCouplingLayer(channels, hidden, kernel_size, dilation_rate, n_layers, gin_channels)
            self.flows.append(coupling)
            self.flows.append(Flip())

    def reverse(self, x: Tensor, g: Tensor) -> Tensor:
        for flow in reversed(self.flows):
            x = flow.reverse(x, g)
        return x


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters and state dict) that also runs on [B, C, 1, T] input as a
    (1, k) 2-D conv: the generator's channels-last path (see `Generator.forward`)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            return super().forward(x)
        return F.conv2d(
            x, self.weight.unsqueeze(2), self.bias, (1, *self.stride), (0, *self.padding), (1, *self.dilation), self.groups
        )


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d that also runs on [B, C, 1, T] input, as `Conv1d` does."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        if x.dim() != 4:
            return super().forward(x)
        return F.conv_transpose2d(
            x,
            self.weight.unsqueeze(2),
            self.bias,
            (1, *self.stride),
            (0, *self.padding),
            (0, *self.output_padding),
            self.groups,
            (1, *self.dilation),
        )


class LongConv1d(DerivedFromParameters, Conv1d):
    """`Conv1d` for the resblocks' convs: on the CPU's channels-last path, the wide and long ones
    (`max_work_ratio`; a batch of one, at least `min_blocks` blocks per stream, fp32, no grad) run
    as block DFTs in GEMMs (`overlap_save`), the rest as the direct conv. Same parameters and state
    dict; the spectral form of the weights is built on the first call of the suitable kind,
    whatever its length, and dropped whenever the weights may change (load_state_dict, `.to()`)."""

    block = 32  # samples per DFT block: the fastest for 7 and 11 taps in bench_conv_algorithms
    # The block path's small GEMMs and transforms run at about half the direct conv's rate, so it
    # pays where it needs under ~3/8 of the multiply-adds (bench_conv_algorithms: in the v2
    # generator 7 and 11 taps at 128 and 256 channels and 11 taps at 64 need 0.22-0.34 and win;
    # 7 taps at 64 and 11 at 32 need 0.42 and do not; 3 taps need 0.6 or more).
    max_work_ratio = 0.375
    min_blocks = 8  # per stream; fewer: GEMMs too small to beat the direct conv (bench_conv_algorithms)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._spectral: SpectralWeights | None = None

    def forget_derived(self) -> None:
        self._spectral = None

    @property
    def work_ratio(self) -> float:
        """The block path's multiply-adds over the direct conv's (`overlap_save.block_work_ratio`)."""
        return block_work_ratio(self.in_channels, self.out_channels, self.kernel_size[0], self.block)

    def suits_blocks(self, x: Tensor) -> bool:
        """Whether this conv and input are of the kind the block-DFT path is for, at any length."""
        return (
            x.dim() == 4
            and x.shape[0] == 1
            and x.device.type == "cpu"
            and x.dtype == torch.float32 == self.weight.dtype
            and not torch.is_grad_enabled()
            and x.is_contiguous(memory_format=torch.channels_last)
            and self.stride == (1,)
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.work_ratio <= self.max_work_ratio
        )

    def long_enough(self, x: Tensor) -> bool:
        return x.shape[-1] >= self.min_blocks * self.dilation[0] * (self.block - self.kernel_size[0] + 1)

    def uses_blocks(self, x: Tensor) -> bool:
        """Whether this call takes the block-DFT path."""
        return self.suits_blocks(x) and self.long_enough(x)

    def forward(self, x: Tensor) -> Tensor:
        if not self.suits_blocks(x):
            return super().forward(x)
        if self._spectral is None:  # on the first suitable call (the warm-up), not the first long one
            self._spectral = spectral_weights(self.weight, self.bias, self.block)
        if not self.long_enough(x):
            return super().forward(x)
        # [1, C, 1, T] channels-last is [T, C] in memory, the layout overlap_save_conv works in.
        y = overlap_save_conv(x[0, :, 0].t(), self._spectral, self.kernel_size[0], self.dilation[0], self.padding[0])
        return y.t()[None, :, None]


def same_conv(channels: int, kernel_size: int, dilation: int) -> LongConv1d:
    """Length-preserving (odd kernel) dilated conv."""
    padding = (kernel_size * dilation - dilation) // 2
    return LongConv1d(channels, channels, kernel_size, dilation=dilation, padding=padding)


class ResBlock1(nn.Module):
    """HiFi-GAN residual block type 1: three (dilated conv, conv) pairs."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            same_conv(channels, kernel_size, d) for d in dilations
        )
        self.convs2 = nn.ModuleList(
            same_conv(channels, kernel_size, 1) for _ in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    """HiFi-GAN residual block type 2: one conv per dilation."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            same_conv(channels, kernel_size, d) for d in dilations
        )

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class Generator(nn.Module):
    """HiFi-GAN generator (`dec`) conditioned on the global embedding."""

    def __init__(
        self,
        in_channels: int,
        resblock: str,
        resblock_kernel_sizes: list[int],
        resblock_dilation_sizes: list[list[int]],
        upsample_rates: list[int],
        upsample_initial_channel: int,
        upsample_kernel_sizes: list[int],
        gin_channels: int,
        post_bias: bool = False,
    ) -> None:
        super().__init__()
        self.num_kernels = len(resblock_kernel_sizes)
        self.conv_pre = Conv1d(in_channels, upsample_initial_channel, 7, padding=3)
        block = ResBlock1 if str(resblock) == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = upsample_initial_channel
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            ch = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(ConvTranspose1d(ch * 2, ch, kernel, rate, padding=(kernel - rate) // 2))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(ch, k, tuple(d)))
        self.conv_post = Conv1d(ch, 1, 7, padding=3, bias=post_bias)
        # gin_channels 0: no speaker conditioning (the v4 vocoder).
        self.cond = Conv1d(gin_channels, upsample_initial_channel, 1) if gin_channels else None
        self.channels_last_on_cpu = True  # False: plain [B, C, T] everywhere, as upstream runs it

    def forward(self, x: Tensor, g: Tensor | None) -> Tensor:
        """x [B, C, T] (+ g [B, gin, 1]) -> waveform [B, 1, T * prod(upsample_rates)]."""
        channels_last = self.channels_last_on_cpu and x.device.type == "cpu"
        if channels_last:
            # oneDNN runs these convs on channels-last activations as they are; plain [B, C, T]
            # costs two layout reorders around every conv (about a fifth of the generator's
            # CPU time) and keeps bf16 off its fast kernels. Same weights, same sums.
            x = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)
            g = None if g is None else g.unsqueeze(2)
        x = self.conv_pre(x)
        if self.cond is not None:
            x = x + self.cond(g)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01, as upstream
        return torch.tanh(x.squeeze(2) if channels_last else x)


class Mish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.tanh(F.softplus(x))


class LinearNorm(nn.Module):
    """A Linear stored under `.fc` (checkpoint naming)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class ConvNorm(nn.Module):
    """A "same"-padded Conv1d stored under `.conv` (checkpoint naming)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Conv1dGLU(nn.Module):
    """Residual gated conv: x + a * sigmoid(b) with [a; b] = conv(x)."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv1 = ConvNorm(channels, 2 * channels, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.conv1(x).split(self.channels, dim=1)
        return x + a * torch.sigmoid(b)


class StyleAttention(nn.Module):
    """MelStyleEncoder's self-attention on [B, T, C]; scores scaled by sqrt(d_model), residual inside."""

    def __init__(self, n_heads: int, d_model: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.scale = math.sqrt(d_model)  # upstream quirk: not sqrt(d_k)
        self.w_qs = nn.Linear(d_model, d_model)
        self.w_ks = nn.Linear(d_model, d_model)
        self.w_vs = nn.Linear(d_model, d_model)
        self.fc = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)

        q, k, v = heads(self.w_qs(x)), heads(self.w_ks(x)), heads(self.w_vs(x))
        probs = torch.softmax(q @ k.transpose(-2, -1) / self.scale, dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(b, t, c)
        return self.fc(out) + x


class MelStyleEncoder(nn.Module):
    """`ref_enc`: spectrogram frames -> one global style vector [B, out_dim, 1]."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, kernel_size: int = 5, n_heads: int = 2) -> None:
        super().__init__()
        # Identity slots stand where upstream has Dropout, so indices match the checkpoint.
        self.spectral = nn.Sequential(
            LinearNorm(in_dim, hidden), Mish(), nn.Identity(), LinearNorm(hidden, hidden), Mish(), nn.Identity()
        )
        self.temporal = nn.Sequential(Conv1dGLU(hidden, kernel_size), Conv1dGLU(hidden, kernel_size))
        self.slf_attn = StyleAttention(n_heads, hidden)
        self.fc = LinearNorm(hidden, out_dim)

    def forward(self, spec: Tensor) -> Tensor:
        """spec [B, in_dim, T] -> [B, out_dim, 1]."""
        x = self.spectral(spec.transpose(1, 2))
        x = self.temporal(x.transpose(1, 2)).transpose(1, 2)
        x = self.fc(self.slf_attn(x))
        # Upstream divides by the length before summing, in float32.
        return (x.float() / x.shape[1]).sum(dim=1).to(x.dtype).unsqueeze(-1)
