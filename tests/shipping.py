"""Helpers shared by the add-on and Docker tests: the repository's files and the real CLI parser."""

from __future__ import annotations

import argparse
import importlib
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse like `wyoming-gsv ARGV` does (wyoming_gsv/__main__.py, `serve` when no command is named).

    argparse errors become an AssertionError naming the arguments.
    """
    main = importlib.import_module("wyoming_gsv.__main__")
    try:
        return main.parse_args(argv)
    except SystemExit as err:
        raise AssertionError(f"wyoming-gsv rejects: {shlex.join(argv)}") from err


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        instructions.append((keyword.upper(), " ".join(rest.split())))
    assert not pending, f"{path}: dangling line continuation"
    return instructions
