"""Precomputed reference side of a voice (VoiceBundle) and its disk cache under DIR/cache/."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from .models import ModelPaths, file_identity
from .voice import Voice

_LOGGER = logging.getLogger(__name__)

# Bump when the bundle's contents or the way they are computed change.
BUNDLE_FORMAT_VERSION = 2
_EXTRA_PREFIX = "extra."


@dataclass
class VoiceBundle:
    """Everything that depends only on the reference side of a voice."""

    prompt_codes: torch.Tensor  # int64 [T]: prompt semantic tokens (HuBERT -> ssl_proj -> codebook)
    prompt_phones: torch.Tensor  # int64 [P]: phone ids of the transcript
    prompt_bert: torch.Tensor  # float [D, P]: BERT features of the transcript (zeros for non-zh)
    ge: torch.Tensor  # reference global embedding(s), as the SoVITS model returns it
    extras: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. v2Pro speaker embedding

    def __post_init__(self) -> None:
        if self.prompt_codes.dim() != 1 or self.prompt_codes.dtype != torch.int64:
            raise ValueError(f"prompt_codes must be int64 [T], got {self.prompt_codes.dtype} {list(self.prompt_codes.shape)}")
        if self.prompt_phones.dim() != 1 or self.prompt_phones.dtype != torch.int64:
            raise ValueError(f"prompt_phones must be int64 [P], got {self.prompt_phones.dtype} {list(self.prompt_phones.shape)}")
        if self.prompt_bert.dim() != 2 or self.prompt_bert.shape[1] != self.prompt_phones.shape[0]:
            raise ValueError(
                f"prompt_bert must be [D, {self.prompt_phones.shape[0]}], got {list(self.prompt_bert.shape)}"
            )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "VoiceBundle":
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, dtype) if (dtype is not None and t.is_floating_point()) else t.to(device)

        return VoiceBundle(
            prompt_codes=move(self.prompt_codes),
            prompt_phones=move(self.prompt_phones),
            prompt_bert=move(self.prompt_bert),
            ge=move(self.ge),
            extras={k: move(v) for k, v in self.extras.items()},
        )

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "prompt_codes": self.prompt_codes,
            "prompt_phones": self.prompt_phones,
            "prompt_bert": self.prompt_bert,
            "ge": self.ge,
        }
        tensors.update({_EXTRA_PREFIX + k: v for k, v in self.extras.items()})
        return {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "VoiceBundle":
        missing = {"prompt_codes", "prompt_phones", "prompt_bert", "ge"} - set(tensors)
        if missing:
            raise ValueError(f"missing tensors {sorted(missing)}")
        return cls(
            prompt_codes=tensors["prompt_codes"],
            prompt_phones=tensors["prompt_phones"],
            prompt_bert=tensors["prompt_bert"],
            ge=tensors["ge"],
            extras={k[len(_EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(_EXTRA_PREFIX)},
        )


def bundle_key(voice: Voice, models: ModelPaths, extra: Mapping[str, str] | None = None) -> str:
    """Hash of every input a bundle depends on (audio bytes, transcript, languages, model files)."""
    inputs = {
        "format": BUNDLE_FORMAT_VERSION,
        "reference": _file_sha256(voice.reference.path),
        "aux_references": [_file_sha256(ref.path) for ref in voice.aux_references],
        "transcript": voice.transcript,
        "prompt_language": voice.prompt_language,
        "gpt": file_identity(voice.gpt),
        "sovits": file_identity(voice.sovits),
        "hubert": file_identity(models.hubert),
        "bert": file_identity(models.bert),
        "sv": file_identity(models.sv),
        "extra": dict(sorted((extra or {}).items())),
    }
    if voice.style is not None:  # only then: keys of plain voices stay as they were
        inputs["style"] = voice.style
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hash of every tensor's name, dtype, shape and bytes (safetensors itself checks none)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# A temp file this old is not being written any more (a bundle is written in well under a second).
ABANDONED_TEMP_SECONDS = 600.0


class BundleCache:
    """`DIR/cache/<voice>.<key>.safetensors`; atomic writes; checksummed; anything unreadable or
    damaged is rebuilt."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir

    def remove_abandoned_temp_files(self, older_than: float = ABANDONED_TEMP_SECONDS) -> list[Path]:
        """Temp files (`.<voice>.*.tmp`) a killed process left behind; called at start. Recent
        ones may belong to another process writing now (e.g. `wyoming-gsv voices`), so they stay."""
        removed = []
        now = time.time()
        for path in self.cache_dir.glob(".*.tmp") if self.cache_dir.is_dir() else []:
            try:
                if now - path.stat().st_mtime >= older_than:
                    path.unlink()
                    removed.append(path)
            except OSError:
                pass  # gone meanwhile, or a read-only cache
        if removed:
            _LOGGER.info("Removed %d temp file(s) left in %s by an interrupted write", len(removed), self.cache_dir)
        return removed

    def path_for(self, voice_id: str, key: str) -> Path:
        return self.cache_dir / f"{voice_id}.{key[:32]}.safetensors"

    def load(self, voice_id: str, key: str) -> VoiceBundle | None:
        """The cached bundle for exactly this key, or None (missing, stale or corrupt)."""
        path = self.path_for(voice_id, key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
            if metadata.get("key") != key or metadata.get("format") != str(BUNDLE_FORMAT_VERSION):
                raise ValueError("key or format version does not match")
            if metadata.get("sha256") != tensors_sha256(tensors):
                raise ValueError("its tensors do not match their checksum (damaged file)")
            return VoiceBundle.from_tensors(tensors)
        except (SafetensorError, ValueError, OSError, RuntimeError, KeyError) as err:
            _LOGGER.warning("Voice bundle %s is unusable (%s); rebuilding it", path, err)
            try:
                path.unlink(missing_ok=True)
            except OSError:
                pass  # a read-only cache: the rebuilt bundle is kept in memory
            return None

    def save(self, voice_id: str, key: str, bundle: VoiceBundle) -> Path:
        """Write atomically (temp file + rename) and drop this voice's older bundles."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(voice_id, key)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{voice_id}.", suffix=".tmp", dir=self.cache_dir)
        os.close(fd)
        try:
            tensors = bundle.to_tensors()
            metadata = {"key": key, "format": str(BUNDLE_FORMAT_VERSION), "voice": voice_id, "sha256": tensors_sha256(tensors)}
            save_file(tensors, tmp_name, metadata=metadata)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        for stale in self.cache_dir.glob(f"{voice_id}.*.safetensors"):
            if stale != path and self._is_bundle_of(voice_id, stale):
                stale.unlink(missing_ok=True)
        return path

    @staticmethod
    def _is_bundle_of(voice_id: str, path: Path) -> bool:
        """`<voice_id>.<key>.safetensors` (keys have no dot): the glob also matches the bundles of
        voices whose id extends this one's after a dot ("anna" vs "anna.v2")."""
        key_part = path.name[len(voice_id) + 1 : -len(".safetensors")]
        return "." not in key_part

