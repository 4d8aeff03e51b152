"""Loading transformers model folders (HuBERT, BERT) strictly from local files, with our errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, TypeVar

import torch

from .errors import ModelFileError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

ModelT = TypeVar("ModelT", bound=torch.nn.Module)


def check_model_folder(path: Path, what: str) -> None:
    """A transformers folder must exist and hold a readable config.json and weights."""
    if not path.is_dir():
        raise ModelFileError(path, f"{what} folder does not exist")
    config = path / "config.json"
    if not config.is_file():
        raise ModelFileError(path, f"{what} folder has no config.json")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(config, f"{what} config.json is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ModelFileError(config, f"{what} config.json is not a JSON object")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise ModelFileError(path, f"{what} folder has no weights ({' or '.join(WEIGHT_FILES)})")


def load_pretrained(
    load: Callable[..., tuple[ModelT, dict]],
    path: Path,
    what: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    needed: Callable[[str], bool] = lambda key: True,
) -> ModelT:
    """Call a `from_pretrained` offline and refuse weights that leave needed parameters unset;
    returns the model on `device` in `dtype`, in eval mode, without gradients.

    transformers only warns when the config asks for layers the weights lack (they would be
    randomly initialised); `needed` says which missing keys matter.
    """
    try:
        model, info = load(str(path), local_files_only=True, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # transformers raises many types for an unusable folder
        raise ModelFileError(path, f"cannot load {what} model ({exc})") from exc
    missing = sorted(key for key in info.get("missing_keys", ()) if needed(key))
    if missing:
        shown = ", ".join(missing[:4]) + (f" (+{len(missing) - 4} more)" if len(missing) > 4 else "")
        raise ModelFileError(path, f"{what} weights do not fit its config.json: missing {shown}")
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
