"""Optional per-language packages: import them on demand, or say which extra to install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType


class MissingExtraError(ImportError):
    """A language frontend needs a package from an optional extra that is not installed."""

    def __init__(self, language: str, extra: str, module: str) -> None:
        self.language = language
        self.extra = extra
        self.module = module
        super().__init__(
            f"the {language} text frontend needs the Python module {module!r}, "
            f"which is not installed; install it with: pip install 'wyoming-gsv[{extra}]'"
        )


def import_extra(module: str, *, language: str, extra: str) -> ModuleType:
    """Import ``module`` or raise ``MissingExtraError`` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        # Only a missing `module` (or a parent package) means the extra is absent; any other
        # import failure inside an installed package is a real bug and must surface as is.
        missing = getattr(exc, "name", None) or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise MissingExtraError(language, extra, module) from exc
        raise


def has_module(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a parent is missing, or the module is blocked in sys.modules
        return False
