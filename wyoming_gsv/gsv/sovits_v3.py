"""SoVITS v3 / v4 (upstream `SynthesizerTrnV3`): semantic codes + phones -> features -> DiT -> vocoder.

Shares the v2 text encoder and reference side (`SovitsBase`); what differs:
* the text encoder's output y (before `proj`) goes through `bridge` (1x1 conv to 512 + leaky ReLU),
  nearest upsampling from 50 Hz to the mel rate (x1.875 for v3's 93.75 Hz, x2 for v4's 100 Hz)
  and `wns1` (a WaveNet conditioned on ge): the DiT's conditioning features [512, T];
* the reference's own log-mel (v3: 24 kHz, v4: 32 kHz) is the in-context prompt of the flow-matching
  sampler, paired with the features of the prompt's codes and phones;
* long targets are generated in chunks of T_chunk frames (prompt included), each chunk prompted with
  the end of the previous one; the denormalised mel goes through the vocoder (v3 BigVGAN 24 kHz,
  v4 HiFi-GAN 48 kHz).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .audio import load_reference_waveform
from .bigvgan import BigVGAN, HifiGanVocoder, Vocoder
from .checkpoints import load_sovits_checkpoint
from .dit import DiT, FlowMatching
from .errors import ModelFileError
from .lora import merge_lora
from .mel import MelConfig, denormalize_mel, log_mel_spectrogram, normalize_mel
from .sovits import SovitsBase, SovitsConfig, change_speed
from .vits_modules import WN

if TYPE_CHECKING:
    from .checkpoints import SovitsCheckpoint

FEATURE_CHANNELS = 512
DEFAULT_SAMPLE_STEPS = 32
OVERLAP_FRAMES = 12  # chunks of the batched path overlap by this many frames (cross-faded by SOLA)
SOLA_SEARCH_SAMPLES = 320


@dataclass(frozen=True)
class VersionLayout:
    """What v3 and v4 set differently (upstream: the interpolation factors and `vocoder_configs`)."""

    version: str
    features_per_50hz_frame: float  # nearest-neighbour factor from the 50 Hz encoder to the mel rate
    mask_frames_per_code: float  # upstream's length for wns1's mask, per 25 Hz code
    reference_mel: MelConfig
    ref_frames: int  # T_ref: longest reference prompt (frames)
    chunk_frames: int  # T_chunk: prompt + generated frames per sampler call


V3_LAYOUT = VersionLayout("v3", 1.875, 3.875, MelConfig(24000, 1024, 256, 1024), 468, 934)
V4_LAYOUT = VersionLayout("v4", 2.0, 4.0, MelConfig(32000, 1280, 320, 1280), 500, 1000)
LAYOUTS = {layout.version: layout for layout in (V3_LAYOUT, V4_LAYOUT)}


class WaveNetEncoder(nn.Module):
    """`wns1`: 1x1 conv in, WaveNet conditioned on ge (weight norm folded), 1x1 conv out; masked."""

    def __init__(self, channels: int, kernel_size: int, n_layers: int, gin_channels: int) -> None:
        super().__init__()
        self.pre = nn.Conv1d(channels, channels, 1)
        self.enc = WN(channels, kernel_size, 1, n_layers, gin_channels)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: Tensor, ge: Tensor, length: int) -> Tensor:
        mask = (torch.arange(x.shape[-1], device=x.device) < length).to(x.dtype)[None, None, :]
        return self.proj(self.enc(self.pre(x) * mask, ge, mask)) * mask


@dataclass
class PromptContext:
    """The reference side of one synthesis: prompt features and the matching normalised mel, trimmed
    to a common length (at most T_ref frames)."""

    features: Tensor  # [1, 512, P]
    mel: Tensor  # [1, 100, P]


class SovitsV3Model(SovitsBase):
    """SoVITS v3/v4 with its vocoder, inference only."""

    supported_versions = ("v3", "v4")

    def __init__(self, config: SovitsConfig) -> None:
        super().__init__(config)
        if config.version not in LAYOUTS:
            raise ValueError(f"SovitsV3Model is for v3/v4 files, not {config.version}")
        self.layout = LAYOUTS[config.version]
        self.bridge = nn.Sequential(nn.Conv1d(config.inter_channels, FEATURE_CHANNELS, 1), nn.LeakyReLU())
        self.wns1 = WaveNetEncoder(FEATURE_CHANNELS, 5, 8, config.gin_channels)
        self.cfm = FlowMatching(DiT())
        self.vocoder: Vocoder | None = None
        self.eval().requires_grad_(False)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_checkpoint(
        cls,
        ckpt: SovitsCheckpoint,
        vocoder: Vocoder,
        base: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> SovitsV3Model:
        """Build from a v3/v4 file; a LoRA fine-tune is merged onto `base` (its pretrained file).

        As upstream, the model is built from the file's own config (a LoRA file's, not the base's).
        """
        if ckpt.version not in cls.supported_versions:
            raise ModelFileError(ckpt.path, f"SoVITS {ckpt.version} is not a v3/v4 model")
        weights = ckpt.weights
        if ckpt.is_lora:
            weights = merge_lora(_lora_base(ckpt, base).weights, ckpt.weights, ckpt.lora_rank or 0, ckpt.path)
        config = SovitsConfig.from_hparams(ckpt.config, ckpt.version, str(ckpt.path))
        try:
            with torch.device("meta"):  # no random init of 400 M parameters: the file fills them
                model = cls(config)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise ModelFileError(ckpt.path, f"config does not describe a usable SoVITS model: {exc}") from exc
        model.load_weights({k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()},
                           ckpt.path, assign=True)
        model.vocoder = vocoder
        return model.to(device=device, dtype=dtype)

    # ---------------------------------------------------------------------------- properties
    @property
    def output_rate(self) -> int:
        """Sample rate of the audio (the vocoder's: 24 kHz v3, 48 kHz v4)."""
        return self._vocoder.sampling_rate

    @property
    def _vocoder(self) -> Vocoder:
        if self.vocoder is None:
            raise RuntimeError("no vocoder attached")
        return self.vocoder

    # ----------------------------------------------------------------------- reference side
    def reference_mel(self, path: str | Path) -> Tensor:
        """Normalised log-mel [1, 100, F] of a reference file at the model's mel rate.

        As upstream: mono, resampled with torchaudio's sinc resampler, NOT peak-normalised.
        """
        mel_config = self.layout.reference_mel
        audio = torch.from_numpy(np.ascontiguousarray(load_reference_waveform(path, mel_config.sampling_rate)))
        return normalize_mel(log_mel_spectrogram(audio, mel_config))

    @torch.inference_mode()
    def prompt_context(self, prompt_codes: Tensor, prompt_phones: Tensor, ge: Tensor, mel: Tensor) -> PromptContext:
        """Features of the transcript's codes/phones and the reference mel, cut to a common length
        (the last T_ref frames when longer, as upstream)."""
        features = self.features(prompt_codes, prompt_phones, ge)
        mel = mel.to(device=self.device, dtype=self.dtype).reshape(1, mel.shape[-2], -1)
        common = min(mel.shape[-1], features.shape[-1])
        mel, features = mel[..., :common], features[..., :common]
        if common > self.layout.ref_frames:
            mel, features = mel[..., -self.layout.ref_frames :], features[..., -self.layout.ref_frames :]
        return PromptContext(features=features, mel=mel)

    # --------------------------------------------------------------------------- synthesis
    @torch.inference_mode()
    def features(self, codes: Tensor, phone_ids: Tensor, ge: Tensor, speed: float = 1.0) -> Tensor:
        """Codes [T25] + phones [Tp] + ge -> DiT conditioning [1, 512, frames] (upstream `decode_encp`)."""
        if codes.numel() == 0 or phone_ids.numel() == 0:
            raise ValueError("synthesis needs at least one semantic code and one phone id")
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        codes = codes.to(self.device).reshape(1, -1)
        content = self.quantizer.decode(codes)
        if self.config.frames_per_code > 1:
            content = content.repeat_interleave(self.config.frames_per_code, dim=-1)
        ge = ge.to(device=self.device, dtype=self.dtype)
        latent, _, _ = self.enc_p(content, phone_ids.to(self.device).reshape(1, -1), self.mrte_condition(ge), speed)
        x = F.interpolate(self.bridge(change_speed(latent, speed)), scale_factor=self.layout.features_per_50hz_frame, mode="nearest")
        mask_length = int(codes.shape[-1] * self.layout.mask_frames_per_code / speed) + (speed != 1)
        return self.wns1(x, ge, mask_length)

    def sample_mel(self, features: Tensor, prompt: Tensor, steps: int, *, noise: Tensor | None = None,
                   generator: torch.Generator | None = None) -> Tensor:
        """One sampler call; returns the normalised mel of the frames after the prompt."""
        mel = self.cfm.sample(features, prompt, steps, noise=noise, generator=generator)
        return mel[..., prompt.shape[-1] :]

    @torch.inference_mode()
    def vocode(self, mel: Tensor) -> Tensor:
        """Normalised mel [1, 100, T] -> float32 waveform [T * upsample] at `output_rate`."""
        vocoder = self._vocoder
        weight = next(vocoder.parameters())
        return vocoder(denormalize_mel(mel).to(weight.dtype)).reshape(-1).float()

    @torch.inference_mode()
    def synthesize(
        self,
        codes: Tensor,
        phone_ids: Tensor,
        ge: Tensor,
        prompt: PromptContext,
        *,
        sample_steps: int = DEFAULT_SAMPLE_STEPS,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        noises: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """One sentence -> float32 waveform (upstream `using_vocoder_synthesis`).

        The target's features are cut into chunks of T_chunk - P frames; each sampler call sees the
        prompt first, and the next chunk is prompted with the end of this one. `noises` (one
        [1, 100, frames] per call) replaces the Gaussian draws from `generator`.
        """
        target = self.features(codes, phone_ids, ge, speed)
        prompt_features, prompt_mel = prompt.features, prompt.mel
        prompt_len = prompt_mel.shape[-1]
        chunk_len = self.layout.chunk_frames - prompt_len
        mels = []
        for call, start in enumerate(range(0, target.shape[-1], chunk_len)):
            chunk = target[..., start : start + chunk_len]
            noise = noises[call] if noises is not None else None
            mel = self.sample_mel(torch.cat([prompt_features, chunk], dim=-1), prompt_mel, sample_steps,
                                  noise=noise, generator=generator)
            mels.append(mel)
            prompt_mel, prompt_features = mel[..., -prompt_len:], chunk[..., -prompt_len:]
        return self.vocode(torch.cat(mels, dim=-1))

    @torch.inference_mode()
    def synthesize_batched(
        self,
        sentences: Sequence[tuple[Tensor, Tensor]],
        ge: Tensor,
        prompt: PromptContext,
        *,
        sample_steps: int = DEFAULT_SAMPLE_STEPS,
        speed: float = 1.0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> list[Tensor]:
        """Several sentences in ONE sampler call (upstream `using_vocoder_synthesis_batched_infer`).

        All sentences' features are joined and cut into overlapping chunks of equal length (the
        batch), every chunk prompted by the reference; the chunks' audio is joined by SOLA and
        split back per sentence. `noise` [chunks, 100, T_chunk] replaces the Gaussian draw.
        """
        feats = [self.features(codes, phones, ge, speed) for codes, phones in sentences]
        prompt_len = prompt.mel.shape[-1]
        chunk_len = self.layout.chunk_frames - prompt_len
        joined = F.pad(torch.cat(feats, dim=-1), (OVERLAP_FRAMES, 0))
        chunks, start, padding = [], 0, 0
        while True:
            if start > 0:
                start -= OVERLAP_FRAMES
            chunk = joined[..., start : start + chunk_len]
            start += chunk_len
            if chunk.shape[-1] == 0:
                break
            padding = chunk_len - chunk.shape[-1]
            chunks.append(F.pad(chunk, (0, padding)))
        batch = torch.cat(chunks, dim=0)
        conditioning = torch.cat([prompt.features.expand(batch.shape[0], -1, -1), batch], dim=-1)
        mel = self.sample_mel(conditioning, prompt.mel, sample_steps, noise=noise, generator=generator)
        mel = mel[..., -chunk_len:].permute(1, 0, 2).reshape(1, mel.shape[1], -1)
        audio = self.vocode(mel)

        upsample = self._vocoder.upsample_rate
        pieces = list(audio.split(chunk_len * upsample))
        audio = sola_join(pieces, OVERLAP_FRAMES * upsample)
        audio = audio[OVERLAP_FRAMES * upsample : audio.shape[-1] - padding * upsample]
        fragments, offset = [], 0
        for feat in feats:
            length = feat.shape[-1] * upsample
            fragments.append(audio[offset : offset + length])
            offset += length
        return fragments


def sola_join(pieces: list[Tensor], overlap: int, search: int = SOLA_SEARCH_SAMPLES) -> Tensor:
    """Join audio pieces whose ends overlap by `overlap` samples: each next piece is shifted by up to
    `search` samples to where it best matches (normalised cross-correlation), then cross-faded with a
    Hann window."""
    pieces = [p.float() for p in pieces]
    for i in range(len(pieces) - 1):
        tail, head = pieces[i], pieces[i + 1]
        window_tail = tail[-overlap:]
        window_head = head[: overlap + search]
        corr = F.conv1d(window_head.view(1, 1, -1), window_tail.view(1, 1, -1)).view(-1)
        energy = F.conv1d(window_head.view(1, 1, -1) ** 2, torch.ones_like(window_tail).view(1, 1, -1)).view(-1) + 1e-8
        shift = int((corr / energy.sqrt()).argmax())
        pieces[i] = tail[:-overlap]
        shifted = head[shift:].clone()
        fade = torch.hann_window(2 * overlap, device=tail.device, dtype=tail.dtype)
        shifted[:overlap] = fade[:overlap] * shifted[:overlap] + fade[overlap:] * tail[-overlap:]
        pieces[i + 1] = shifted
    return torch.cat(pieces)


def _lora_base(lora: SovitsCheckpoint, base: str | Path | None) -> SovitsCheckpoint:
    """The pretrained file a LoRA fine-tune was trained on (loaded as upstream: as the LoRA's version)."""
    if base is None or not Path(base).is_file():
        where = f" (expected at {base})" if base is not None else ""
        raise ModelFileError(
            base if base is not None else lora.path,
            f"SoVITS {lora.version} pretrained base model missing{where}: the LoRA fine-tune {lora.path.name} "
            "holds only the changes to it ('wyoming-gsv download --version " + lora.version + "')",
        )
    return load_sovits_checkpoint(base, version=lora.version)


def load_vocoder(version: str, path: str | Path) -> Vocoder:
    """The vocoder of a v3 (BigVGAN folder) or v4 (`vocoder.pth`) model."""
    if version == "v3":
        return BigVGAN.from_folder(path)
    if version == "v4":
        return HifiGanVocoder.from_file(path)
    raise ValueError(f"no vocoder for SoVITS {version}")
