"""The vocoders of SoVITS v3 and v4: log-mel [100, T] -> waveform.

* v3: NVIDIA BigVGAN v2 (24 kHz, 100 bands, 256x), read from its Hugging Face folder
  (`config.json` + `bigvgan_generator.pt` holding `{"generator": state_dict}` with weight norm).
  Anti-aliased Snake activations: upsample x2 (Kaiser-windowed sinc), snake, lowpass + downsample.
* v4: a HiFi-GAN generator without conditioning (48 kHz, 480x), `vocoder.pth` = plain state dict.

Inference only; weight norm is folded at load time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .checkpoints import load_state_dict_file
from .errors import ModelFileError, check_weights
from .vits_modules import Generator, fold_weight_norm, same_conv

BIGVGAN_CONFIG = "config.json"
BIGVGAN_WEIGHTS = "bigvgan_generator.pt"
SNAKE_EPS = 1e-9


@dataclass
class BigVGANConfig:
    """The fields of BigVGAN's `config.json` that shape the generator."""

    num_mels: int = 100
    sampling_rate: int = 24000
    hop_size: int = 256
    upsample_rates: list[int] = field(default_factory=lambda: [4, 4, 2, 2, 2, 2])
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [8, 8, 4, 4, 4, 4])
    upsample_initial_channel: int = 1536
    resblock: str = "1"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    activation: str = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True
    use_bias_at_final: bool = True

    @classmethod
    def from_file(cls, path: Path) -> BigVGANConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise ModelFileError(path, f"cannot read the vocoder config ({err})") from err
        if not isinstance(raw, dict):
            raise ModelFileError(path, "vocoder config must be a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            config = cls(**{key: value for key, value in raw.items() if key in known})
            config.resblock = str(config.resblock)
            config._check()
        except (TypeError, ValueError) as err:
            raise ModelFileError(path, f"vocoder config is not a usable BigVGAN: {err}") from err
        return config

    def _check(self) -> None:
        if self.resblock != "1":
            raise ValueError(f"resblock {self.resblock!r} (only type '1', AMPBlock1, is supported)")
        if self.activation not in ("snake", "snakebeta"):
            raise ValueError(f"activation {self.activation!r} (expected snake or snakebeta)")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if math.prod(self.upsample_rates) != self.hop_size:
            raise ValueError(f"upsample_rates multiply to {math.prod(self.upsample_rates)}, not hop_size {self.hop_size}")


class Snake(nn.Module):
    """x + sin^2(alpha x) / beta per channel (beta = alpha for plain Snake); log-scale parameters."""

    def __init__(self, channels: int, with_beta: bool, logscale: bool) -> None:
        super().__init__()
        self.logscale = logscale
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels)) if with_beta else None

    def forward(self, x: Tensor) -> Tensor:
        alpha = self.alpha[None, :, None]
        beta = alpha if self.beta is None else self.beta[None, :, None]
        if self.logscale:
            alpha, beta = torch.exp(alpha), torch.exp(beta)
        return x + (1.0 / (beta + SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> Tensor:
    """[1, 1, kernel] lowpass (sum 1); only the initial value of the stored `filter` buffers."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    time = torch.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else torch.arange(kernel_size) - half
    taps = 2 * cutoff * window * torch.sinc(2 * cutoff * time)
    return (taps / taps.sum()).view(1, 1, kernel_size)


class Upsample2x(nn.Module):
    """x2 upsampling by a transposed depthwise sinc filter, edges replicated."""

    def __init__(self, kernel_size: int = 12, ratio: int = 2) -> None:
        super().__init__()
        self.ratio = ratio
        self.pad = kernel_size // ratio - 1
        self.crop_left = self.pad * ratio + (kernel_size - ratio) // 2
        self.crop_right = self.pad * ratio + (kernel_size - ratio + 1) // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        x = self.ratio * F.conv_transpose1d(x, self.filter.expand(channels, -1, -1), stride=self.ratio, groups=channels)
        return x[..., self.crop_left : -self.crop_right]


class LowPass(nn.Module):
    """Depthwise sinc lowpass with stride (the downsampler), edges replicated."""

    def __init__(self, kernel_size: int = 12, ratio: int = 2) -> None:
        super().__init__()
        self.stride = ratio
        self.pad_left = kernel_size // 2 - int(kernel_size % 2 == 0)
        self.pad_right = kernel_size // 2
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        x = F.pad(x, (self.pad_left, self.pad_right), mode="replicate")
        return F.conv1d(x, self.filter.expand(channels, -1, -1), stride=self.stride, groups=channels)


class Downsample2x(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lowpass = LowPass()

    def forward(self, x: Tensor) -> Tensor:
        return self.lowpass(x)


class AntiAliasedSnake(nn.Module):
    """Snake at twice the rate, so its harmonics above Nyquist are filtered instead of aliased."""

    def __init__(self, channels: int, config: BigVGANConfig) -> None:
        super().__init__()
        self.act = Snake(channels, config.activation == "snakebeta", config.snake_logscale)
        self.upsample = Upsample2x()
        self.downsample = Downsample2x()

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(self.act(self.upsample(x)))


class AMPBlock(nn.Module):
    """BigVGAN AMPBlock1: per dilation, x += conv2(act(conv1(act(x))))."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int], config: BigVGANConfig) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(same_conv(channels, kernel_size, d) for d in dilations)
        self.convs2 = nn.ModuleList(same_conv(channels, kernel_size, 1) for _ in dilations)
        self.activations = nn.ModuleList(AntiAliasedSnake(channels, config) for _ in range(2 * len(dilations)))

    def forward(self, x: Tensor) -> Tensor:
        for i, (c1, c2) in enumerate(zip(self.convs1, self.convs2)):
            x = x + c2(self.activations[2 * i + 1](c1(self.activations[2 * i](x))))
        return x


class BigVGAN(nn.Module):
    """Log-mel [B, num_mels, T] -> waveform [B, 1, T * hop] in [-1, 1]."""

    def __init__(self, config: BigVGANConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.num_kernels = len(c.resblock_kernel_sizes)
        self.conv_pre = nn.Conv1d(c.num_mels, c.upsample_initial_channel, 7, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        for i, (rate, kernel) in enumerate(zip(c.upsample_rates, c.upsample_kernel_sizes)):
            channels = c.upsample_initial_channel // (2 ** (i + 1))
            up = nn.ConvTranspose1d(2 * channels, channels, kernel, rate, padding=(kernel - rate) // 2)
            self.ups.append(nn.ModuleList([up]))
            for k, d in zip(c.resblock_kernel_sizes, c.resblock_dilation_sizes):
                self.resblocks.append(AMPBlock(channels, k, d, c))
        self.activation_post = AntiAliasedSnake(channels, c)
        self.conv_post = nn.Conv1d(channels, 1, 7, padding=3, bias=c.use_bias_at_final)
        self.eval().requires_grad_(False)

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def upsample_rate(self) -> int:
        return self.config.hop_size

    def forward(self, mel: Tensor) -> Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up[0](x)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
        x = self.conv_post(self.activation_post(x))
        return torch.tanh(x) if self.config.use_tanh_at_final else x.clamp(-1.0, 1.0)

    @classmethod
    def from_folder(cls, folder: str | Path) -> BigVGAN:
        """Load `config.json` + `bigvgan_generator.pt` from a BigVGAN hub folder."""
        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFileError(folder, "BigVGAN vocoder folder not found (SoVITS v3 needs it)")
        config = BigVGANConfig.from_file(folder / BIGVGAN_CONFIG)
        weights_path = folder / BIGVGAN_WEIGHTS
        if not weights_path.is_file():
            raise ModelFileError(weights_path, "BigVGAN generator weights not found (SoVITS v3 needs them)")
        stored = load_state_dict_file(weights_path)
        state = stored.get("generator") if isinstance(stored.get("generator"), dict) else stored
        with torch.device("meta"):  # the file fills every tensor
            model = cls(config)
        _load_folded(model, state, weights_path, "BigVGAN")
        return model


@dataclass(frozen=True)
class HifiGanVocoderConfig:
    """The v4 vocoder's dimensions (hard-coded upstream in `TTS.init_vocoder`)."""

    num_mels: int = 100
    sampling_rate: int = 48000
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5),) * 3
    upsample_rates: tuple[int, ...] = (10, 6, 2, 2, 2)
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: tuple[int, ...] = (20, 12, 4, 4, 4)


class HifiGanVocoder(nn.Module):
    """The v4 vocoder: the SoVITS HiFi-GAN generator on a log-mel, no speaker conditioning."""

    def __init__(self, config: HifiGanVocoderConfig | None = None) -> None:
        super().__init__()
        c = config or HifiGanVocoderConfig()
        self.config = c
        self.generator = Generator(
            c.num_mels,
            "1",
            list(c.resblock_kernel_sizes),
            [list(d) for d in c.resblock_dilation_sizes],
            list(c.upsample_rates),
            c.upsample_initial_channel,
            list(c.upsample_kernel_sizes),
            gin_channels=0,
            post_bias=True,
        )
        self.eval().requires_grad_(False)

    @property
    def sampling_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def upsample_rate(self) -> int:
        return math.prod(self.config.upsample_rates)

    def forward(self, mel: Tensor) -> Tensor:
        return self.generator(mel, None)

    @classmethod
    def from_file(cls, path: str | Path) -> HifiGanVocoder:
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(path, "v4 vocoder weights not found (SoVITS v4 needs them)")
        state = load_state_dict_file(path)
        with torch.device("meta"):
            model = cls()
        _load_folded(model.generator, state, path, "v4 vocoder")
        return model


def _load_folded(module: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    folded = {k: v.float() for k, v in fold_weight_norm(tensors).items()}
    expected = module.state_dict()
    check_weights(path, what, folded, expected)
    module.load_state_dict({name: folded[name] for name in expected}, strict=True, assign=True)


Vocoder = BigVGAN | HifiGanVocoder
