"""Merging a SoVITS v3/v4 LoRA fine-tune onto its pretrained base, once, at load time.

The fine-tune file holds what training changed: full copies of the small unfrozen modules
(`ref_enc`, `bridge`, `wns1`, ...) and rank-r adapters A [r, in], B [out, r] for the DiT's
attention Linears, under peft's names (`cfm.base_model.model.<module>.lora_A.default.weight`).
Merged: W <- W + (B @ A) * alpha / r (upstream trains with alpha = r), as peft's merge_and_unload.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from .errors import ModelFileError

PEFT_PREFIX = "cfm.base_model.model."
_ADAPTERS = (".lora_A.", ".lora_B.")


def _base_name(key: str) -> str:
    """peft's wrapped name -> the plain model's name."""
    if key.startswith(PEFT_PREFIX):
        key = "cfm." + key[len(PEFT_PREFIX):]
    return key.replace(".base_layer.", ".")


def merge_lora(
    base: dict[str, Tensor], lora: dict[str, Tensor], rank: int, path: str | Path, alpha: float | None = None
) -> dict[str, Tensor]:
    """The base state dict with the fine-tune's full tensors replaced and its adapters merged (float32)."""
    merged = dict(base)
    adapters: dict[str, dict[str, Tensor]] = {}
    for key, value in lora.items():
        marker = next((m for m in _ADAPTERS if m in key), None)
        if marker is None:
            merged[_base_name(key)] = value
            continue
        module = _base_name(key.split(marker)[0])
        adapters.setdefault(module, {})[marker[-2]] = value  # "A" or "B"
    if not adapters:
        raise ModelFileError(path, "LoRA file holds no lora_A/lora_B adapter weights")
    scaling = (alpha if alpha is not None else rank) / rank
    for module, pair in adapters.items():
        weight_key = module + ".weight"
        if set(pair) != {"A", "B"}:
            raise ModelFileError(path, f"LoRA adapter of {module} lacks lora_{'B' if 'A' in pair else 'A'}")
        if weight_key not in merged:
            raise ModelFileError(path, f"LoRA adapter for {module}, which the base model does not have")
        a, b, weight = pair["A"].float(), pair["B"].float(), merged[weight_key].float()
        if a.shape[0] != rank or b.shape[1] != rank or (b.shape[0], a.shape[1]) != tuple(weight.shape):
            raise ModelFileError(
                path,
                f"LoRA adapter of {module} has A {list(a.shape)}, B {list(b.shape)}: does not fit rank {rank} "
                f"and the base weight {list(weight.shape)}",
            )
        merged[weight_key] = weight + (b @ a) * scaling
    return merged
