"""The Home Assistant add-on: every file parses, the s6 services are wired, options reach real CLI flags.

The s6 scripts are run for real with bash, against a stand-in for bashio (the add-on shell library)
and a stand-in `wyoming-gsv` that records its arguments; those arguments then go through the real
`wyoming-gsv` argument parser. The health check does a real describe round trip over TCP.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from wyoming.event import Event
from wyoming.info import Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler

import wyoming_gsv
from server_process import free_port
from shipping import ROOT, parse_cli

S6 = ROOT / "addon" / "rootfs" / "etc" / "s6-overlay" / "s6-rc.d"
HEALTHCHECK = ROOT / "addon" / "rootfs" / "usr" / "local" / "bin" / "wyoming-gsv-healthcheck"
BASH = shutil.which("bash")


def _yaml(name: str) -> dict:
    data = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{name} is not a mapping"
    return data


@pytest.fixture(scope="module")
def config() -> dict:
    return _yaml("config.yaml")


# ----------------------------------------------------------------------------- config.yaml & co.


def test_config_has_what_the_supervisor_requires(config: dict) -> None:
    for key in ("name", "version", "slug", "description", "arch"):
        assert config.get(key), f"config.yaml: {key} is required"
    assert config["version"] == wyoming_gsv.__version__
    assert re.fullmatch(r"[a-z0-9_]+", config["slug"])
    assert set(config["arch"]) <= {"amd64", "aarch64", "armv7", "armhf", "i386"}
    assert config["init"] is False  # s6-overlay v3 is the init
    assert config["discovery"] == ["wyoming"]
    assert {"addon_config:rw", "share"} <= set(config["map"])
    assert config["ports"] == {"10200/tcp": None}  # reached over the internal network by default


def _check_against_schema(key: str, value, schema: str) -> None:
    schema = schema.rstrip("?")
    if schema == "bool":
        assert isinstance(value, bool), key
    elif m := re.fullmatch(r"int(?:\((-?\d*),(-?\d*)\))?", schema):
        assert isinstance(value, int) and not isinstance(value, bool), key
        low, high = m.groups() if m.group(1) is not None else ("", "")
        assert (low == "" or value >= int(low)) and (high == "" or value <= int(high)), key
    elif m := re.fullmatch(r"float(?:\(([-\d.]*),([-\d.]*)\))?", schema):
        assert isinstance(value, (int, float)), key
    elif m := re.fullmatch(r"list\(([^)]+)\)", schema):
        assert value in m.group(1).split("|"), f"{key}: {value!r} not in {schema}"
    elif schema.startswith(("str", "match(", "url", "port", "password", "email")):
        assert isinstance(value, (str, int)), key
    else:
        raise AssertionError(f"{key}: unknown schema type {schema!r}")


def test_options_match_their_schema(config: dict) -> None:
    options, schema = config["options"], config["schema"]
    optional = {key for key, kind in schema.items() if kind.endswith("?")}
    assert set(options) == set(schema) - optional  # optional ones: the server's default applies
    assert {"models", "threads", "streaming", "max_chars", "log_level", "fallback", "fallback_on_error"} <= set(options)
    assert {"chunking", "chunk_tokens", "gpt_int8", "precision"} <= optional
    for key, value in options.items():
        _check_against_schema(key, value, schema[key])


def test_cpu_addon_fetches_v2pro_and_has_no_device_option(config: dict) -> None:
    """A `device: cuda` option on a CPU-only image could only end in a restart loop."""
    assert "device" not in config["schema"]
    assert config["options"]["models"] == "v2Pro"
    from wyoming_gsv.download import PRETRAINED

    # The v2 family: v3/v4 (a DiT per sentence) are 20-75x slower on a CPU, a GPU image's choice.
    cpu_versions = [version for version in PRETRAINED if version not in ("v3", "v4")]
    assert config["schema"]["models"] == f"list({'|'.join([*cpu_versions, 'none'])})"


def test_prebuilt_image_is_named_per_arch(config: dict) -> None:
    assert re.fullmatch(r"ghcr\.io/[a-z0-9-]+/\{arch\}-addon-wyoming-gsv", config["image"])


def test_build_config_covers_every_arch(config: dict) -> None:
    build = _yaml("build.yaml")
    assert set(build["build_from"]) == set(config["arch"])
    for arch, image in build["build_from"].items():
        assert arch in image and ":" in image, image


def test_translations_describe_every_option_and_port(config: dict) -> None:
    translations = sorted((ROOT / "translations").glob("*.yaml"))
    assert translations
    for path in translations:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert set(data["configuration"]) == set(config["schema"]), path.name
        for key, entry in data["configuration"].items():
            assert entry.get("name") and entry.get("description"), f"{path.name}: {key}"
        assert set(data["network"]) == set(config["ports"]), path.name


def test_repository_and_docs_exist() -> None:
    assert _yaml("repository.yaml").get("name")
    docs = (ROOT / "DOCS.md").read_text(encoding="utf-8")
    for option in _yaml("config.yaml")["schema"]:
        assert f"`{option}`" in docs, f"DOCS.md does not explain {option}"


# ----------------------------------------------------------------------------- s6 services


def _services() -> dict[str, Path]:
    return {path.name: path for path in S6.iterdir() if path.is_dir()}


def test_s6_services_are_wired() -> None:
    services = _services()
    assert {"wyoming-gsv", "discovery", "user"} <= set(services)
    for name, folder in services.items():
        if name == "user":  # the bundle itself comes with s6-overlay in the base image; we add contents
            continue
        kind = (folder / "type").read_text().strip()
        assert kind in {"longrun", "oneshot", "bundle"}, name
        if kind == "longrun":
            assert os.access(folder / "run", os.X_OK), f"{name}/run must be executable"
        if kind == "oneshot":
            up = (folder / "up").read_text().strip()
            target = ROOT / "addon" / "rootfs" / up.lstrip("/")
            assert target.is_file() and os.access(target, os.X_OK), f"{name}/up points at {up}"
        for dep in (folder / "dependencies.d").glob("*") if (folder / "dependencies.d").is_dir() else []:
            assert dep.name == "base" or dep.name in services, f"{name} depends on unknown {dep.name}"
    for entry in (services["user"] / "contents.d").iterdir():
        assert entry.name in services, f"user bundle lists unknown service {entry.name}"
    assert (services["discovery"] / "dependencies.d" / "wyoming-gsv").exists()


def _scripts() -> list[Path]:
    return [p for p in S6.rglob("*") if p.name in {"run", "finish"} and p.is_file()]


@pytest.mark.parametrize("script", _scripts(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_s6_scripts_are_valid_bash(script: Path) -> None:
    assert script.read_text().startswith("#!/command/with-contenv bashio\n")
    assert os.access(script, os.X_OK)
    result = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


FAKE_BASHIO = r"""
bashio::config() { printf '%s\n' "${OPTIONS[$1]}"; }
bashio::config.true() { [ "${OPTIONS[$1]}" = "true" ]; }
bashio::config.has_value() { [ -n "${OPTIONS[$1]:-}" ] && [ "${OPTIONS[$1]}" != "null" ]; }
bashio::log.info() { :; }
bashio::log.warning() { :; }
bashio::var.json() { printf '{"%s": "%s"}' "$1" "$2"; }
bashio::discovery() { printf '%s\n%s\n' "$1" "$2" > "$RECORD"; }
mkdir() { :; }
sleep() { :; }
hostname() { echo addon-host; }
bashio::addon.ingress_port() { printf '%s\n' "${INGRESS_PORT:-8099}"; }
"""


def _bash_options(options: dict) -> str:
    def text(value) -> str:
        return str(value).lower() if isinstance(value, bool) else str(value)

    pairs = " ".join(f"[{key}]={json.dumps(text(value))}" for key, value in options.items())
    return f"declare -A OPTIONS=({pairs})\n"


def _run_s6_script(script: Path, options: dict, tmp_path: Path, fake_programs: dict[str, str]) -> Path:
    """Source the script after the bashio stand-in; returns the file the stand-ins recorded into."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in fake_programs.items():
        program = bin_dir / name
        program.write_text(f"#!/bin/sh\n{body}\n")
        program.chmod(0o755)
    prelude = tmp_path / "bashio.sh"
    prelude.write_text(_bash_options(options) + FAKE_BASHIO)
    record = tmp_path / "record"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RECORD": str(record)}
    result = subprocess.run(
        [BASH, "-c", 'source "$1"; source "$2"', "_", str(prelude), str(script)],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return record


RECORD_ARGS = 'for a in "$@"; do printf "%s\\n" "$a"; done > "$RECORD"'


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"threads": 3, "streaming": False, "log_level": "debug", "fallback": False, "fallback_on_error": True,
         "models": "none", "max_chars": 500},
        {"models": "v2ProPlus", "chunking": "split", "chunk_tokens": 20, "gpt_int8": True, "precision": "bf16"},
    ],
    ids=["defaults", "changed", "low-latency"],
)
def test_run_script_options_map_onto_real_cli_flags(config: dict, tmp_path: Path, changes: dict) -> None:
    options = {**config["options"], **changes}
    record = _run_s6_script(S6 / "wyoming-gsv" / "run", options, tmp_path, {"wyoming-gsv": RECORD_ARGS})
    argv = record.read_text().splitlines()
    args = parse_cli(argv)

    assert args.command == "serve"
    assert args.uri == "tcp://0.0.0.0:10200"
    assert Path(args.data_dir) == Path("/config")
    assert args.device == "cpu"  # the parser's default: the CPU add-on never names a device
    assert "--device" not in argv
    assert args.fetch_models == (None if options["models"] == "none" else options["models"])
    assert args.allow_path == [Path("/share")]  # the add-on maps /share; voice files may live there
    assert (args.threads or 0) == options["threads"]
    assert args.no_streaming is not options["streaming"]
    assert args.max_chars == options["max_chars"]
    assert args.debug is (options["log_level"] == "debug")
    assert args.no_fallback is not options["fallback"]
    assert args.fallback_on_error is options["fallback_on_error"]
    # Optional options: only when set, else the server's own default.
    assert ("--chunking" in argv) is ("chunking" in options)
    assert args.chunking == options.get("chunking")
    assert ("--min-chunk-tokens" in argv) is ("chunk_tokens" in options)
    if "chunk_tokens" in options:
        assert args.min_chunk_tokens == options["chunk_tokens"]
    assert args.gpt_int8 is bool(options.get("gpt_int8"))
    assert args.precision == options.get("precision", "auto")


def test_config_puts_the_voice_studio_in_the_sidebar(config: dict) -> None:
    assert config["ingress"] is True
    assert isinstance(config["ingress_port"], int) and 1024 < config["ingress_port"] < 65536
    assert config["ingress_port"] != 10200  # the Wyoming port
    assert re.fullmatch(r"mdi:[a-z0-9-]+", config["panel_icon"])
    assert config["panel_title"]


def test_run_script_serves_the_studio_to_the_ingress_gateway_only(config: dict, tmp_path: Path) -> None:
    from wyoming_gsv.__main__ import web_settings

    record = _run_s6_script(S6 / "wyoming-gsv" / "run", config["options"], tmp_path, {"wyoming-gsv": RECORD_ARGS})
    web = web_settings(parse_cli(record.read_text().splitlines()))

    assert web.port == config["ingress_port"]
    assert web.host == "0.0.0.0"  # the gateway connects over the hassio network
    assert web.ingress_only and web.token is None
    assert web.admits("172.30.32.2") and web.admits("127.0.0.1") and web.admits("::1")
    assert not web.admits("192.168.1.20") and not web.admits("172.30.32.3")


def test_discovery_waits_for_describe_then_announces(tmp_path: Path) -> None:
    record = _run_s6_script(
        S6 / "discovery" / "run", {}, tmp_path, {"wyoming-gsv-healthcheck": "exit 0"}
    )
    service, payload = record.read_text().splitlines()
    assert service == "wyoming"
    assert json.loads(payload) == {"uri": "tcp://addon-host:10200"}


# ----------------------------------------------------------------------------- health check


class _DescribeOnly(AsyncEventHandler):
    def __init__(self, info: Info, *args) -> None:
        super().__init__(*args)
        self.info = info

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.info.event())
        return True


def _info(voices: list[TtsVoice]) -> Info:
    attribution = Attribution(name="test", url="")
    return Info(
        tts=[
            TtsProgram(
                name="gsv", attribution=attribution, installed=True, description=None,
                version=None, voices=voices,
            )
        ]
    )


def _voice(name: str) -> TtsVoice:
    return TtsVoice(
        name=name, attribution=Attribution(name="test", url=""), installed=True,
        description=None, version=None, languages=["en"],
    )


@pytest.fixture
def describe_server():
    """Start a Wyoming server answering describe with the given Info; yields a starter."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    servers = []

    def start(info: Info) -> int:
        async def serve() -> asyncio.AbstractServer:
            return await asyncio.start_server(
                lambda r, w: _DescribeOnly(info, r, w).run(), "127.0.0.1", 0
            )

        server = asyncio.run_coroutine_threadsafe(serve(), loop).result(10)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        loop.call_soon_threadsafe(server.close)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), "--port", str(port), "--timeout", "5"],
        capture_output=True, text=True, timeout=30,
    )


def test_healthcheck_passes_with_an_installed_voice(describe_server) -> None:
    result = _healthcheck(describe_server(_info([_voice("anna")])))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "anna" in result.stdout


def test_healthcheck_fails_without_a_voice(describe_server) -> None:
    result = _healthcheck(describe_server(_info([])))
    assert result.returncode == 1
    assert "no installed TTS voice" in result.stdout


def test_healthcheck_fails_when_nothing_listens() -> None:
    result = _healthcheck(free_port())  # a port nothing listens on
    assert result.returncode == 1
    assert "unhealthy" in result.stdout and "Traceback" not in result.stderr


def test_docs_name_the_fallback_voice_the_server_advertises() -> None:
    from wyoming_gsv.synthesis.fallback import FALLBACK_VOICE_NAME

    for name in ("README.md", "DOCS.md"):
        assert f"`{FALLBACK_VOICE_NAME}`" in (ROOT / name).read_text(encoding="utf-8"), name


def test_addon_streaming_and_length_options_follow_the_server(config: dict) -> None:
    """The add-on offers the server's chunking modes and does not refuse answers the server would speak."""
    from wyoming_gsv.synthesis.session import DEFAULT_MAX_CHARS
    from wyoming_gsv.voices.params import CHUNKING_MODES

    assert config["schema"]["chunking"] == f"list({'|'.join(CHUNKING_MODES)})?"
    assert config["options"]["max_chars"] == DEFAULT_MAX_CHARS
