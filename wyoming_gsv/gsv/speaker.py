"""ERes2NetV2 speaker-verification network: the speaker embedding v2Pro voices condition on.

Only the part GPT-SoVITS uses is built: the trunk up to the bottom-up fusion of stages 3 and 4,
averaged over time (`forward3` upstream) into a 20480-d vector. Parameter names follow the
official state dict (3D-Speaker layout) so the pretrained file loads strictly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ModelFileError, check_weights
from .audio import sinc_resample
from .fbank import kaldi_fbank

SV_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class ERes2NetV2Config:
    """The pretrained `eres2netv2w24s4ep4` network (GPT-SoVITS hard-codes these)."""

    num_blocks: tuple[int, int, int, int] = (3, 4, 6, 3)
    m_channels: int = 64
    feat_dim: int = 80
    base_width: int = 24
    scale: int = 4
    expansion: int = 4

    @property
    def embedding_dim(self) -> int:
        # channels of stage 4 times the frequency rows left after three stride-2 stages
        return self.m_channels * 8 * self.expansion * (self.feat_dim // 8)


def _clipped_relu(x: torch.Tensor) -> torch.Tensor:
    # ERes2Net's blocks use Hardtanh(0, 20) as their "ReLU".
    return F.hardtanh(x, 0.0, 20.0)


class AttentionalFeatureFusion(nn.Module):
    """AFF: a learned per-element mix of two feature maps of the same shape."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        inner = channels // reduction
        self.local_att = nn.Sequential(
            nn.Conv2d(channels * 2, inner, kernel_size=1),
            nn.BatchNorm2d(inner),
            nn.SiLU(),
            nn.Conv2d(inner, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        weight = 1.0 + torch.tanh(self.local_att(torch.cat((x, y), dim=1)))
        return x * weight + y * (2.0 - weight)


class Res2Block(nn.Module):
    """Bottleneck block whose 3x3 stage runs on `scale` channel groups in a cascade.

    Each group adds the previous group's output before its conv; with `fuse=True` that sum is an
    attentional fusion instead (the "AFF" blocks of stages 3 and 4).
    """

    def __init__(self, in_planes: int, planes: int, stride: int, config: ERes2NetV2Config, fuse: bool) -> None:
        super().__init__()
        width = int(math.floor(planes * config.base_width / 64.0))
        out_planes = planes * config.expansion
        self.width = width
        self.conv1 = nn.Conv2d(in_planes, width * config.scale, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(width * config.scale)
        self.convs = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False) for _ in range(config.scale)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(width) for _ in range(config.scale))
        self.fuse_models = (
            nn.ModuleList(AttentionalFeatureFusion(width) for _ in range(config.scale - 1)) if fuse else None
        )
        self.conv3 = nn.Conv2d(width * config.scale, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = torch.split(_clipped_relu(self.bn1(self.conv1(x))), self.width, dim=1)
        outputs: list[torch.Tensor] = []
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            if i == 0:
                part = groups[0]
            elif self.fuse_models is not None:
                part = self.fuse_models[i - 1](outputs[-1], groups[i])
            else:
                part = outputs[-1] + groups[i]
            outputs.append(_clipped_relu(bn(conv(part))))
        out = self.bn3(self.conv3(torch.cat(outputs, dim=1)))
        return _clipped_relu(out + self.shortcut(x))


class ERes2NetV2(nn.Module):
    def __init__(self, config: ERes2NetV2Config = ERes2NetV2Config()) -> None:
        super().__init__()
        self.config = config
        m = config.m_channels
        self.conv1 = nn.Conv2d(1, m, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(m)
        in_planes = m
        stages = []
        for index, (blocks, planes, stride) in enumerate(
            zip(config.num_blocks, (m, m * 2, m * 4, m * 8), (1, 2, 2, 2))
        ):
            layers = []
            for block_stride in [stride] + [1] * (blocks - 1):
                layers.append(Res2Block(in_planes, planes, block_stride, config, fuse=index >= 2))
                in_planes = planes * config.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.layer3_ds = nn.Conv2d(
            m * 4 * config.expansion, m * 8 * config.expansion, kernel_size=3, padding=1, stride=2, bias=False
        )
        self.fuse34 = AttentionalFeatureFusion(m * 8 * config.expansion)

    def stages(self, fbank: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output for a [B, frames, 80] fbank (for debugging against references)."""
        x = fbank.transpose(1, 2).unsqueeze(1)  # [B, 1, freq, time]
        out: dict[str, torch.Tensor] = {"conv1": self.conv1(x)}
        out["bn1"] = self.bn1(out["conv1"])
        out["layer1"] = self.layer1(F.relu(out["bn1"]))
        out["layer2"] = self.layer2(out["layer1"])
        out["layer3"] = self.layer3(out["layer2"])
        out["layer4"] = self.layer4(out["layer3"])
        out["layer3_ds"] = self.layer3_ds(out["layer3"])
        out["fuse34"] = self.fuse34(out["layer4"], out["layer3_ds"])
        return out

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Speaker embedding [B, 20480]: the fused map flattened over (channel, freq), mean over time."""
        return self.stages(fbank)["fuse34"].flatten(1, 2).mean(-1)


class SpeakerEncoder:
    """Loads the pretrained ERes2NetV2 file and turns 32 kHz reference audio into embeddings."""

    def __init__(self, network: ERes2NetV2, device: torch.device) -> None:
        self.network = network.eval()
        self.device = device

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "SpeakerEncoder":
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(path, "speaker-verification model not found (v2Pro voices need it)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises many types for broken zips and pickles
            raise ModelFileError(path, f"not a readable speaker-verification model ({err})") from err
        if isinstance(state, dict) and "weight" in state and isinstance(state["weight"], dict):
            state = state["weight"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileError(path, "expected a state dict of tensors")
        network = ERes2NetV2()
        expected = network.state_dict()
        state = {k: v for k, v in state.items() if not k.startswith(("seg_", "pool."))}
        check_weights(path, "speaker-verification", state, expected)
        # fp16 files load into the fp32 network, as the official loader does.
        network.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items() if k in expected})
        device = torch.device(device)
        return cls(network.to(device), device)

    @torch.inference_mode()
    def embed(self, audio_32k: torch.Tensor | np.ndarray, sample_rate: int = 32000) -> torch.Tensor:
        """Speaker embedding [20480] of a normalised mono reference at `sample_rate`."""
        audio = torch.as_tensor(np.asarray(audio_32k, dtype=np.float32))
        audio_16k = sinc_resample(audio, sample_rate, SV_SAMPLE_RATE)
        fbank = kaldi_fbank(audio_16k).to(self.device)
        return self.network(fbank.unsqueeze(0))[0].float().cpu()
