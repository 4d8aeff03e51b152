"""The gsv-v3v4 fixture as a user has it on disk: the official files unpacked into upstream's
`pretrained_models/` layout, plus what the manifest says about each of them."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import unpack_xz

BIGVGAN_DIR = "pretrained_models/models--nvidia--bigvgan_v2_24khz_100band_256x"
BASE_FILES = {"v3": "pretrained_models/s2Gv3.pth", "v4": "pretrained_models/gsv-v4-pretrained/s2Gv4.pth"}
LORA_FILES = {"v3": "s2_lora_v3.pth", "v4": "s2_lora_v4.pth"}
VOCODERS = {"v3": BIGVGAN_DIR, "v4": "pretrained_models/gsv-v4-pretrained/vocoder.pth"}


@dataclass(frozen=True)
class V3V4Files:
    source: Path  # the fixture folder (goldens, wavs)
    root: Path  # unpacked copy: root/pretrained_models/... and root/s2_lora_*.pth
    manifest: dict

    @property
    def pretrained(self) -> Path:
        return self.root / "pretrained_models"

    def base(self, version: str) -> Path:
        return self.root / BASE_FILES[version]

    def lora(self, version: str) -> Path:
        return self.root / LORA_FILES[version]

    def vocoder(self, version: str) -> Path:
        return self.root / VOCODERS[version]

    def golden(self, name: str) -> Path:
        return self.source / name

    def extra_hashes(self) -> dict[str, tuple[str, str, bool]]:
        """The fixture files' md5s as the generator added them to upstream's pretrained table."""
        return {
            entry["md5_first_8192"]: tuple(entry["get_sovits_version_from_path_fast"])
            for name, entry in self.manifest["version_detection"].items()
            if not entry["get_sovits_version_from_path_fast"][2]  # the pretrained (non-LoRA) files
        }


def unpack_v3v4(source: Path, root: Path) -> V3V4Files:
    for packed in sorted(source.rglob("*.xz")):
        rel = packed.relative_to(source)
        unpack_xz(packed, root / rel.with_suffix(""))
    config = source / BIGVGAN_DIR / "config.json"
    (root / BIGVGAN_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy(config, root / BIGVGAN_DIR / "config.json")
    manifest = json.loads((source / "manifest.json").read_text())
    return V3V4Files(source=source, root=root, manifest=manifest)
