"""Where the base model files live: `DIR/models/...` unless overridden on the command line."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..download import BERT_DIR as BERT_FOLDER
from ..download import DEFAULT_VERSION, PRETRAINED
from ..download import HUBERT_DIR as HUBERT_FOLDER

# The official pretrained files as `wyoming-gsv download` lays them out, then simple names.
DEFAULT_GPT_NAMES = (PRETRAINED[DEFAULT_VERSION].gpt, "gpt.ckpt")
DEFAULT_SOVITS_NAMES = (PRETRAINED[DEFAULT_VERSION].sovits, "sovits.pth")
# The speaker-verification model v2Pro/v2ProPlus voices need.
SV_NAME = PRETRAINED["v2Pro"].sv or "sv/pretrained_eres2netv2w24s4ep4.ckpt"


@dataclass(frozen=True)
class ModelPaths:
    """Base models shared by every voice; gpt/sovits are defaults a voice.yaml may replace."""

    data_dir: Path
    hubert: Path
    bert: Path
    gpt: Path | None
    sovits: Path | None
    sv: Path  # speaker verification (v2Pro family); only read when such a voice is used
    # Folders besides the data dir that files named by a voice may resolve into (--allow-path).
    allowed_roots: tuple[Path, ...] = ()

    @classmethod
    def resolve(
        cls,
        data_dir: Path,
        *,
        hubert: Path | None = None,
        bert: Path | None = None,
        gpt: Path | None = None,
        sovits: Path | None = None,
        sv: Path | None = None,
        allowed_roots: tuple[Path, ...] = (),
    ) -> "ModelPaths":
        models = data_dir / "models"
        return cls(
            data_dir=data_dir,
            hubert=hubert or models / HUBERT_FOLDER,
            bert=bert or models / BERT_FOLDER,
            gpt=gpt or _first_existing(models, DEFAULT_GPT_NAMES, "*.ckpt"),
            sovits=sovits or _first_existing(models, DEFAULT_SOVITS_NAMES, "*.pth"),
            sv=sv or models / SV_NAME,
            allowed_roots=tuple(allowed_roots),
        )

    def root_of(self, path: Path) -> Path | None:
        """The data dir or allowed root that `path` lies in once symlinks are resolved, or None."""
        resolved = path.resolve()
        for root in (self.data_dir, *self.allowed_roots):
            if resolved.is_relative_to(root.resolve()):
                return root
        return None


def _first_existing(folder: Path, names: tuple[str, ...], pattern: str) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    # A single loose file of the right kind is unambiguous.
    loose = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return loose[0] if len(loose) == 1 else None


def file_identity(path: Path) -> str:
    """A cheap identity of a model file or folder: resolved path, sizes and mtimes.

    Hashing multi-hundred-MB weights on every start is too slow; any replacement of the
    file changes its size or mtime.
    """
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode())
    entries = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for entry in entries:
        try:
            stat = entry.stat()
        except OSError:
            digest.update(f"{entry}:missing".encode())
            continue
        digest.update(f"{entry.relative_to(path.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
