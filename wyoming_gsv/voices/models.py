"""Where the base model files live: `DIR/models/...` unless overridden on the command line.

The default GPT/SoVITS pair is looked up again at every voice rescan (`ModelPaths.refreshed`), so
models installed, replaced or completed while the server runs are used without a restart. A file
still being written (a copy or download in progress) is "not ready" rather than broken.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..download import BERT_DIR as BERT_FOLDER
from ..download import PRETRAINED, is_recorded_as_verified
from ..download import HUBERT_DIR as HUBERT_FOLDER

# Simple names a user may give a single default pair, after the official ones.
SIMPLE_GPT_NAME = "gpt.ckpt"
SIMPLE_SOVITS_NAME = "sovits.pth"
# The speaker-verification model v2Pro/v2ProPlus voices need.
SV_NAME = PRETRAINED["v2Pro"].sv or "sv/pretrained_eres2netv2w24s4ep4.ckpt"
# A file changed less than this long ago may still be being written (cp, Samba, a download):
# it is not loaded yet. A longer stall is caught when the file fails to load, and retried when
# it changes again.
SETTLE_SECONDS = 2.0
HUBERT_FILES = ("config.json", "preprocessor_config.json")
BERT_FILES = ("config.json",)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def default_pair_names(prefer: str | None = None) -> list[tuple[str, str]]:
    """(gpt, sovits) names under `models/` in the order they are tried: the preferred version's
    official files, the other versions', then gpt.ckpt + sovits.pth."""
    versions = sorted(PRETRAINED, key=lambda version: version != prefer)
    pairs = [(PRETRAINED[v].gpt, PRETRAINED[v].sovits) for v in versions]
    return list(dict.fromkeys([*pairs, (SIMPLE_GPT_NAME, SIMPLE_SOVITS_NAME)]))


@dataclass(frozen=True)
class _Request:
    """What `resolve` was asked, so the default pair can be looked up again."""

    hubert: Path | None
    bert: Path | None
    gpt: Path | None
    sovits: Path | None
    sv: Path | None
    prefer: str | None


@dataclass(frozen=True)
class ModelPaths:
    """Base models shared by every voice; gpt/sovits are defaults a voice.yaml may replace."""

    data_dir: Path
    hubert: Path
    bert: Path
    gpt: Path | None
    sovits: Path | None
    sv: Path  # speaker verification (v2Pro family); only read when such a voice is used
    # Where the default gpt/sovits were looked for (for the message when there is none).
    gpt_looked_for: tuple[Path, ...] = ()
    sovits_looked_for: tuple[Path, ...] = ()
    # Folders besides the data dir that files named by a voice may resolve into (--allow-path).
    allowed_roots: tuple[Path, ...] = ()
    request: _Request | None = field(default=None, compare=False, repr=False)

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
        prefer: str | None = None,
        allowed_roots: tuple[Path, ...] = (),
    ) -> "ModelPaths":
        """`prefer`: the model version whose official GPT/SoVITS pair is the default when
        several versions are installed (e.g. the one being downloaded)."""
        models = data_dir / "models"
        default_gpt, default_sovits = _default_pair(models, prefer)
        pairs = default_pair_names(prefer)
        return cls(
            data_dir=data_dir,
            hubert=hubert or models / HUBERT_FOLDER,
            bert=bert or models / BERT_FOLDER,
            gpt=gpt or default_gpt,
            sovits=sovits or default_sovits,
            sv=sv or models / SV_NAME,
            gpt_looked_for=tuple(dict.fromkeys(models / gpt for gpt, _ in pairs)) if default_gpt is None else (),
            sovits_looked_for=tuple(dict.fromkeys(models / sv for _, sv in pairs)) if default_sovits is None else (),
            allowed_roots=tuple(allowed_roots),
            request=_Request(hubert, bert, gpt, sovits, sv, prefer),
        )

    def refreshed(self) -> "ModelPaths":
        """Looked up again now (a few stat calls): picks up default models installed since."""
        if self.request is None:
            return self
        r = self.request
        fresh = ModelPaths.resolve(
            self.data_dir, hubert=r.hubert, bert=r.bert, gpt=r.gpt, sovits=r.sovits, sv=r.sv, prefer=r.prefer,
            allowed_roots=self.allowed_roots,
        )
        return self if fresh == self else replace(fresh, request=r)

    def root_of(self, path: Path) -> Path | None:
        """The data dir or allowed root that `path` lies in once symlinks are resolved, or None."""
        resolved = path.resolve()
        for root in (self.data_dir, *self.allowed_roots):
            if resolved.is_relative_to(root.resolve()):
                return root
        return None

    def base_files(self) -> list[Path]:
        """The shared files whose change (installed, replaced, completed) makes voices re-read."""
        files = [*_folder_files(self.hubert), *_folder_files(self.bert), self.sv]
        return files + [p for p in (self.gpt, self.sovits) if p is not None]

    def base_model_problem(self) -> tuple[Path, str, bool] | None:
        """(file, problem, not_ready) for HuBERT or BERT when missing or still being written."""
        for folder, what, needed in ((self.hubert, "HuBERT", HUBERT_FILES), (self.bert, "BERT", BERT_FILES)):
            for name in needed:
                if not (folder / name).is_file():
                    return folder / name, f"{what} model file not found", False
            if not any((folder / name).is_file() for name in WEIGHT_FILES):
                return folder / WEIGHT_FILES[-1], f"{what} model file not found", False
            for path in _folder_files(folder):
                waiting = unsettled_for(path, self.data_dir)
                if waiting is not None:
                    return path, waiting, True
        return None


def _default_pair(models: Path, prefer: str | None) -> tuple[Path | None, Path | None]:
    """The first complete (gpt, sovits) pair; else each on its own (so the message names what is
    missing); else a single loose *.ckpt / *.pth, which is unambiguous."""
    pairs = default_pair_names(prefer)
    for gpt, sovits in pairs:
        if (models / gpt).is_file() and (models / sovits).is_file():
            return models / gpt, models / sovits
    gpt = next((models / g for g, _ in pairs if (models / g).is_file()), None) or _single(models, "*.ckpt")
    sovits = next((models / s for _, s in pairs if (models / s).is_file()), None) or _single(models, "*.pth")
    return gpt, sovits


def _single(folder: Path, pattern: str) -> Path | None:
    loose = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return loose[0] if len(loose) == 1 else None


def _folder_files(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    except OSError:
        return [path]


def unsettled_for(path: Path, data_dir: Path, now: float | None = None) -> str | None:
    """None when `path` looks complete; else why it is not loaded yet (it changed moments ago
    and no verified download accounts for it)."""
    try:
        stat = path.stat()
    except OSError:
        return None  # missing: the caller reports that
    age = (time.time() if now is None else now) - stat.st_mtime
    if age >= SETTLE_SECONDS or age < -SETTLE_SECONDS:  # far-future mtimes (clock skew) count as settled
        return None
    try:
        rel = path.relative_to(data_dir / "models").as_posix()
    except ValueError:
        rel = None
    if rel is not None and is_recorded_as_verified(data_dir / "models", rel):
        return None
    return f"still being written (changed in the last {SETTLE_SECONDS:g} s); used once it stops changing"


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
