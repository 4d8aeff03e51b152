"""`wyoming-gsv download` against a local stand-in for the Hugging Face hub (tests/fake_hub.py)."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub.constants
import pytest

from fake_hub import FakeHub, closed_port_url, hub, online  # noqa: F401 (fixtures)
from wyoming_gsv import download
from wyoming_gsv.download import PRETRAINED, Downloader, DownloadError, files_for_versions

def _run_cli(data_dir: Path, endpoint: str, *extra: str) -> int:
    return download.main(["--data-dir", str(data_dir), "--endpoint", endpoint, "--no-nltk", *extra])


def test_download_v2_places_every_file_and_is_idempotent(hub: FakeHub, tmp_path: Path, capsys) -> None:
    assert _run_cli(tmp_path, hub.url) == 0
    v2 = PRETRAINED["v2"]
    for rel in v2.files():
        assert (tmp_path / "models" / rel).read_bytes() == hub.files[rel]
    assert not (tmp_path / "models" / Path(PRETRAINED["v2Pro"].sovits).parent).exists()
    assert len(hub.gets()) == len(v2.files())
    # LFS files went through the redirect to the "CDN", small ones straight from /resolve/.
    assert any(path.startswith("/cdn/") for _, path, _ in hub.gets())

    hub.requests.clear()
    assert _run_cli(tmp_path, hub.url) == 0
    assert hub.gets() == []  # second run only asks for metadata
    assert "up to date" in capsys.readouterr().out


def test_several_versions_share_files(hub: FakeHub, tmp_path: Path) -> None:
    assert _run_cli(tmp_path, hub.url, "--version", "v2Pro", "v2ProPlus") == 0
    wanted = set(PRETRAINED["v2Pro"].files()) | set(PRETRAINED["v2ProPlus"].files())
    assert len(hub.gets()) == len(wanted)  # s1v3.ckpt, sv and the encoders fetched once
    assert (tmp_path / "models" / PRETRAINED["v2ProPlus"].sv).read_bytes() == hub.files[PRETRAINED["v2Pro"].sv]
    assert not (tmp_path / "models" / PRETRAINED["v2"].sovits).exists()


def test_v3_v4_fetch_their_base_and_vocoder_files_only(hub: FakeHub, tmp_path: Path) -> None:
    """v3/v4 LoRA fine-tunes need the pretrained SoVITS and the vocoder under upstream's names."""
    assert _run_cli(tmp_path, hub.url, "--version", "v3") == 0
    models = tmp_path / "models"
    for rel in ("s1v3.ckpt", "s2Gv3.pth", "models--nvidia--bigvgan_v2_24khz_100band_256x/config.json",
                "models--nvidia--bigvgan_v2_24khz_100band_256x/bigvgan_generator.pt"):
        assert (models / rel).read_bytes() == hub.files[rel]
    assert not (models / "gsv-v4-pretrained").exists()
    assert len(hub.gets()) == len(PRETRAINED["v3"].files())

    hub.requests.clear()
    assert _run_cli(tmp_path, hub.url, "--version", "v4") == 0
    for rel in ("gsv-v4-pretrained/s2Gv4.pth", "gsv-v4-pretrained/vocoder.pth"):
        assert (models / rel).read_bytes() == hub.files[rel]
    # Only v4's own files were fetched; the GPT and encoders shared with v3 were already verified.
    assert sorted(path.rsplit("/", 1)[-1] for _, path, _ in hub.gets()) == ["s2Gv4.pth", "vocoder.pth"]
    assert not (models / PRETRAINED["v2"].sovits).exists()


def test_partial_download_resumes_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    rel = PRETRAINED["v2"].sovits
    data = hub.files[rel]
    downloader = Downloader(tmp_path / "models", endpoint=hub.url)
    partial = downloader._partial_path(rel, hub.etag(rel))
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:100])

    result = downloader.fetch(rel)
    assert result.status == "downloaded"
    assert result.path.read_bytes() == data
    assert hub.gets() == [("GET", f"/cdn/{rel}", "bytes=100-")]
    assert not partial.exists()


def test_corrupt_transfer_is_rejected_and_not_installed(hub: FakeHub, tmp_path: Path) -> None:
    rel = PRETRAINED["v2"].gpt
    hub.corrupt.add(rel)
    downloader = Downloader(tmp_path / "models", endpoint=hub.url)
    with pytest.raises(DownloadError, match="failed verification"):
        downloader.fetch(rel)
    assert not (tmp_path / "models" / rel).exists()
    assert list((tmp_path / "models" / ".download").rglob("*.part")) == []


def test_small_file_checked_by_git_sha1(hub: FakeHub, tmp_path: Path) -> None:
    rel = f"{download.HUBERT_DIR}/config.json"
    hub.corrupt.add(rel)
    with pytest.raises(DownloadError, match="checksum"):
        Downloader(tmp_path / "models", endpoint=hub.url).fetch(rel)


def test_changed_local_file_is_replaced_and_copied_in_file_is_accepted(hub: FakeHub, tmp_path: Path) -> None:
    models = tmp_path / "models"
    rel, copied = PRETRAINED["v2"].gpt, PRETRAINED["v2"].sovits
    (models / rel).parent.mkdir(parents=True)
    (models / rel).write_bytes(b"not the model")
    (models / copied).write_bytes(hub.files[copied])  # e.g. taken from an upstream pretrained_models/

    downloader = Downloader(models, endpoint=hub.url)
    assert downloader.fetch(rel).status == "downloaded"
    assert (models / rel).read_bytes() == hub.files[rel]
    assert downloader.fetch(copied).status == "verified"
    assert downloader.fetch(copied).status == "up to date"
    assert [path for _, path, _ in hub.gets()] == [f"/cdn/{rel}"]


def test_missing_file_on_hub_names_it(hub: FakeHub, tmp_path: Path) -> None:
    del hub.files[PRETRAINED["v2"].gpt]
    with pytest.raises(DownloadError, match="404") as info:
        Downloader(tmp_path / "models", endpoint=hub.url).fetch(PRETRAINED["v2"].gpt)
    assert PRETRAINED["v2"].gpt in str(info.value)


def test_unreachable_hub_gives_a_clear_message(online: None, tmp_path: Path, capsys) -> None:
    assert _run_cli(tmp_path, closed_port_url()) == 1
    out = capsys.readouterr().out
    assert "cannot reach" in out and "copy the files by hand" in out
    assert "Traceback" not in out


def test_offline_mode_is_named_and_present_files_are_kept(tmp_path: Path, capsys) -> None:
    # conftest has HF_HUB_OFFLINE=1: the real setting a user would have on.
    assert huggingface_hub.constants.HF_HUB_OFFLINE
    assert _run_cli(tmp_path, "http://127.0.0.1:9") == 1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().out

    for rel in PRETRAINED["v2"].files():
        (tmp_path / "models" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "models" / rel).write_bytes(b"x")
    assert _run_cli(tmp_path, "http://127.0.0.1:9") == 0
    assert "unchecked" in capsys.readouterr().out


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        _run_cli(tmp_path, "http://127.0.0.1:9", "--version", "v9")
    with pytest.raises(DownloadError, match="v9"):
        files_for_versions(["v9"])


def test_file_table_is_consistent() -> None:
    for version, pretrained in PRETRAINED.items():
        assert pretrained.version == version
        files = pretrained.files()
        assert len(files) == len(set(files))
        assert pretrained.gpt.endswith(".ckpt") and pretrained.sovits.endswith(".pth")
        assert any(f.startswith(pretrained.hubert_dir + "/") and f.endswith("pytorch_model.bin") for f in files)
        assert any(f.startswith(pretrained.bert_dir + "/") and f.endswith("pytorch_model.bin") for f in files)
        assert (pretrained.sv is not None) == version.startswith("v2Pro")


def test_nltk_data_already_present_needs_no_network(fixtures_dir: Path) -> None:
    # conftest points NLTK_DATA at ../shared/nltk_data, which holds exactly what g2p_en needs.
    assert download.fetch_nltk_data() == []


# ----------------------------------------------------------------------------- in the background


def test_model_fetcher_reports_progress_and_completes(hub: FakeHub, tmp_path: Path, caplog) -> None:
    import json
    import logging

    done = []
    fetcher = download.ModelFetcher(
        Downloader(tmp_path / "models", endpoint=hub.url), "v2Pro", nltk=False, on_complete=lambda: done.append(1)
    )
    assert fetcher.status().state == "starting" and fetcher.status().percent is None
    with caplog.at_level(logging.INFO, logger="wyoming_gsv.download"):
        fetcher.start()
        assert fetcher.wait(60)
    status = fetcher.status()
    assert status.state == "done" and status.error is None and done == [1]
    assert [f.path for f in status.files] == list(PRETRAINED["v2Pro"].files())
    assert all(f.state == "downloaded" and f.done == f.size == len(hub.files[f.path]) for f in status.files)
    assert status.total_bytes == status.done_bytes == sum(len(hub.files[rel]) for rel in PRETRAINED["v2Pro"].files())
    assert status.percent == 100.0
    snapshot = json.loads(json.dumps(status.to_dict()))  # what a page gets
    assert snapshot["state"] == "done" and snapshot["percent"] == 100.0 and len(snapshot["files"]) == 9
    lines = [r.getMessage() for r in caplog.records]
    assert sum("downloaded and verified" in line for line in lines) == len(status.files)  # a line per file
    tenths = [line for line in lines if line.startswith("Models v2Pro: ") and "% (" in line]
    assert 1 <= len(tenths) <= 11 and tenths[-1].startswith("Models v2Pro: 100%")

    again = download.ModelFetcher(Downloader(tmp_path / "models", endpoint=hub.url), "v2Pro", nltk=False)
    hub.requests.clear()
    again.start()
    assert again.wait(60) and again.status().state == "done"
    assert hub.gets() == [] and {f.state for f in again.status().files} == {"up to date"}


def test_model_fetcher_waits_and_retries_when_the_hub_is_unreachable(online: None, tmp_path: Path) -> None:
    fetcher = download.ModelFetcher(
        Downloader(tmp_path / "models", endpoint=closed_port_url()), "v2", nltk=False, retry_delays=(30.0,)
    )
    fetcher.start()
    deadline = time.monotonic() + 30
    while fetcher.status().state != "waiting to retry":
        assert time.monotonic() < deadline, fetcher.status()
        time.sleep(0.05)
    status = fetcher.status()
    assert "cannot reach" in (status.error or "") and status.retry_at is not None and status.retry_at > time.time()
    fetcher.stop(timeout=5)
    assert fetcher.wait(5) and fetcher.status().state == "stopped"
