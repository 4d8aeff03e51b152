"""Modules that keep forms derived from their own parameters (resolved references, transposed or
transformed copies) and must drop them whenever the parameters may change."""

from __future__ import annotations

from typing import Any

from torch import nn


class DerivedFromParameters(nn.Module):
    """Base for such modules: `forget_derived` runs after every state dict load (its tensors may
    be new ones) and before every `.to()`/`.half()`/`.cuda()` (`_apply`), so the next use rebuilds
    from the parameters as they are. Subclasses implement `forget_derived`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_load_state_dict_post_hook(DerivedFromParameters._forget_after_load)

    def forget_derived(self) -> None:
        raise NotImplementedError

    @staticmethod
    def _forget_after_load(module: DerivedFromParameters, _incompatible_keys: Any) -> None:
        module.forget_derived()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> DerivedFromParameters:
        self.forget_derived()
        return super()._apply(fn, *args, **kwargs)
