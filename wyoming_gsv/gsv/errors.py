"""The one exception type the model layer raises for unusable model files."""

from __future__ import annotations

from pathlib import Path


class ModelFileError(Exception):
    """A model file or folder cannot be used; names the file and what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
