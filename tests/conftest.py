"""Shared test setup: where the fixtures live and the offline environment the frontend needs."""

from __future__ import annotations

import json
import lzma
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
NLTK_DATA = SHARED / "nltk_data"
OPEN_JTALK_DICT = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")

# Nothing may reach the network: hub lookups are off, and NLTK reads the shared data only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if NLTK_DATA.is_dir():
    os.environ.setdefault("NLTK_DATA", str(NLTK_DATA))
if OPEN_JTALK_DICT.is_dir():
    os.environ.setdefault("OPEN_JTALK_DICT_DIR", str(OPEN_JTALK_DICT))


def _require(path: Path) -> Path:
    """Skip only where the shared folder is absent; in CI it is always present."""
    if not path.exists():
        if os.environ.get("CI"):
            raise FileNotFoundError(f"{path} is missing in CI; ../shared must sit beside the checkout")
        pytest.skip(f"fixture {path} not found (../shared is not beside this checkout)")
    return path


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return _require(FIXTURES)


@pytest.fixture(scope="session")
def v2_tiny(fixtures_dir: Path) -> Path:
    return _require(fixtures_dir / "gsv-v2-tiny")


@pytest.fixture(scope="session")
def v2pro_tiny(fixtures_dir: Path) -> Path:
    return _require(fixtures_dir / "gsv-v2pro-tiny")


@pytest.fixture(scope="session")
def text_v2(fixtures_dir: Path) -> Path:
    return _require(fixtures_dir / "text-v2")


def fixture_manifest(folder: Path) -> dict:
    """A fixture set's manifest.json: the facts that vary between sets made by the same generator."""
    return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))


def reference_clip(folder: Path) -> Path:
    """The set's reference clip (its name varies: manifest `config.ref_wav`, or top-level `ref_wav`)."""
    manifest = fixture_manifest(folder)
    return folder / (manifest.get("ref_wav") or manifest["config"]["ref_wav"])


def speed_goldens(folder: Path) -> list[tuple[str, float]]:
    """(golden array name, speed) for each speed of the set: 1.25 -> `audio_speed125`."""
    return [(f"audio_speed{str(speed).replace('.', '')}", speed) for speed in fixture_manifest(folder)["config"]["speeds"]]


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a golden `.npz` file, read at once (the file is closed again)."""
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data dir with placeholder base models: enough to scan voices, not to speak (modules that
    speak define their own `data_dir` with the tiny fixture models)."""
    from voice_data import fake_model_files

    fake_model_files(tmp_path)
    return tmp_path


@pytest.fixture
def models(data_dir: Path):
    """The base model paths of `data_dir`."""
    from wyoming_gsv.voices import ModelPaths

    return ModelPaths.resolve(data_dir)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a test module (the CI machine has two cores, shared), then restored.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    from wyoming_gsv.gsv.t2s import intra_op_threads  # only the model tests pay for importing torch

    with intra_op_threads(1):
        yield


def unpack_xz(src: Path, dst: Path) -> Path:
    """Decompress a fixture's `.xz` file to `dst` (once per session directory)."""
    if not dst.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(dst.suffix + ".part")
        with lzma.open(src) as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        shutil.copystat(src, tmp)  # as installed long ago: a fresh model file may still be being written
        tmp.rename(dst)
    return dst


@pytest.fixture(scope="session")
def unpacked_v2(v2_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny v2 model files as a user would have them on disk (xz removed)."""
    root = tmp_path_factory.mktemp("gsv-v2-tiny")
    hubert = root / "hubert_tiny"
    hubert.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy2(v2_tiny / "hubert_tiny" / name, hubert / name)
    unpack_xz(v2_tiny / "hubert_tiny" / "pytorch_model.bin.xz", hubert / "pytorch_model.bin")
    return {
        "gpt": v2_tiny / "s1_tiny_v2.ckpt",
        "sovits": unpack_xz(v2_tiny / "s2_tiny_v2.pth.xz", root / "s2_tiny_v2.pth"),
        "hubert": hubert,
        "bert": v2_tiny / "bert_tiny",
        "ref_wav": reference_clip(v2_tiny),
    }


@pytest.fixture(scope="session")
def v3v4(fixtures_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The gsv-v3v4 set unpacked into upstream's layout (see tests/v3v4_fixture.py)."""
    from v3v4_fixture import unpack_v3v4

    return unpack_v3v4(_require(fixtures_dir / "gsv-v3v4"), tmp_path_factory.mktemp("gsv-v3v4"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow", action="store_true", default=os.environ.get("WYOMING_GSV_SLOW") == "1",
        help="also run the long full-size parity checks (v3/v4 decode B and batched P: minutes each)",
    )


@pytest.fixture
def slow_enabled(request: pytest.FixtureRequest) -> None:
    """For tests that take minutes on a 2-core CPU: run with --slow (or WYOMING_GSV_SLOW=1)."""
    if not request.config.getoption("--slow"):
        pytest.skip("long full-size check: run with --slow (see tests/test_sovits_v3.py)")
