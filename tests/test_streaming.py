"""Sub-sentence streaming against the official output, chunk by chunk (fixture e2e-stream-v2).

Each golden is one official `TTS.run` with api_v2's streaming_mode 2 (split near the mute
token) or 3 (fixed-length chunks): the server's own path (sentence splitter, engine, backend)
must emit the same chunks, silence included: same count, exactly the same lengths, int16 within
2 LSB (the fixture's documented tolerance).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import load_npz, unpack_xz
from wyoming_gsv.gsv.streaming import StreamingConfig, TokenChunker
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODE_TO_CHUNKING = {2: "split", 3: "fixed"}
TOLERANCE_LSB = 2


@pytest.fixture(scope="session")
def stream_fixture(fixtures_dir: Path) -> Path:
    path = fixtures_dir / "e2e-stream-v2"
    if not path.is_dir():
        pytest.skip("fixture e2e-stream-v2 not found")
    return path


@pytest.fixture(scope="session")
def stream_manifest(stream_fixture: Path) -> dict:
    return json.loads((stream_fixture / "manifest.json").read_text())


@pytest.fixture(scope="session")
def stream_data_dir(stream_fixture: Path, stream_manifest: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's data dir as a user has it: every file the manifest lists, `.xz` unpacked."""
    root = tmp_path_factory.mktemp("e2e-stream-v2") / "data"
    for name, entry in stream_manifest["files"].items():
        source = stream_fixture / "data" / entry["stored_as"]
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if entry["stored_as"].endswith(".xz") and not name.endswith(".xz"):
            unpack_xz(source, target)
        else:
            shutil.copy(source, target)
        # Files a moment old look "still being written" to the registry: keep the fixture's times.
        stat = source.stat()
        os.utime(target, (stat.st_atime, stat.st_mtime))
    return root


def streaming_goldens(stream_fixture: Path) -> list[str]:
    cases = json.loads((stream_fixture / "cases.json").read_text())
    names = []
    for case in cases["cases"]:
        for variant in cases["variants"]:
            if variant.get("streaming_mode") in MODE_TO_CHUNKING:
                names.append(f"{case['id']}__{variant['id']}")
    return names


def _golden_names() -> list[str]:
    from conftest import FIXTURES

    fixture = FIXTURES / "e2e-stream-v2"
    return streaming_goldens(fixture) if fixture.is_dir() else []


def _golden(stream_fixture: Path, name: str) -> tuple[dict, dict[str, np.ndarray]]:
    goldens = stream_fixture / "goldens"
    return json.loads((goldens / f"{name}.json").read_text()), load_npz(goldens / f"{name}.npz")


def _early_stop(manifest: dict) -> int:
    return 50 * int(manifest["t2s_config"]["data"]["max_sec"])


@pytest.mark.parametrize("name", _golden_names())
def test_token_chunks_match_upstream_yields(stream_fixture: Path, stream_manifest: dict, name: str) -> None:
    """The official generated tokens, fed one by one, are cut exactly where upstream yields."""
    meta, arrays = _golden(stream_fixture, name)
    request = meta["api_v2_request"]
    config = StreamingConfig(
        rule=MODE_TO_CHUNKING[request["streaming_mode"]],
        min_chunk_tokens=request["min_chunk_length"],
        overlap_tokens=request["overlap_length"],
    )
    similarity = torch.from_numpy(arrays["mute_emb_sim_matrix"]) if config.rule == "split" else None
    for index, sentence in enumerate(meta["sentences"]):
        chunker = TokenChunker(config, similarity, stop_after=_early_stop(stream_manifest) + 1)
        yields = []
        for token in arrays[f"sent{index}_generated"].tolist():
            chunk = chunker.add(token)
            if chunk is not None:
                yields.append((chunk, False))
        rest = chunker.finish()
        yields.append((rest, True))
        expected = [(y["tokens"] if y.get("tokens") else None, y["is_final"]) for y in sentence["token_yields"]]
        assert yields == expected


def _speak(
    data_dir: Path, voice: str, text: str, chunking: str, min_chunk: int, overlap: bool = False
) -> list[np.ndarray]:
    """The chunks the service emits; `overlap`: GPT and SoVITS on two workers (1 thread each)."""
    runtime = Runtime(
        RuntimeSettings(
            data_dir=data_dir,
            threads=2 if overlap else 1,
            overlap=overlap,
            use_fallback=False,
            param_overrides={"chunking": chunking, "min_chunk_tokens": min_chunk},
        )
    )
    runtime.start()

    async def collect() -> list[np.ndarray]:
        session = runtime.service.open_session(voice)
        session.feed(text)
        session.finish()
        return [speech.samples async for speech in session.speeches()]

    try:
        return asyncio.run(collect())
    finally:
        runtime.close()
        torch.set_num_threads(1)


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlap"])
@pytest.mark.parametrize("name", _golden_names())
def test_streamed_chunks_equal_the_official_ones(
    stream_fixture: Path, stream_data_dir: Path, name: str, overlap: bool
) -> None:
    """Serial, and with the GPT and SoVITS overlapping on two workers: the same chunks."""
    meta, arrays = _golden(stream_fixture, name)
    request = meta["api_v2_request"]
    voice = Path(request["ref_audio_path"]).parent.name
    chunks = _speak(
        stream_data_dir,
        voice,
        request["text"],
        MODE_TO_CHUNKING[request["streaming_mode"]],
        request["min_chunk_length"],
        overlap,
    )
    expected = [arrays[f"chunk{k:03d}"] for k in range(meta["n_chunks"])]
    assert [len(c) for c in chunks] == [len(c) for c in expected], [c["kind"] for c in meta["chunks"]]
    for k, (ours, official) in enumerate(zip(chunks, expected)):
        worst = int(np.abs(ours.astype(np.int32) - official.astype(np.int32)).max()) if len(ours) else 0
        assert worst <= TOLERANCE_LSB, f"chunk {k} ({meta['chunks'][k]['kind']}) differs by {worst} LSB"


@pytest.mark.parametrize("case", ["a_en_announce", "b_en_two", "c_zh_number"])
def test_whole_sentences_equal_the_official_non_streaming_output(
    stream_fixture: Path, stream_data_dir: Path, case: str
) -> None:
    """chunking 'sentence': upstream's default non-streaming run (parallel_infer), sentence and
    silence after it, equal within the same tolerance."""
    meta, arrays = _golden(stream_fixture, f"{case}__parallel")
    request = meta["inputs"]
    voice = Path(request["ref_audio_path"]).parent.name
    ours = np.concatenate(_speak(stream_data_dir, voice, request["text"], "sentence", 16, overlap=True))
    official = arrays["audio"]
    assert ours.shape == official.shape
    assert int(np.abs(ours.astype(np.int32) - official.astype(np.int32)).max()) <= TOLERANCE_LSB
