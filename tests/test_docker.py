"""The Docker build recipes (add-on CPU image, GPU image, compose example), checked by parsing them.

There is no Docker engine here; these tests check what a build would rely on: the files it copies
exist and pass .dockerignore, torch is pinned the same everywhere and installed before the package,
the offline data paths are set, the health check exists, and every command line parses with the
real `wyoming-gsv` parser.
"""

from __future__ import annotations

import fnmatch
import importlib.machinery
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
import yaml

from shipping import ROOT, dockerfile_instructions, parse_cli
from wyoming_gsv.download import NLTK_PACKAGES

DOCKERFILES = ("Dockerfile", "Dockerfile.gpu")
JDIC = "/var/lib/mecab/dic/open-jtalk/naist-jdic"


def _args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    """ARG defaults (the last one wins, as in a build)."""
    defaults = {}
    for keyword, rest in instructions:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            defaults[name] = default
    return defaults


def _runs(instructions: list[tuple[str, str]]) -> list[str]:
    return [rest for keyword, rest in instructions if keyword == "RUN"]


def _env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern decides; `!` re-includes."""
    ignored = False
    for pattern in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = pattern.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [path, *(str(Path(*Path(path).parts[: i + 1])) for i in range(len(Path(path).parts)))]
        if any(fnmatch.fnmatch(c, pattern) or fnmatch.fnmatch(c, pattern.removeprefix("**/")) for c in candidates):
            ignored = not negate
    return ignored


@pytest.fixture(scope="module", params=DOCKERFILES)
def dockerfile(request) -> tuple[str, list[tuple[str, str]]]:
    return request.param, dockerfile_instructions(ROOT / request.param)


def test_copied_files_exist_and_reach_the_build(dockerfile) -> None:
    name, instructions = dockerfile
    copies = [rest.split()[:-1] for keyword, rest in instructions if keyword == "COPY"]
    assert copies, name
    for sources in copies:
        for source in sources:
            assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
            assert not _dockerignored(source), f"{name}: COPY {source} is excluded by .dockerignore"


def test_torch_is_pinned_and_installed_first_in_its_own_call(dockerfile) -> None:
    name, instructions = dockerfile
    runs = _runs(instructions)
    torch_runs = [i for i, run in enumerate(runs) if re.search(r"pip install \"torch==", run)]
    package_runs = [i for i, run in enumerate(runs) if 'pip install ".[all]"' in run]
    assert torch_runs and package_runs, name
    assert torch_runs[0] < package_runs[0], f"{name}: torch must be installed before the package"
    torch_call = re.search(r"pip install \"torch==[^&]*", runs[torch_runs[0]]).group(0)
    assert ".[" not in torch_call, f"{name}: torch needs its own pip call"
    setup_pin = re.search(r"torch==([\d.]+)", (ROOT / "script" / "setup").read_text()).group(1)
    assert _args(instructions)["TORCH_VERSION"] == setup_pin, f"{name}: torch pin differs from script/setup"


def test_offline_data_is_baked_in(dockerfile) -> None:
    name, instructions = dockerfile
    env = _env(instructions)
    assert env["OPEN_JTALK_DICT_DIR"] == JDIC
    runs = " ".join(_runs(instructions))
    assert "open-jtalk-mecab-naist-jdic" in runs
    assert env.get("NLTK_DATA")
    fetched = re.search(r"nltk\.downloader -d \S+ ([\w ]+)", runs).group(1).split()
    assert sorted(fetched) == sorted(package for package, _ in NLTK_PACKAGES)


def test_idle_openmp_threads_sleep(dockerfile) -> None:
    name, instructions = dockerfile
    assert _env(instructions).get("OMP_WAIT_POLICY") == "PASSIVE", name


def test_healthcheck_probes_the_served_port_within_dockers_timeout(dockerfile) -> None:
    """The HEALTHCHECK command, parsed by the health check's own parser, asks the port the image's
    server listens on, and gives up before Docker kills it."""
    name, instructions = dockerfile
    checks = [rest for keyword, rest in instructions if keyword == "HEALTHCHECK"]
    assert len(checks) == 1, name
    options, _, command = checks[0].partition(" CMD ")
    argv = shlex.split(command)
    assert shutil.which(argv[0], path=str(HEALTHCHECK.parent)) == str(HEALTHCHECK), f"{name}: {argv[0]} is not shipped"
    check = _healthcheck_parser().parse_args(argv[1:])
    assert check.port == urlparse(_served_uri(name, instructions)).port
    docker_timeout = re.search(r"--timeout=(\d+)s", options)
    assert docker_timeout and check.timeout < int(docker_timeout.group(1)), f"{name}: Docker would kill the check first"
    assert _env(instructions)["PATH"].startswith("/usr/src/.venv/bin:")  # the check's python has wyoming


HEALTHCHECK = ROOT / "addon" / "rootfs" / "usr" / "local" / "bin" / "wyoming-gsv-healthcheck"


def _healthcheck_parser():
    loader = importlib.machinery.SourceFileLoader("wyoming_gsv_healthcheck", str(HEALTHCHECK))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module.build_parser()


def _served_uri(name: str, instructions: list[tuple[str, str]]) -> str:
    """The --uri the image's server runs with: its CMD, or (the add-on image) the s6 run script's."""
    commands = [rest for keyword, rest in instructions if keyword == "CMD"]
    if commands:
        argv = json.loads(commands[-1])
        if ("ENTRYPOINT", '["gpu-entrypoint"]') in instructions:  # it adds the serving defaults
            with tempfile.TemporaryDirectory() as tmp:
                argv = _entrypoint_argv(Path(tmp), argv)
        return parse_cli(argv).uri
    run_script = (ROOT / "addon/rootfs/etc/s6-overlay/s6-rc.d/wyoming-gsv/run").read_text()
    exec_line = next(line for line in run_script.splitlines() if line.startswith("exec wyoming-gsv "))
    return parse_cli([arg for arg in shlex.split(exec_line)[2:] if not arg.startswith("${")]).uri


def test_addon_image_builds_from_build_yaml_on_cpu_torch() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    build = yaml.safe_load((ROOT / "build.yaml").read_text())
    args = _args(instructions)
    assert instructions[0][0] == "ARG" and ("FROM", "${BUILD_FROM}") in instructions
    assert args["BUILD_FROM"] == build["build_from"]["amd64"]
    assert args["TORCH_VERSION"] == build["args"]["TORCH_VERSION"]
    assert args["TORCH_INDEX_URL"] == build["args"]["TORCH_INDEX_URL"]
    assert args["TORCH_INDEX_URL"].endswith("/cpu")
    # Debian bookworm ships Python 3.11, which pyproject accepts and every dependency has wheels for.
    assert all(image.endswith(":bookworm") for image in build["build_from"].values())
    assert ("COPY", "addon/rootfs /") in instructions


def _entrypoint_argv(tmp_path: Path, args: list[str]) -> list[str]:
    """What the GPU image's entry point hands `wyoming-gsv` for `docker run IMAGE ARGS`."""
    fake = tmp_path / "bin" / "wyoming-gsv"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > "$RECORD"\n')
    fake.chmod(0o755)
    record = tmp_path / "record"
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "RECORD": str(record)}
    subprocess.run(["sh", str(ROOT / "docker" / "gpu-entrypoint"), *args], env=env, check=True, timeout=30)
    return record.read_text().splitlines()


def test_gpu_image_runs_the_server_on_cuda(tmp_path: Path) -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile.gpu")
    base = next(rest for keyword, rest in instructions if keyword == "FROM")
    assert re.fullmatch(r"python:3\.11[\w.-]*", base)
    assert "/cpu" not in _args(instructions).get("TORCH_INDEX_URL", "")
    entrypoint = json.loads(next(rest for keyword, rest in instructions if keyword == "ENTRYPOINT"))
    command = json.loads(next(rest for keyword, rest in instructions if keyword == "CMD"))
    assert entrypoint == ["gpu-entrypoint"] and os.access(ROOT / "docker" / "gpu-entrypoint", os.X_OK)
    assert ("VOLUME", "/data") in instructions
    # torch.compile (the decode layers on CUDA) needs a C compiler at run time: kept, not purged.
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert "build-essential" in runs
    assert not re.search(r"apt-get (purge|remove)[^&]*\b(build-essential|gcc)\b", runs)

    args = parse_cli(_entrypoint_argv(tmp_path, command))  # plain `docker run IMAGE`
    assert args.command == "serve" and args.device == "cuda" and args.zeroconf
    assert args.uri == "tcp://0.0.0.0:10200" and str(args.data_dir) == "/data"
    # `docker run ... IMAGE --fetch-models v2ProPlus` is the whole setup; a flag given again wins.
    args = parse_cli(_entrypoint_argv(tmp_path, ["--fetch-models", "v2ProPlus", "--device", "cuda:1"]))
    assert args.fetch_models == "v2ProPlus" and args.device == "cuda:1" and str(args.data_dir) == "/data"
    # The documented one-off download goes through as it is.
    assert _entrypoint_argv(tmp_path, ["download", "--data-dir", "/data"]) == ["download", "--data-dir", "/data"]


def _gpu_image_command(tmp_path: Path) -> list[str]:
    """What a plain `docker run IMAGE` runs: the entry point applied to CMD."""
    instructions = dockerfile_instructions(ROOT / "Dockerfile.gpu")
    return _entrypoint_argv(tmp_path, json.loads(next(rest for keyword, rest in instructions if keyword == "CMD")))


def test_gpu_image_defaults_to_fp16_and_the_readme_runs_it_on_the_host_network(tmp_path: Path) -> None:
    from wyoming_gsv.__main__ import runtime_settings

    assert runtime_settings(parse_cli(_gpu_image_command(tmp_path))).dtype == torch.float16
    readme = (ROOT / "README.md").read_text()
    build = re.search(r"docker build -f Dockerfile\.gpu -t (\S+) \.", readme)
    assert build, "README shows how to build the GPU image"
    run = re.search(rf"docker run -d --gpus all --network host .*{re.escape(build[1])}( --[\w-]+( \w+)?)*$", readme,
                    re.MULTILINE)
    assert run, "README runs the GPU image it built, with the GPU and host networking"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_gpu_image_command_without_a_gpu_fails_at_start_with_one_line(tmp_path: Path) -> None:
    """The image's own command on a host where torch sees no GPU: exit status 2 before any model
    loads, and one line saying why (not a traceback, not a server whose requests all fail)."""
    command = _gpu_image_command(tmp_path)
    command[command.index("--data-dir") + 1] = str(tmp_path)
    command[command.index("--uri") + 1] = "tcp://127.0.0.1:0"
    result = subprocess.run([sys.executable, "-m", "wyoming_gsv", *command], cwd=ROOT,
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda: CUDA is not available" in lines[0], result.stderr
    assert result.stdout == ""


def test_compose_example_uses_host_network_and_the_gpu() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.example.yml").read_text())
    (service,) = compose["services"].values()
    assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    assert service["network_mode"] == "host"  # zeroconf must reach the LAN
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    args = parse_cli(service["command"])
    _, container_dir = service["volumes"][0].split(":")[:2]
    assert str(args.data_dir) == container_dir and args.device == "cuda" and args.zeroconf


def test_images_install_an_extra_that_exists() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "all" in extras
    assert any("fallback" in item for item in extras["all"])  # the piper voice ships in the images
