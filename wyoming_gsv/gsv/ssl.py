"""HuBERT (chinese-hubert-base) features and the reference -> prompt semantic codes path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .audio import AudioFileError, load_audio
from .hf_folders import check_model_folder, load_pretrained

if TYPE_CHECKING:
    from .sovits import SovitsModel

SSL_SAMPLE_RATE = 16000
MIN_REFERENCE_SECONDS = 3
MAX_REFERENCE_SECONDS = 10


def ssl_pad_samples(sovits_sampling_rate: int) -> int:
    """Zeros appended to the 16 kHz reference: int(0.3 * s2 rate) (an upstream quirk: 0.6 s at 32 kHz)."""
    return int(0.3 * sovits_sampling_rate)


class HubertEncoder:
    """Wraps transformers' `HubertModel`; raw 16 kHz waveform in, last hidden state out."""

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_folder(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> HubertEncoder:
        from transformers import HubertModel

        path = Path(path)
        check_model_folder(path, "HuBERT")
        # masked_spec_embed is only used for training-time masking.
        model = load_pretrained(
            HubertModel.from_pretrained,
            path,
            "HuBERT",
            device=device,
            dtype=dtype,
            needed=lambda key: "masked_spec_embed" not in key,
        )
        return cls(model, torch.device(device), dtype)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def features(self, wav16k: np.ndarray, pad_samples: int) -> Tensor:
        """16 kHz mono float waveform (+ `pad_samples` zeros) -> last_hidden_state [1, hidden, T50]."""
        wav = np.concatenate([np.asarray(wav16k, dtype=np.float32), np.zeros(pad_samples, dtype=np.float32)])
        inputs = torch.from_numpy(wav)[None].to(device=self.device, dtype=self.dtype)
        hidden = self.model(inputs).last_hidden_state
        return hidden.transpose(1, 2)


def reference_prompt_codes(path: str | Path, hubert: HubertEncoder, sovits: SovitsModel) -> Tensor:
    """Reference clip -> prompt semantic ids [T25], the official `_set_prompt_semantic` path.

    The clip must last 3-10 s (at 16 kHz: 48000..160000 samples), else AudioFileError.
    """
    wav16k = load_audio(path, SSL_SAMPLE_RATE)
    seconds = len(wav16k) / SSL_SAMPLE_RATE
    if not MIN_REFERENCE_SECONDS * SSL_SAMPLE_RATE <= len(wav16k) <= MAX_REFERENCE_SECONDS * SSL_SAMPLE_RATE:
        raise AudioFileError(
            path,
            f"reference audio lasts {seconds:.2f} s; it must be between "
            f"{MIN_REFERENCE_SECONDS} and {MAX_REFERENCE_SECONDS} s",
        )
    features = hubert.features(wav16k, ssl_pad_samples(sovits.sampling_rate))
    return sovits.extract_prompt_codes(features)
