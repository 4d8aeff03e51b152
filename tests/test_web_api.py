"""The voice studio's HTTP API over real TCP (aiohttp's test server and client) with the real
engine, store and checks on the tiny fixture models. Bad input must come back as a clear JSON
message naming the field, with nothing half-written on disk."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile
import torch
import yaml
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from clip_data import encode, speechlike
from voice_data import make_tiny_data_dir
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.web.actions import StudioActions
from wyoming_gsv.web.app import STATIC_DIR, create_app
from wyoming_gsv.web.security import access_middleware
from wyoming_gsv.web.settings import INGRESS_GATEWAY, PAGE_HEADER, TOKEN_COOKIE, TOKEN_HEADER, WebSettings

TRANSCRIPT = "This is a reference voice."
READY_TIMEOUT = 120.0


@pytest.fixture(scope="module")
def runtime(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    torch.set_num_threads(1)
    data_dir = make_tiny_data_dir(tmp_path_factory.mktemp("web-data"), unpacked_v2)
    runtime = Runtime(RuntimeSettings(data_dir=data_dir, threads=1, use_fallback=False))
    runtime.start()
    yield runtime
    _wait_for_builds(runtime)
    runtime.close()


def _wait_for_builds(runtime: Runtime, timeout: float = READY_TIMEOUT) -> None:
    """Let background bundle builds finish: a process that exits while torch runs on the engine
    thread aborts instead of ending."""
    studio = StudioActions(runtime, WebSettings()).studio
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        v.status == "building" or any(s.status == "building" for s in v.styles) for v in studio.voices()
    ):
        time.sleep(0.2)


async def _client(runtime: Runtime, settings: WebSettings) -> TestClient:
    app = create_app(StudioActions(runtime, settings), settings)
    client = TestClient(TestServer(app, host="127.0.0.1"), headers={PAGE_HEADER: "1"})  # as the page sends
    await client.start_server()
    return client


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[TestClient]:
    client = await _client(runtime, WebSettings(port=0))
    yield client
    await client.close()


@pytest.fixture
def clip(unpacked_v2: dict[str, Path]) -> bytes:
    return unpacked_v2["ref_wav"].read_bytes()


def _voices_dir(runtime: Runtime) -> Path:
    return runtime.settings.data_dir / "voices"


def _upload_dir(runtime: Runtime) -> Path:
    return runtime.settings.data_dir / "cache" / "uploads"


def _snapshot(runtime: Runtime) -> dict[str, tuple[int, int]]:
    """Every file under voices/ (with size and mtime): what a refused request must leave alone."""
    return {
        str(p.relative_to(_voices_dir(runtime))): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(_voices_dir(runtime).rglob("*"))
        if p.is_file()
    }


def _voice_form(voice_id: str, clip: bytes, **fields: str | bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    values: dict[str, str | bytes] = {"id": voice_id, "transcript": TRANSCRIPT, "language": "en", "consent": "1"}
    values.update(fields)
    for name, value in values.items():
        if isinstance(value, bytes):
            form.add_field(name, value, filename=f"{name}.bin", content_type="application/octet-stream")
        else:
            form.add_field(name, value)
    form.add_field("clip", clip, filename="upload.bin", content_type="application/octet-stream")
    return form


async def _wait_ready(client: TestClient, voice_id: str) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        voices = {v["id"]: v for v in (await (await client.get("api/voices")).json())["voices"]}
        voice = voices.get(voice_id)
        assert voice is not None, f"{voice_id} is not listed: {sorted(voices)}"
        assert voice["status"] != "unusable", voice["reason"]
        if voice["status"] == "ready" and all(s["status"] == "ready" for s in voice["styles"]):
            return voice
        await asyncio.sleep(0.2)
    raise AssertionError(f"{voice_id} did not become ready")


# ----------------------------------------------------------------------------- page and access
async def test_page_works_under_a_path_prefix_and_offline(client: TestClient) -> None:
    """Ingress serves the page below /api/hassio_ingress/<token>/: every URL must be relative, and
    nothing may come from another host (the page works offline)."""
    page = await client.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    html = await page.text()
    script = (STATIC_DIR / "app.js").read_text()
    style = (STATIC_DIR / "style.css").read_text()
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert referenced and all(not url.startswith(("/", "http:", "https:", "//")) for url in referenced), referenced
    for url in referenced:
        response = await client.get(url)
        assert response.status == 200, url
    api_paths = re.findall(r'(?:api\(\s*"[A-Z]+",\s*|fetch\()[`"]([^`"]+)', script)
    assert api_paths and all(path.startswith("api/") for path in api_paths), api_paths
    for text in (html, script, style):
        assert not re.search(r"https?://", text), "the page must not load anything from the network"


async def test_token_is_required_by_header_or_cookie(runtime: Runtime) -> None:
    client = await _client(runtime, WebSettings(port=0, token="s3cret"))
    try:
        assert (await client.get("/")).status == 200  # the page itself holds nothing private
        refused = await client.get("api/voices")
        assert refused.status == 401 and (await refused.json())["field"] == "token"
        assert (await client.get("api/voices", headers={TOKEN_HEADER: "wrong"})).status == 401
        assert (await client.get("api/voices", headers={TOKEN_HEADER: "s3cret"})).status == 200
        assert (await client.get("api/voices", cookies={TOKEN_COOKIE: "s3cret"})).status == 200
    finally:
        await client.close()


async def test_other_websites_cannot_change_voices(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    """A cross-site form post carries no custom header (sending one needs a CORS preflight, which the
    studio never grants): changes without the page's header are refused."""
    before = _snapshot(runtime)
    async with aiohttp.ClientSession() as foreign:  # no X-Studio-Page header
        url = f"http://127.0.0.1:{client.port}/api/voices"
        response = await foreign.post(url, data=_voice_form("forged", clip))
        assert response.status == 403 and PAGE_HEADER in (await response.json())["error"]
        assert (await foreign.delete(url + "/tiny")).status == 403
        assert (await foreign.options(url, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})).headers.get("Access-Control-Allow-Origin") is None
    assert _snapshot(runtime) == before


@pytest.mark.parametrize(
    ("remote", "admitted"),
    [(INGRESS_GATEWAY, True), ("127.0.0.1", True), ("::1", True), ("192.168.1.20", False), ("172.30.32.3", False)],
)
async def test_add_on_admits_only_the_ingress_gateway_and_loopback(remote: str, admitted: bool) -> None:
    async def handler(request):
        return aiohttp.web.Response(text="ok")

    middleware = access_middleware(WebSettings(host="0.0.0.0", ingress_only=True))
    request = make_mocked_request("GET", "/api/voices", transport=_transport_from(remote))
    response = await middleware(request, handler)
    assert (response.status == 200) is admitted


def _transport_from(remote: str):
    class Transport:
        def get_extra_info(self, name: str, default=None):
            return (remote, 40000) if name == "peername" else default

        def is_closing(self) -> bool:
            return False

    return Transport()


# ----------------------------------------------------------------------------- listing and checks
async def test_voices_list_ready_and_unusable_with_the_cli_reason(client: TestClient, runtime: Runtime) -> None:
    tiny = await _wait_ready(client, "tiny")
    assert tiny["language"] == "en" and tiny["model_version"] == "v2"
    assert set(tiny["params"]) >= {"top_k", "top_p", "temperature", "repetition_penalty", "speed", "noise_scale", "seed"}
    voices = {v["id"]: v for v in (await (await client.get("api/voices")).json())["voices"]}
    assert voices["broken"]["status"] == "unusable"
    assert voices["broken"]["reason"] == runtime.registry.problems()["broken"]


async def test_check_reports_the_clip_with_a_waveform(client: TestClient, clip: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("clip", clip, filename="x.bin")
    form.add_field("transcript", TRANSCRIPT)
    response = await client.post("api/check", data=form)
    report = await response.json()
    assert response.status == 200, report
    info = soundfile.info(__import__("io").BytesIO(clip))
    assert report["duration"] == pytest.approx(info.duration, abs=0.01)
    assert report["sample_rate"] == info.samplerate and report["channels"] == 1
    assert report["verdict"] in ("good", "usable") and report["proposed_window"] is None
    assert 100 <= len(report["waveform"]) <= 800 and max(report["waveform"]) == 1.0


async def test_check_proposes_a_window_for_a_long_clip(client: TestClient) -> None:
    audio = speechlike(25.0, 32000, pauses=((0.0, 9.0),))  # silent start: the window is later
    form = aiohttp.FormData()
    form.add_field("clip", encode(audio, 32000, "FLAC"), filename="long.wav")
    report = await (await client.post("api/check", data=form)).json()
    start, end = report["proposed_window"]["start"], report["proposed_window"]["end"]
    assert 3.0 <= end - start <= 10.0 and start >= 8.0


def _one_hour_flac() -> bytes:
    """An hour at 16 kHz: small as FLAC (quiet), so it passes the upload limit and meets the length check."""
    import io

    buffer = io.BytesIO()
    block = (0.01 * np.sin(np.arange(16000 * 60) * 0.05)).astype(np.float32)
    with soundfile.SoundFile(buffer, "w", 16000, 1, format="FLAC") as out:
        for _ in range(60):
            out.write(block)
    return buffer.getvalue()


def _truncated_wav(clip: bytes) -> bytes:
    return clip[: len(clip) // 3]


# ----------------------------------------------------------------------------- bad input
BAD_CLIPS = {
    "not audio": (lambda clip: b"<html>this is not audio</html>" * 40, "clip"),
    "empty": (lambda clip: b"", "clip"),
    "truncated": (lambda clip: clip[:60], "clip"),
    "one hour": (lambda clip: _one_hour_flac(), "clip"),
}


@pytest.mark.parametrize("case", list(BAD_CLIPS))
async def test_bad_clips_are_refused_with_a_message_and_nothing_written(
    client: TestClient, runtime: Runtime, clip: bytes, case: str
) -> None:
    make, field = BAD_CLIPS[case]
    before = _snapshot(runtime)
    response = await client.post("api/voices", data=_voice_form("newvoice", make(clip)))
    body = await response.json()
    assert response.status == 400, body
    assert body["field"] == field and len(body["error"]) > 10, body
    assert _snapshot(runtime) == before
    assert not list(_upload_dir(runtime).iterdir())


@pytest.mark.parametrize("voice_id", ["a/b", "..", "x" * 300, "", ".hidden"])
async def test_bad_voice_ids_are_refused(client: TestClient, runtime: Runtime, clip: bytes, voice_id: str) -> None:
    before = _snapshot(runtime)
    response = await client.post("api/voices", data=_voice_form(voice_id, clip))
    body = await response.json()
    assert response.status == 400 and body["field"] == "id", body
    assert _snapshot(runtime) == before
    assert sorted(p.name for p in runtime.settings.data_dir.iterdir()) == ["cache", "models", "voices"]


async def test_consent_is_required(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    response = await client.post("api/voices", data=_voice_form("noconsent", clip, consent=""))
    body = await response.json()
    assert response.status == 400 and body["field"] == "consent" and "permission" in body["error"]
    assert not (_voices_dir(runtime) / "noconsent").exists()


async def test_gpt_file_given_as_sovits_is_refused(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    tuned = runtime.settings.data_dir / "models" / "tuned"
    tuned.mkdir(exist_ok=True)
    gpt_upload = (runtime.settings.data_dir / "models" / "gpt.ckpt").read_bytes()
    (tuned / "anna-e15.ckpt").write_bytes(gpt_upload)  # a fine-tuned GPT file the user put there
    before = _snapshot(runtime)
    assert "models/tuned/anna-e15.ckpt" in (await (await client.get("api/models")).json())["gpt"]
    for fields in ({"sovits_path": "models/tuned/anna-e15.ckpt"}, {"sovits": gpt_upload}):
        response = await client.post("api/voices", data=_voice_form("wrongmodel", clip, **fields))
        body = await response.json()
        assert response.status == 400 and body["field"] == "sovits", body
        assert "GPT" in body["error"], body
    assert _snapshot(runtime) == before


async def test_upload_over_the_size_limit_is_refused(runtime: Runtime, clip: bytes) -> None:
    client = await _client(runtime, WebSettings(port=0, max_upload_bytes=len(clip) // 2))
    try:
        before = _snapshot(runtime)
        response = await client.post("api/voices", data=_voice_form("big", clip))
        body = await response.json()
        assert response.status == 413 and "size limit" in body["error"], body
        assert _snapshot(runtime) == before
        assert not list(_upload_dir(runtime).iterdir())
    finally:
        await client.close()


async def test_a_browser_that_disconnects_mid_upload_leaves_nothing(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    before = _snapshot(runtime)
    boundary = "studio-boundary"
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"id\"\r\n\r\ncut\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"consent\"\r\n\r\n1\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"clip\"; filename=\"a.wav\"\r\n"
        "Content-Type: audio/wav\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(
        (
            f"POST /api/voices HTTP/1.1\r\nHost: 127.0.0.1\r\n{PAGE_HEADER}: 1\r\n"
            f"Content-Length: {len(head) + len(clip) + 100}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        + head
        + clip[: len(clip) // 2]
    )
    await writer.drain()
    await asyncio.sleep(0.5)  # the server is streaming the clip to its temp folder now
    writer.transport.abort()
    deadline = time.monotonic() + 10
    while list(_upload_dir(runtime).iterdir()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not list(_upload_dir(runtime).iterdir())
    assert _snapshot(runtime) == before
    assert (await client.get("api/voices")).status == 200  # still serving


async def test_two_browsers_saving_the_same_id(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    first, second = await asyncio.gather(
        client.post("api/voices", data=_voice_form("twice", clip, description="first")),
        client.post("api/voices", data=_voice_form("twice", clip, description="second")),
    )
    statuses = sorted([first.status, second.status])
    assert statuses == [201, 409], statuses
    loser = first if first.status == 409 else second
    body = await loser.json()
    assert body["code"] == "exists" and body["field"] == "id"
    voice = await _wait_ready(client, "twice")  # one whole voice, not a mix
    assert voice["description"] in ("first", "second")
    replaced = await client.post("api/voices", data=_voice_form("twice", clip, description="third", overwrite="1"))
    assert replaced.status == 201 and (await replaced.json())["description"] == "third"
    assert (await client.delete("api/voices/twice")).status == 200


# ----------------------------------------------------------------------------- a voice's life
async def _preview(client: TestClient, voice_id: str, **query: str) -> tuple[int, list[bytes]]:
    """(sample rate, the response body as it arrived, piece by piece)."""
    response = await client.get(f"api/voices/{voice_id}/preview", params=query)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "audio/wav"
    pieces = [piece async for piece in response.content.iter_any()]
    body = b"".join(pieces)
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    return struct.unpack("<I", body[24:28])[0], pieces


async def test_add_preview_tune_style_rename_delete(client: TestClient, runtime: Runtime, clip: bytes) -> None:
    created = await client.post("api/voices", data=_voice_form("anna", clip, description="Anna"))
    body = await created.json()
    assert created.status == 201, body
    assert body["id"] == "anna" and body["status"] in ("building", "ready")
    voice = await _wait_ready(client, "anna")
    assert voice["description"] == "Anna" and voice["transcript"] == TRANSCRIPT

    rate, pieces = await _preview(client, "anna", text="Hello there. How are you today? This is the last one.", top_k="1")
    assert rate == 32000 and len(b"".join(pieces)) > 44 + 2 * rate // 10
    first_take = b"".join(pieces)
    again = b"".join((await _preview(client, "anna", text="Hello there. How are you today? This is the last one.", top_k="1", seed="7"))[1])
    assert len(again) > 44

    bad = await client.get("api/voices/anna/preview", params={"text": "Hello.", "temperature": "-1"})
    assert bad.status == 400 and "temperature" in (await bad.json())["error"]
    empty = await client.get("api/voices/anna/preview", params={"text": "  "})
    assert empty.status == 400 and (await empty.json())["field"] == "text"

    saved = await client.put("api/voices/anna/params", json={"top_k": 3, "temperature": 0.8, "seed": 11})
    assert saved.status == 200, await saved.text()
    config = yaml.safe_load((_voices_dir(runtime) / "anna" / "voice.yaml").read_text())
    assert config["top_k"] == 3 and config["temperature"] == 0.8 and config["seed"] == 11
    assert (await saved.json())["params"]["top_k"] == 3
    refused = await client.put("api/voices/anna/params", json={"top_k": 0})
    assert refused.status == 400 and (await refused.json())["field"] == "top_k"
    assert yaml.safe_load((_voices_dir(runtime) / "anna" / "voice.yaml").read_text())["top_k"] == 3

    bad_style = aiohttp.FormData()
    for name, value in (("style", "../up"), ("transcript", TRANSCRIPT)):
        bad_style.add_field(name, value)
    bad_style.add_field("clip", clip, filename="style.bin")
    refused_style = await client.post("api/voices/anna/styles", data=bad_style)
    assert refused_style.status == 400 and (await refused_style.json())["field"] == "style"
    assert not (_voices_dir(runtime) / "anna" / "styles").exists() and not (_voices_dir(runtime) / "up").exists()

    style = aiohttp.FormData()
    style.add_field("style", "cheerful")
    style.add_field("transcript", TRANSCRIPT)
    style.add_field("clip", clip, filename="style.bin")
    added = await client.post("api/voices/anna/styles", data=style)
    assert added.status == 201, await added.text()
    voice = await _wait_ready(client, "anna")
    assert [s["name"] for s in voice["styles"]] == ["cheerful"]
    _rate, styled = await _preview(client, "anna", text="Hello there.", style="cheerful")
    assert len(b"".join(styled)) > 44
    unknown = await client.get("api/voices/anna/preview", params={"text": "Hello.", "style": "angry"})
    assert unknown.status == 400 and "angry" in (await unknown.json())["error"]

    renamed = await client.patch("api/voices/anna", json={"new_id": "anna2", "description": "Anna, renamed"})
    assert renamed.status == 200, await renamed.text()
    assert not (_voices_dir(runtime) / "anna").exists()
    voice = await _wait_ready(client, "anna2")
    assert voice["description"] == "Anna, renamed" and [s["name"] for s in voice["styles"]] == ["cheerful"]

    assert (await client.delete("api/voices/anna2/styles/cheerful")).status == 200
    assert (await _wait_ready(client, "anna2"))["styles"] == []
    assert (await client.delete("api/voices/anna2")).status == 200
    assert not (_voices_dir(runtime) / "anna2").exists()
    gone = await client.delete("api/voices/anna2")
    assert gone.status in (400, 404) and (await gone.json())["error"]
    assert first_take  # the preview streamed real audio


async def test_voices_list_carries_the_background_model_download(client: TestClient, runtime: Runtime,
                                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--fetch-models (the add-on's `models`): the page shows the download's progress beside the voices."""
    from wyoming_gsv.download import Downloader, ModelFetcher

    assert (await (await client.get("api/voices")).json())["models_download"] is None
    fetcher = ModelFetcher(Downloader(tmp_path / "models", endpoint="http://127.0.0.1:9"), "v2", nltk=False)
    monkeypatch.setattr(runtime, "model_fetcher", fetcher)  # never started: no request leaves
    download = (await (await client.get("api/voices")).json())["models_download"]
    assert download["version"] == "v2" and download["state"] == "starting"
    assert {f["path"] for f in download["files"]} == set(fetcher.files)
