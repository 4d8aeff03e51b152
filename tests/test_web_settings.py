"""The voice studio's command line: where it listens, and the token it needs off loopback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shipping import parse_cli
from voice_data import fake_model_files
from wyoming_gsv.__main__ import web_settings
from wyoming_gsv.synthesis.runtime import Runtime, RuntimeSettings
from wyoming_gsv.web.run import bound_port, start_studio
from wyoming_gsv.web.settings import DEFAULT_MAX_UPLOAD_MB, WebSettings, parse_web_address


def _serve(*flags: str):
    return parse_cli(["--data-dir", "/data", *flags])


def test_no_web_flag_no_page() -> None:
    assert web_settings(_serve()) is None


@pytest.mark.parametrize(
    ("flag", "host", "port"),
    [("8099", "127.0.0.1", 8099), ("127.0.0.1:9000", "127.0.0.1", 9000), ("[::1]:8099", "::1", 8099),
     ("localhost:8099", "localhost", 8099)],
)
def test_web_address_defaults_to_loopback(flag: str, host: str, port: int) -> None:
    settings = web_settings(_serve("--web", flag))
    assert (settings.host, settings.port) == (host, port)
    assert settings.token is None and not settings.ingress_only
    assert settings.max_upload_bytes == DEFAULT_MAX_UPLOAD_MB * 1024 * 1024


def test_off_loopback_needs_a_token_outside_the_add_on() -> None:
    with pytest.raises(AssertionError, match="--web 0.0.0.0:8099"):
        _serve("--web", "0.0.0.0:8099")
    assert web_settings(_serve("--web", "0.0.0.0:8099", "--web-token", "t0k3n")).token == "t0k3n"
    assert web_settings(_serve("--web", "0.0.0.0:8099", "--web-ingress")).ingress_only


@pytest.mark.parametrize("flag", ["http", "host:", "1.2.3.4:99999", "[::1]8099", ":8099"])
def test_bad_web_addresses_are_refused_at_start(flag: str) -> None:
    with pytest.raises(AssertionError):
        _serve("--web", flag)
    with pytest.raises(ValueError):
        parse_web_address(flag)


def test_upload_limit_flag() -> None:
    assert web_settings(_serve("--web", "8099", "--web-max-upload-mb", "5")).max_upload_bytes == 5 * 1024 * 1024
    with pytest.raises(AssertionError):
        _serve("--web", "8099", "--web-max-upload-mb", "0")


async def test_listening_off_loopback_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake_model_files(tmp_path)
    runtime = Runtime(RuntimeSettings(data_dir=tmp_path, use_fallback=False))
    with caplog.at_level(logging.WARNING, logger="wyoming_gsv.web"):
        runner = await start_studio(runtime, WebSettings(host="0.0.0.0", port=0, token="t0k3n"))
    try:
        assert bound_port(runner)
        assert any("reachable from the network" in record.message for record in caplog.records)
    finally:
        await runner.cleanup()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wyoming_gsv.web"):
        runner = await start_studio(runtime, WebSettings(host="127.0.0.1", port=0))
    await runner.cleanup()
    assert not caplog.records
