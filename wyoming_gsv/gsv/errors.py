"""The one exception type the model layer raises for unusable model files, and the weights check
that raises it for a state dict which does not fit its model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class ModelFileError(Exception):
    """A model file or folder cannot be used; names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def check_weights(path: str | Path, what: str, state: Mapping[str, Any], expected: Mapping[str, Any]) -> None:
    """Refuse a state dict that lacks a tensor of `expected` (a module's state dict) or holds one
    of another shape: a file for another model or another config. Extra tensors are allowed."""
    missing = [name for name in expected if name not in state]
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise ModelFileError(path, f"{what} weights are missing {len(missing)} tensors: {shown}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise ModelFileError(
                path, f"{what} weight {name} has shape {tuple(state[name].shape)}, the model expects {tuple(tensor.shape)}"
            )
