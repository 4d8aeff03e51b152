"""BERT (chinese-roberta-wwm-ext-large) phone-level features for Chinese text segments."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from .errors import ModelFileError
from .hf_folders import check_model_folder, load_pretrained

# The official code takes the third-from-last hidden state (layer 22 of 24 in the real model).
HIDDEN_STATE_INDEX = -3


class BertFeaturizer:
    """Tokenizer + masked-LM encoder; `features` repeats each character's vector per phone."""

    def __init__(self, tokenizer, model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.device = device
        self.dtype = dtype

    @classmethod
    def from_folder(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> BertFeaturizer:
        from transformers import AutoModelForMaskedLM, AutoTokenizer

        path = Path(path)
        check_model_folder(path, "BERT")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises many types for an unusable folder
            raise ModelFileError(path, f"cannot load BERT tokenizer ({exc})") from exc
        # Only the encoder is used (hidden states); the masked-LM head may be absent.
        model = load_pretrained(
            AutoModelForMaskedLM.from_pretrained,
            path,
            "BERT",
            device=device,
            dtype=dtype,
            needed=lambda key: not key.startswith("cls."),
        )
        return cls(tokenizer, model, torch.device(device), dtype)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def features(self, norm_text: str, word2ph: Sequence[int]) -> Tensor:
        """Normalized zh text + phones per character -> [hidden, sum(word2ph)] float32.

        Needs exactly one token per character (true for the Chinese BERT on normalized text).
        """
        if len(word2ph) != len(norm_text):
            raise ValueError(f"word2ph has {len(word2ph)} entries for {len(norm_text)} characters of {norm_text!r}")
        inputs = self.tokenizer(norm_text, return_tensors="pt")
        tokens = int(inputs["input_ids"].shape[-1]) - 2  # without [CLS] and [SEP]
        if tokens != len(norm_text):
            raise ValueError(f"BERT tokenizer made {tokens} tokens from {len(norm_text)} characters of {norm_text!r}")
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        hidden = self.model(**inputs, output_hidden_states=True).hidden_states[HIDDEN_STATE_INDEX]
        per_char = hidden[0, 1:-1].float()
        repeats = torch.tensor(list(word2ph), device=per_char.device)
        return per_char.repeat_interleave(repeats, dim=0).T.contiguous()

    def zeros(self, n_phones: int) -> Tensor:
        """Features for a non-Chinese segment: zeros [hidden, n_phones]."""
        return torch.zeros(self.hidden_size, n_phones)
