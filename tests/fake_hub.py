"""A local stand-in for the Hugging Face hub (127.0.0.1 only), for the download tests.

The fake hub answers `HEAD/GET /{repo}/resolve/{revision}/{path}` the way the real one does: small
files directly with a git-sha1 ETag; large (LFS) files with a 302 to a "CDN" on another host
(127.0.0.2, so the client does not follow it for metadata), carrying `X-Linked-Etag` (sha256) and
`X-Linked-Size`; `X-Repo-Commit` everywhere; byte ranges honoured. `hold` makes the CDN stop in the
middle of a file until `release` is set (a download caught in progress).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator
from urllib.parse import unquote

import huggingface_hub.constants
import pytest

from wyoming_gsv import download
from wyoming_gsv.download import PRETRAINED, files_for_versions

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".bin", ".ckpt", ".pth")


@dataclass
class FakeHub:
    files: dict[str, bytes]
    repo: str = download.HF_REPO
    corrupt: set[str] = field(default_factory=set)  # served with bytes that do not match their etag
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    hold: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before waiting for release
    release: threading.Event = field(default_factory=threading.Event)
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
            try:
                self._answer(body=True)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client went away mid-file (a test stops it there on purpose)

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
            if not body:
                return
            held = hub.hold.get(name)
            if held is not None and start < held and not hub.release.is_set():
                self.wfile.write(data[start:held])
                self.wfile.flush()
                hub.release.wait()
                start = held
            self.wfile.write(data[start:])

    return Handler


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """conftest switches the hub client offline for the whole suite; these tests talk to 127.0.0.1."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def serve_hub(files: dict[str, bytes]) -> Iterator[FakeHub]:
    """Run a fake hub holding `files` on 127.0.0.1 (the CDN on 127.0.0.2) until the generator ends."""
    fake = FakeHub(files=files)
    servers = [ThreadingHTTPServer((host, 0), _handler(fake)) for host in ("127.0.0.1", "127.0.0.2")]
    for server in servers:
        server.daemon_threads = True
    fake.url, fake.cdn_url = (f"http://{s.server_address[0]}:{s.server_address[1]}" for s in servers)
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield fake
    finally:
        fake.release.set()
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def hub(online: None) -> Iterator[FakeHub]:
    """Every official file (all versions), as distinct made-up bytes."""
    names = files_for_versions(PRETRAINED)
    yield from serve_hub({name: hashlib.sha256(name.encode()).digest() * (40 + 7 * i) for i, name in enumerate(names)})


def closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"
