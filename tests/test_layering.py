"""The package's import graph, read with `ast` (nothing is imported): layers depend downwards only,
`text` and `server` stay free of torch, and every third-party import is a declared dependency."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "wyoming_gsv"

# Top to bottom (architecture.md): a layer may import itself and the layers below it. `server`
# (Wyoming) and `web` (the voice studio page) are protocol layers side by side: neither imports the other.
LAYERS = ("__main__", ("server", "web"), "synthesis", "voices", "text", "gsv")
# Usable from any layer: the version string and the model-file fetcher (imports nothing of ours).
SHARED = ("", "download")
NO_TORCH = ("text", "server", "web")
_IMPORTING_CALLS = ("import_extra", "has_module", "find_spec", "import_module")


@dataclass(frozen=True)
class Import:
    source: Path  # the importing file
    line: int
    module: str  # absolute dotted name


def _package_of(path: Path) -> list[str]:
    """The dotted package a file's relative imports start from (for __init__.py: its own)."""
    return list(path.relative_to(ROOT).parts[:-1])


def _imports(path: Path) -> list[Import]:
    """Every import in the file, also those inside functions; relative ones made absolute."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = _package_of(path)
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append(Import(path, node.lineno, module))
    return found


def _all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in _imports(path)]


def _layer_of_file(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "" if parts == ("__init__",) else parts[0]


def _layer_of_module(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _level(layer: str) -> int:
    """Depth of a layer; layers that share a level may not import each other."""
    return next(depth for depth, entry in enumerate(LAYERS) if layer in (entry if isinstance(entry, tuple) else (entry,)))


def _where(imp: Import) -> str:
    return f"{imp.source.relative_to(ROOT)}:{imp.line} imports {imp.module}"


def test_relative_imports_resolve_to_package_modules() -> None:
    """Guards the resolver the other tests rely on: every internal import names a real file."""
    for imp in _all_imports():
        if imp.module.split(".")[0] != "wyoming_gsv":
            continue
        target = ROOT.joinpath(*imp.module.split("."))
        assert target.with_suffix(".py").is_file() or (target / "__init__.py").is_file(), _where(imp)


def test_layers_import_downwards_only() -> None:
    wrong = []
    for imp in _all_imports():
        if imp.module.split(".")[0] != "wyoming_gsv":
            continue
        layer, target = _layer_of_file(imp.source), _layer_of_module(imp.module)
        if target in SHARED or target == layer:
            continue
        if layer in SHARED or _level(target) <= _level(layer):
            wrong.append(_where(imp))
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


@pytest.mark.parametrize("layer", NO_TORCH)
def test_layer_never_imports_torch(layer: str) -> None:
    wrong = [
        _where(imp)
        for imp in _all_imports()
        if _layer_of_file(imp.source) == layer and imp.module.split(".")[0] == "torch"
    ]
    assert not wrong, f"{layer}/ must not import torch:\n" + "\n".join(wrong)


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normalized(re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]) for requirement in requirements}


def _third_party_imports() -> dict[str, list[Import]]:
    """Top-level third-party modules, also those named as a string to `import_extra`, `has_module`
    or `find_spec` (packages used for their data files)."""
    found: dict[str, list[Import]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        modules = [(imp.line, imp.module) for imp in _imports(path)]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in _IMPORTING_CALLS
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                modules.append((node.lineno, node.args[0].value))
        for line, module in modules:
            top = module.split(".")[0]
            if top and top not in sys.stdlib_module_names and top != "wyoming_gsv":
                found.setdefault(top, []).append(Import(path, line, module))
    return found


def test_every_third_party_import_is_declared() -> None:
    declared = _declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for module, imports in sorted(_third_party_imports().items()):
        candidates = {_normalized(dist) for dist in providers.get(module, [])} | {_normalized(module)}
        if not candidates & declared:
            undeclared.append(f"{module} ({_where(imports[0])})")
    assert not undeclared, "imported but not declared in pyproject.toml:\n" + "\n".join(undeclared)
