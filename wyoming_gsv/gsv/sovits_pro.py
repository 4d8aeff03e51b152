"""SoVITS v2Pro / v2ProPlus: the v2 decoder whose global embedding also carries the speaker.

Each reference's `ge` becomes PReLU(ref_enc(spec) + sv_emb(speaker embedding)); MRTE receives it
projected to 512 channels, the flow and the generator receive it as is (gin channels). Everything
else is the v2 model, so only those two steps are overridden here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .errors import ModelFileError
from .sovits import SovitsModel

if TYPE_CHECKING:
    from .checkpoints import SovitsCheckpoint

SPEAKER_EMBEDDING_DIM = 20480  # ERes2NetV2 forward3 output (see speaker.py)
MRTE_CHANNELS = 512
PRO_VERSIONS = ("v2Pro", "v2ProPlus")


class SovitsProModel(SovitsModel):
    supported_versions = PRO_VERSIONS
    needs_speaker_embedding = True

    def __init__(self, config) -> None:
        super().__init__(config)
        gin = config.gin_channels
        self.sv_emb = nn.Linear(SPEAKER_EMBEDDING_DIM, gin)
        self.ge_to512 = nn.Linear(gin, MRTE_CHANNELS)
        self.prelu = nn.PReLU(num_parameters=gin)
        self.eval().requires_grad_(False)

    def embed_reference(self, spec: Tensor, speaker_embedding: Tensor | None = None) -> Tensor:
        if speaker_embedding is None:
            raise ValueError(f"SoVITS {self.version} needs a speaker embedding for every reference")
        ge = super().embed_reference(spec)
        speaker = self.sv_emb(speaker_embedding.to(device=self.device, dtype=self.dtype).reshape(1, -1))
        return self.prelu(ge + speaker.unsqueeze(-1))

    def mrte_condition(self, ge: Tensor) -> Tensor:
        return self.ge_to512(ge.transpose(1, 2)).transpose(1, 2)


def sovits_from_checkpoint(
    ckpt: SovitsCheckpoint,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs,
) -> SovitsModel:
    """The SoVITS model class that fits the file's version, built and loaded."""
    if ckpt.version in PRO_VERSIONS:
        return SovitsProModel.from_checkpoint(ckpt, device, dtype, **kwargs)
    if ckpt.version in SovitsModel.supported_versions:
        return SovitsModel.from_checkpoint(ckpt, device, dtype, **kwargs)
    raise ModelFileError(ckpt.path, f"SoVITS {ckpt.version} files are not supported")
