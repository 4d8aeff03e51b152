"""SoVITS (GPT-SoVITS "s2") decoder for v1/v2: semantic codes + phones + reference -> 32 kHz audio.

Only the inference path of the official `SynthesizerTrn`: quantizer decode, text encoder with
MRTE, reference encoder, flow reverse and the HiFi-GAN generator. Parameter names match the
checkpoint keys so official state dicts load unchanged (weight norm folded at load time).

Versions that add to this model (v2Pro, v2ProPlus) subclass `SovitsModel` and override
`embed_reference` (per-reference global embedding) and `mrte_condition` (what MRTE adds).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .audio import load_reference_audio
from .errors import ModelFileError, check_weights
from .t2s import intra_op_threads
from .vits_modules import (
    MRTE,
    AttentionEncoder,
    Generator,
    MelStyleEncoder,
    ResidualCouplingBlock,
    fold_weight_norm,
)

if TYPE_CHECKING:
    from .checkpoints import SovitsCheckpoint

SSL_DIM = 768  # HuBERT feature size; fixed by the architecture
CODEBOOK_SIZE = 1024
V2_REF_BINS = 704  # v2+ reference encoder reads only the lowest 704 of 1025 bins
V1_SYMBOLS, V2_SYMBOLS = 322, 732  # text_embedding rows (v2Pro/v2ProPlus use the v2 table)
CODEBOOK_PREFIX = "quantizer.vq.layers.0._codebook."


def reference_spectrogram(
    audio: Tensor, n_fft: int = 2048, hop_length: int = 640, win_length: int = 2048
) -> Tensor:
    """Linear magnitude spectrogram of a reference clip, as the official `spectrogram_torch`.

    audio: [T] float at the model rate. Returns [1, n_fft // 2 + 1, frames] float32
    (reflect pad (n_fft - hop) / 2 each side, periodic Hann, no centering, sqrt(|X|^2 + 1e-8)).
    """
    audio = audio.reshape(1, 1, -1).float()
    pad = (n_fft - hop_length) // 2
    audio = F.pad(audio, (pad, pad), mode="reflect").reshape(1, -1)
    window = torch.hann_window(win_length, device=audio.device)
    stft = torch.stft(
        audio, n_fft, hop_length=hop_length, win_length=win_length, window=window, center=False, return_complex=True
    )
    return torch.sqrt(stft.real.pow(2) + stft.imag.pow(2) + 1e-8)


_DATA_FIELDS = ("sampling_rate", "filter_length", "hop_length", "win_length")  # hps.data; the rest is hps.model
_DERIVED_FIELDS = ("version", "n_symbols", "conv_post_bias")  # decided from the file, not its hps


@dataclass
class SovitsConfig:
    """Hyper-parameters of the s2 model (the checkpoint's `hps`, flattened)."""

    version: str = "v2"
    n_symbols: int = 732
    sampling_rate: int = 32000
    filter_length: int = 2048
    hop_length: int = 640
    win_length: int = 2048
    inter_channels: int = 192
    hidden_channels: int = 192
    filter_channels: int = 768
    n_heads: int = 2
    n_layers: int = 6
    kernel_size: int = 3
    resblock: str = "1"
    resblock_kernel_sizes: list[int] = field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = field(default_factory=lambda: [[1, 3, 5]] * 3)
    upsample_rates: list[int] = field(default_factory=lambda: [10, 8, 2, 2, 2])
    upsample_initial_channel: int = 512
    upsample_kernel_sizes: list[int] = field(default_factory=lambda: [16, 16, 8, 2, 2])
    gin_channels: int = 512
    semantic_frame_rate: str = "25hz"
    conv_post_bias: bool = False

    @property
    def spec_channels(self) -> int:
        return self.filter_length // 2 + 1

    @property
    def ref_bins(self) -> int:
        """Spectrogram bins the reference encoder reads (v1: all)."""
        return self.spec_channels if self.version == "v1" else V2_REF_BINS

    @property
    def frames_per_code(self) -> int:
        return 2 if self.semantic_frame_rate == "25hz" else 1

    @classmethod
    def from_hparams(cls, hps: dict[str, Any], version: str, path: str = "<config>") -> SovitsConfig:
        """Build from the checkpoint's nested `hps` dict; names the missing field if any."""
        n_symbols = V1_SYMBOLS if version == "v1" else V2_SYMBOLS
        values: dict[str, Any] = {"version": version, "n_symbols": n_symbols}
        model_fields = [f.name for f in fields(cls) if f.name not in _DERIVED_FIELDS and f.name not in _DATA_FIELDS]
        for section, names in (("data", _DATA_FIELDS), ("model", model_fields)):
            block = hps.get(section) if isinstance(hps, dict) else None
            if not isinstance(block, dict):
                raise ModelFileError(path, f"config has no '{section}' section")
            for name in names:
                if name not in block:
                    raise ModelFileError(path, f"config lacks {section}.{name}")
                values[name] = block[name]
        try:
            config = cls(**values)
            config.resblock = str(config.resblock)
            config._check()
        except (TypeError, ValueError) as exc:
            raise ModelFileError(path, f"config does not describe a usable SoVITS model: {exc}") from exc
        return config

    def _check(self) -> None:
        ints = ("sampling_rate", "filter_length", "hop_length", "win_length", "inter_channels", "hidden_channels",
                "filter_channels", "n_heads", "n_layers", "kernel_size", "upsample_initial_channel", "gin_channels")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.semantic_frame_rate not in ("25hz", "50hz"):
            raise ValueError(f"semantic_frame_rate must be '25hz' or '50hz', got {self.semantic_frame_rate!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ValueError("upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ValueError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if math.prod(self.upsample_rates) != self.hop_length:
            raise ValueError(f"upsample_rates multiply to {math.prod(self.upsample_rates)}, not hop {self.hop_length}")
        if self.hidden_channels % self.n_heads or self.inter_channels % 2:
            raise ValueError("hidden_channels must divide by n_heads and inter_channels must be even")


class SemanticCodebook(nn.Module):
    """The single-layer VQ of `quantizer`: HuBERT-space vectors <-> semantic token ids."""

    def __init__(self, dim: int = SSL_DIM, size: int = CODEBOOK_SIZE) -> None:
        super().__init__()
        self.register_buffer("embed", torch.zeros(size, dim))

    def encode(self, x: Tensor) -> Tensor:
        """x [B, D, T] -> ids [B, T]: nearest entry by squared distance, as upstream computes it."""
        flat = x.transpose(1, 2).reshape(-1, x.shape[1]).float()
        embed = self.embed.float()
        dist = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed.t() + embed.pow(2).sum(1)[None, :])
        return dist.argmax(dim=-1).view(x.shape[0], x.shape[2])

    def decode(self, ids: Tensor) -> Tensor:
        """ids [B, T] -> [B, D, T]."""
        return F.embedding(ids, self.embed).transpose(1, 2)


class TextEncoder(nn.Module):
    """`enc_p`: semantic content + target phones (+ global embedding via MRTE) -> prior stats."""

    def __init__(self, config: SovitsConfig) -> None:
        super().__init__()
        c = config
        self.inter_channels = c.inter_channels
        self.ssl_proj = nn.Conv1d(SSL_DIM, c.hidden_channels, 1)
        def encoder(n_layers: int) -> AttentionEncoder:
            return AttentionEncoder(c.hidden_channels, c.filter_channels, c.n_heads, n_layers, c.kernel_size)

        self.encoder_ssl = encoder(c.n_layers // 2)
        self.encoder_text = encoder(c.n_layers)
        self.text_embedding = nn.Embedding(c.n_symbols, c.hidden_channels)
        self.mrte = MRTE(c.hidden_channels)
        self.encoder2 = encoder(c.n_layers // 2)
        self.proj = nn.Conv1d(c.hidden_channels, 2 * c.inter_channels, 1)

    def forward(
        self,
        content: Tensor,
        phones: Tensor,
        ge: Tensor,
        speed: float = 1.0,
        *,
        keep_frames: int | None = None,
        overlap: Tensor | None = None,
        encoded_phones: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """content [1, 768, T50], phones [1, Tp], ge [1, 512, 1] -> (latent, m_p, logs_p).

        Streaming (upstream `decode_streaming`): the encoders see the whole history, then only
        the last `keep_frames` frames go on, their first frames cross-faded with `overlap` (the
        previous chunk's latent). `latent` is that crop before the speed change, [1, C, frames].
        `encoded_phones`: `encode_phones(phones)` from an earlier chunk of the same sentence."""
        y = self.encoder_ssl(self.ssl_proj(content))
        text = self.encode_phones(phones) if encoded_phones is None else encoded_phones
        y = self.encoder2(self.mrte(y, text, ge))
        if keep_frames is not None:
            y = y[:, :, -keep_frames:]
        if overlap is not None:
            y = crossfade_latent(y, overlap)
        m_p, logs_p = self.proj(change_speed(y, speed)).split(self.inter_channels, dim=1)
        return y, m_p, logs_p

    def encode_phones(self, phones: Tensor) -> Tensor:
        """phones [1, Tp] -> the text side's encoding [1, H, Tp]: it does not depend on the semantic
        tokens, so a streamed sentence computes it once instead of once per chunk."""
        return self.encoder_text(self.text_embedding(phones).transpose(1, 2))


def change_speed(y: Tensor, speed: float) -> Tensor:
    """Speed changes the number of frames the prior covers (not a resampling of audio)."""
    if speed == 1:
        return y
    return F.interpolate(y, size=int(y.shape[-1] / speed) + 1, mode="linear")


def crossfade_latent(y: Tensor, overlap: Tensor) -> Tensor:
    """Blend the first N frames of y [1, C, T] into `overlap` [1, C, N] with upstream's sine
    window (the new chunk fades in over the previous chunk's latent of the same frames)."""
    frames = overlap.shape[-1]
    window = torch.sin(torch.arange(frames * 2, device=y.device) * math.pi / (frames * 2))
    y = y.clone()
    y[:, :, :frames] = window[:frames].view(1, 1, -1) * y[:, :, :frames] + window[frames:].view(1, 1, -1) * overlap
    return y


class SovitsBase(nn.Module):
    """What every SoVITS version shares: the text encoder, the reference side (global embedding
    `ge`, prompt semantic codes) and loading. Subclasses add the decoder."""

    needs_speaker_embedding = False  # v2Pro and later condition ge on a speaker-verification embedding

    def __init__(self, config: SovitsConfig) -> None:
        super().__init__()
        c = config
        self.config = config
        self.enc_p = TextEncoder(c)
        self.ref_enc = MelStyleEncoder(c.ref_bins, c.gin_channels)
        if c.semantic_frame_rate == "25hz":
            self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 2, stride=2)
        else:
            self.ssl_proj = nn.Conv1d(SSL_DIM, SSL_DIM, 1)
        self.quantizer = SemanticCodebook()

    def load_weights(self, weights: dict[str, Tensor], path: Any = "<weights>", assign: bool = False) -> None:
        """Load an official state dict (weight norm folded, codebook renamed, extras ignored).

        assign: take the tensors over instead of copying (a model built on the meta device)."""
        folded = fold_weight_norm(weights)
        state = {
            (name.replace(CODEBOOK_PREFIX, "quantizer.") if name.startswith(CODEBOOK_PREFIX) else name): value
            for name, value in folded.items()
        }
        expected = self.state_dict()
        check_weights(path, "SoVITS", state, expected)
        self.load_state_dict({name: state[name] for name in expected}, strict=True, assign=assign)

    # ---------------------------------------------------------------------------- properties
    @property
    def version(self) -> str:
        return self.config.version

    @property
    def sampling_rate(self) -> int:
        """The model's own rate (hps): its spectrogram's, and the v1/v2 family's output."""
        return self.config.sampling_rate

    @property
    def output_rate(self) -> int:
        """Sample rate of the synthesised audio."""
        return self.config.sampling_rate

    @property
    def device(self) -> torch.device:
        return self.quantizer.embed.device

    @property
    def dtype(self) -> torch.dtype:
        return self.quantizer.embed.dtype

    # ----------------------------------------------------------------------- reference side
    def spectrogram(self, audio: Tensor) -> Tensor:
        """Reference spectrogram with this model's STFT settings: [1, bins, frames] float32."""
        c = self.config
        return reference_spectrogram(audio, c.filter_length, c.hop_length, c.win_length)

    def load_reference_spectrogram(self, path: str | Path) -> Tensor:
        """Reference file -> spectrogram, as the official `_get_ref_spec`: mono, model rate, peak <= 1."""
        audio = load_reference_audio(path, self.sampling_rate)
        return self.spectrogram(torch.from_numpy(audio))

    def embed_reference(self, spec: Tensor, speaker_embedding: Tensor | None = None) -> Tensor:
        """One reference's global embedding ge [1, gin, 1].

        Override point: v2Pro adds the reference's speaker-verification embedding here (v1/v2
        have no use for one and ignore it).
        """
        spec = spec.to(device=self.device, dtype=self.dtype)
        return self.ref_enc(spec[:, : self.config.ref_bins])

    @torch.inference_mode()
    def global_embedding(
        self, specs: Sequence[Tensor], speaker_embeddings: Sequence[Tensor] | None = None
    ) -> Tensor:
        """ge [1, gin, 1] averaged over one or several references (spectrograms [1, bins, frames])."""
        if not specs:
            raise ValueError("global_embedding needs at least one reference spectrogram")
        if speaker_embeddings is not None and len(speaker_embeddings) != len(specs):
            raise ValueError(f"{len(speaker_embeddings)} speaker embeddings for {len(specs)} references")
        extras = speaker_embeddings if speaker_embeddings is not None else [None] * len(specs)
        return torch.stack([self.embed_reference(spec, extra) for spec, extra in zip(specs, extras)]).mean(0)

    def mrte_condition(self, ge: Tensor) -> Tensor:
        """What MRTE adds to the content (v2: ge itself; v2Pro projects it to 512)."""
        return ge

    @torch.inference_mode()
    def extract_prompt_codes(self, hubert_features: Tensor) -> Tensor:
        """HuBERT features [1, 768, T50] -> prompt semantic ids [T25] (int64)."""
        x = self.ssl_proj(hubert_features.to(device=self.device, dtype=self.dtype))
        return self.quantizer.encode(x)[0]


class SovitsModel(SovitsBase):
    """GPT-SoVITS v1/v2 `SynthesizerTrn`, inference only."""

    supported_versions: tuple[str, ...] = ("v1", "v2")

    def __init__(self, config: SovitsConfig) -> None:
        super().__init__(config)
        c = config
        self.dec = Generator(
            c.inter_channels,
            c.resblock,
            c.resblock_kernel_sizes,
            c.resblock_dilation_sizes,
            c.upsample_rates,
            c.upsample_initial_channel,
            c.upsample_kernel_sizes,
            c.gin_channels,
            post_bias=c.conv_post_bias,
        )
        self.flow = ResidualCouplingBlock(c.inter_channels, c.hidden_channels, 5, 1, 4, c.gin_channels)
        self.eval().requires_grad_(False)  # inference only

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(
        cls,
        ckpt: SovitsCheckpoint,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        *,
        generator_dtype: torch.dtype | None = None,
    ) -> SovitsModel:
        """Build from a loaded s2 checkpoint; ModelFileError if config and weights do not fit.

        generator_dtype: run only the HiFi-GAN generator (over 90% of the compute) in another
        dtype, e.g. bfloat16 on CPUs with AVX512-BF16 (about 2x faster, ~1% RMS deviation).
        """
        if ckpt.version not in cls.supported_versions:
            raise ModelFileError(ckpt.path, f"SoVITS {ckpt.version} files are not supported yet")
        config = SovitsConfig.from_hparams(ckpt.config, ckpt.version, str(ckpt.path))
        config.conv_post_bias = "dec.conv_post.bias" in ckpt.weights
        try:
            model = cls(config)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(ckpt.path, f"config does not describe a usable SoVITS model: {exc}") from exc
        model.load_weights(ckpt.weights, ckpt.path)
        model.to(device=device, dtype=dtype)
        if generator_dtype is not None:
            model.set_generator_dtype(generator_dtype)
        return model

    def set_generator_dtype(self, dtype: torch.dtype) -> None:
        """Run the waveform generator (`dec`) in `dtype`; everything else keeps the model dtype."""
        self.dec.to(dtype=dtype)

    # ---------------------------------------------------------------------------- properties
    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def samples_per_code(self) -> int:
        """Output samples per semantic token (1280 for 25 Hz codes at 32 kHz)."""
        return self.config.frames_per_code * self.config.hop_length

    @property
    def generator_dtype(self) -> torch.dtype:
        return self.dec.conv_pre.weight.dtype

    # --------------------------------------------------------------------------- synthesis
    @torch.inference_mode()
    def encode(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        speed: float = 1.0,
        *,
        keep_frames: int | None = None,
        overlap: Tensor | None = None,
        encoded_phones: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Codes [T25] + target phones [Tp] -> (latent, m_p, logs_p) at the 50 Hz frame rate
        (`keep_frames`/`overlap`/`encoded_phones`: see `TextEncoder.forward`)."""
        codes = codes.to(self.device).reshape(1, -1)
        phones = phone_ids.to(self.device).reshape(1, -1)
        content = self.quantizer.decode(codes)
        if self.config.frames_per_code > 1:
            content = content.repeat_interleave(self.config.frames_per_code, dim=-1)
        ge = ge.to(device=self.device, dtype=self.dtype)
        return self.enc_p(content, phones, self.mrte_condition(ge), speed, keep_frames=keep_frames, overlap=overlap,
                          encoded_phones=encoded_phones)

    @torch.inference_mode()
    def encode_phones(self, phone_ids: Tensor) -> Tensor:
        """Target phones [Tp] -> the text encoder's side [1, H, Tp] (see `TextEncoder.encode_phones`)."""
        with self._prior_threads():
            return self.enc_p.encode_phones(phone_ids.to(self.device).reshape(1, -1))

    @torch.inference_mode()
    def latent(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Everything before the waveform generator: z [1, inter, frames] (a few % of decode's time)."""
        if codes.numel() == 0:
            raise ValueError("decode needs at least one semantic code")
        if phone_ids.numel() == 0:
            raise ValueError("decode needs at least one phone id")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        with self._prior_threads():
            _, m_p, logs_p = self.encode(codes, phone_ids, ge, speed)
            return self._flow_from_prior(m_p, logs_p, ge, noise_scale, generator, noise)

    def _prior_threads(self) -> contextlib.AbstractContextManager[None]:
        """The text encoder and the flow on one intra-op thread on the CPU: their ops are too small
        to split; on two threads they took the same or more wall time for 20-50 % more CPU."""
        return intra_op_threads(1) if self.device.type == "cpu" else contextlib.nullcontext()

    def _flow_from_prior(
        self,
        m_p: Tensor,
        logs_p: Tensor,
        ge: Tensor,
        noise_scale: float,
        generator: torch.Generator | None,
        noise: Tensor | None,
    ) -> Tensor:
        """Sample z_p from the prior (m_p, logs_p) and run the flow backwards: z [1, inter, frames]."""
        if noise is None:
            noise = torch.randn(m_p.shape, generator=generator, device=self.device, dtype=self.dtype)
        elif noise.numel() != m_p.numel():
            raise ValueError(f"noise has shape {tuple(noise.shape)}, decode needs {tuple(m_p.shape[1:])}")
        else:
            noise = noise.to(device=self.device, dtype=self.dtype).reshape(m_p.shape)
        z_p = m_p + noise * torch.exp(logs_p) * noise_scale
        return self.flow.reverse(z_p, ge.to(device=self.device, dtype=self.dtype))

    @torch.inference_mode()
    def vocode(self, z: Tensor, ge: Tensor) -> Tensor:
        """Latent z [1, inter, frames] -> float32 waveform [frames * hop]."""
        dtype = self.generator_dtype
        return self.dec(z.to(dtype), ge.to(device=self.device, dtype=dtype)).reshape(-1).float()

    @torch.inference_mode()
    def decode(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        *,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Semantic codes [T25] + target phone ids [Tp] + ge -> float32 waveform [frames * hop].

        `noise` (same shape as m_p, [inter, frames] or [1, inter, frames]) replaces the
        Gaussian draw; otherwise it comes from `generator` (or the global RNG).
        """
        z = self.latent(
            codes, phone_ids, ge, speed=speed, noise_scale=noise_scale, generator=generator, noise=noise
        )
        return self.vocode(z, ge)

    supports_streaming = True  # upstream's decode_streaming exists for v1/v2 and the v2Pro family

    @torch.inference_mode()
    def decode_streaming(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        *,
        keep_codes: int | None = None,
        overlap: Tensor | None = None,
        speed: float = 1.0,
        noise_scale: float = 0.5,
        generator: torch.Generator | None = None,
        encoded_phones: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Upstream `SynthesizerTrn.decode_streaming`: the text/prior encoder runs over the whole
        token history `codes`, then only its last `keep_codes` tokens' frames (all if None) go
        through the flow and the vocoder, the first of them cross-faded with `overlap` (the
        previous chunk's latent frames). Returns (float32 waveform, latent [1, C, frames]) where
        the latent is what the next chunk cross-fades with. `encoded_phones`: `encode_phones`
        of these phones, when an earlier chunk computed it."""
        if codes.numel() == 0 or phone_ids.numel() == 0:
            raise ValueError("decode_streaming needs semantic codes and phone ids")
        keep_frames = None if keep_codes is None else keep_codes * self.config.frames_per_code
        with self._prior_threads():
            latent, m_p, logs_p = self.encode(codes, phone_ids, ge, speed, keep_frames=keep_frames, overlap=overlap,
                                              encoded_phones=encoded_phones)
            z = self._flow_from_prior(m_p, logs_p, ge, noise_scale, generator, None)
        return self.vocode(z, ge), latent
