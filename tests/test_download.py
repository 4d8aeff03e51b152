"""`wyoming-gsv download` against a local stand-in for the Hugging Face hub (127.0.0.1 only).

The fake hub answers `HEAD/GET /{repo}/resolve/{revision}/{path}` the way the real one does: small
files directly with a git-sha1 ETag; large (LFS) files with a 302 to a "CDN" on another host
(127.0.0.2, so the client does not follow it for metadata), carrying `X-Linked-Etag` (sha256) and
`X-Linked-Size`; `X-Repo-Commit` everywhere; byte ranges honoured.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import huggingface_hub.constants
import pytest

from wyoming_gsv import download
from wyoming_gsv.download import PRETRAINED, Downloader, DownloadError, HubUnreachable, files_for_versions

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".bin", ".ckpt", ".pth", ".pt")


@dataclass
class FakeHub:
    files: dict[str, bytes]
    repo: str = download.HF_REPO
    corrupt: set[str] = field(default_factory=set)  # served with bytes that do not match their etag
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    url: str = ""
    cdn_url: str = ""

    def etag(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()

    def gets(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if r[0] == "GET"]


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    resolve = re.compile(rf"^/{re.escape(hub.repo)}/resolve/([^/]+)/(.+)$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(self.path)
            hub.requests.append((self.command, path, self.headers.get("Range")))
            if path.startswith("/cdn/"):
                return self._send_bytes(path.removeprefix("/cdn/"), body, headers={})
            match = resolve.match(path)
            name = match.group(2) if match else None
            if name not in hub.files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            common = {"X-Repo-Commit": COMMIT}
            if name.endswith(LFS_SUFFIXES):
                self.send_response(302)
                for key, value in common.items():
                    self.send_header(key, value)
                self.send_header("X-Linked-Etag", f'"{hub.etag(name)}"')
                self.send_header("X-Linked-Size", str(len(hub.files[name])))
                self.send_header("Location", f"{hub.cdn_url}/cdn/{name}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._send_bytes(name, body, headers={**common, "ETag": f'"{hub.etag(name)}"'})

        def _send_bytes(self, name: str, body: bool, headers: dict[str, str]) -> None:
            data = hub.files[name]
            if name in hub.corrupt:
                data = bytes(b ^ 0xFF for b in data)
            start = 0
            ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
            if ranged:
                start = int(ranged.group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if body:
                self.wfile.write(data[start:])

    return Handler


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest switches the hub client offline for the whole suite; these tests talk to 127.0.0.1."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture
def hub(online: None):
    names = files_for_versions(PRETRAINED)
    files = {name: hashlib.sha256(name.encode()).digest() * (40 + 7 * i) for i, name in enumerate(names)}
    fake = FakeHub(files=files)
    servers = [ThreadingHTTPServer((host, 0), _handler(fake)) for host in ("127.0.0.1", "127.0.0.2")]
    fake.url, fake.cdn_url = (f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers)
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield fake
    for server in servers:
        server.shutdown()
        server.server_close()


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


def _closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"


def test_unreachable_hub_gives_a_clear_message(online: None, tmp_path: Path, capsys) -> None:
    assert _run_cli(tmp_path, _closed_port_url()) == 1
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
