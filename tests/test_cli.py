"""The command line: argument parsing, `synth` (the server's code path) and `voices`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from voice_data import make_tiny_data_dir, make_voice, read_wav
from wyoming_gsv.__main__ import main, parse_args, runtime_settings, serve_settings


def test_serve_is_the_default_command() -> None:
    args = parse_args(["--uri", "tcp://127.0.0.1:10300", "--data-dir", "/data", "--zeroconf", "--no-streaming"])
    assert args.command == "serve"
    serve = serve_settings(args)
    assert serve.uri == "tcp://127.0.0.1:10300" and serve.zeroconf_name == "gsv" and not serve.streaming
    named = serve_settings(parse_args(["--data-dir", "/d", "--zeroconf", "kitchen", "--zeroconf-host", "10.0.0.5"]))
    assert named.zeroconf_name == "kitchen" and named.zeroconf_host == "10.0.0.5"
    runtime = runtime_settings(parse_args(["serve", "--data-dir", "/d", "--device", "cuda", "--threads", "3"]))
    assert runtime.data_dir == Path("/d") and runtime.threads == 3 and str(runtime.dtype) == "torch.float16"


def test_synth_sampling_flags_become_overrides() -> None:
    args = parse_args(["synth", "--data-dir", "/d", "--voice", "v", "--top-k", "1", "--noise-scale", "0", "hi", "-o", "x.wav"])
    assert runtime_settings(args).param_overrides == {"top_k": 1, "noise_scale": 0.0}


@pytest.fixture(scope="module")
def data_dir(unpacked_v2: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_tiny_data_dir(tmp_path_factory.mktemp("cli-data"), unpacked_v2)
    # Default sampling (top_k 15, noise 0.5): only the flags make it deterministic.
    make_voice(root, "plain", reference=unpacked_v2["ref_wav"], config={"language": "en"})
    return root


def test_voices_lists_status_and_builds_bundles(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["voices", "--data-dir", str(data_dir), "--threads", "1", "--no-fallback"])
    out = capsys.readouterr().out
    assert code == 1  # one voice is left out
    lines = {line.split("\t")[0]: line for line in out.splitlines() if "\t" in line}
    assert "ready" in lines["tiny"] and "ready" in lines["plain"]
    assert "LEFT OUT" in lines["broken"] and "transcript is missing" in lines["broken"]
    assert len(list((data_dir / "cache").glob("tiny.*.safetensors"))) == 1


def test_voices_reports_a_voice_whose_bundle_fails_and_goes_on(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any failure building one voice's bundle (here the text frontend's) used to end the listing
    with a traceback."""
    from wyoming_gsv.synthesis.gsv_backend import GsvBackend

    def failing_bundle(self, voice):
        if voice.id == "plain":
            raise FileNotFoundError("Open JTalk dictionary not found")
        return original(self, voice)

    original = GsvBackend.bundle
    monkeypatch.setattr(GsvBackend, "bundle", failing_bundle)
    assert main(["voices", "--data-dir", str(data_dir), "--threads", "1", "--no-fallback"]) == 1
    lines = {line.split("\t")[0]: line for line in capsys.readouterr().out.splitlines() if "\t" in line}
    assert "UNUSABLE" in lines["plain"] and "FileNotFoundError: Open JTalk dictionary not found" in lines["plain"]
    assert "ready" in lines["tiny"] and "LEFT OUT" in lines["broken"]


def test_synth_is_deterministic_with_top_k_1_and_no_noise(data_dir: Path, tmp_path: Path) -> None:
    outputs = []
    for name in ("a.wav", "b.wav"):
        out = tmp_path / name
        argv = ["synth", "--data-dir", str(data_dir), "--voice", "plain", "--threads", "1", "--no-fallback",
                "--top-k", "1", "--noise-scale", "0", "Hello there. How are you?", "-o", str(out)]
        assert main(argv) == 0
        outputs.append(read_wav(out))
    (rate_a, audio_a), (rate_b, audio_b) = outputs
    assert rate_a == rate_b == 32000
    assert len(audio_a) > 0 and audio_a == audio_b


def test_synth_honours_the_voice_text_split(
    data_dir: Path, tmp_path: Path, unpacked_v2: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from wyoming_gsv.synthesis.gsv_backend import GsvBackend
    from wyoming_gsv.text.segmentation import pre_seg_text, replace_consecutive_punctuation

    text = "First part, second part; third. And the end!"
    folder = make_voice(data_dir, "cut5", reference=unpacked_v2["ref_wav"], config={"language": "en", "text_split": "cut5"})
    chunks: list[str] = []
    features = GsvBackend.text_features

    def spy(self, chunk, mode, version, **kwargs):
        if kwargs.get("other_scripts"):  # a request's text, not the transcript
            chunks.append(chunk)
        return features(self, chunk, mode, version, **kwargs)

    monkeypatch.setattr(GsvBackend, "text_features", spy)
    try:
        argv = ["synth", "--data-dir", str(data_dir), "--voice", "cut5", "--threads", "1", "--no-fallback",
                text, "-o", str(tmp_path / "cut.wav")]  # fmt: skip
        assert main(argv) == 0
    finally:
        shutil.rmtree(folder)
    # upstream cuts after ";" too and closes that piece with ".": " second part;."
    assert chunks == pre_seg_text(replace_consecutive_punctuation(text), "en", "cut5") and len(chunks) == 4


def test_synth_unknown_voice_fails_clearly(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["synth", "--data-dir", str(data_dir), "--voice", "broken", "--no-fallback", "hi", "-o", str(tmp_path / "x.wav")]
    assert main(argv) == 2
    assert "transcript is missing" in capsys.readouterr().err
    assert not (tmp_path / "x.wav").exists()


def test_synth_output_folder_missing_fails_before_synthesis(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "missing" / "x.wav"
    argv = ["synth", "--data-dir", str(data_dir), "--voice", "plain", "--no-fallback", "hi", "-o", str(out)]
    assert main(argv) == 2  # it used to synthesize, then die in wave.open with a traceback
    assert f"cannot write {out}" in capsys.readouterr().err


def test_phonemize_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phonemize", "--language", "en", "Hello world."]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["phone_ids"] and result["segments"][0]["lang"] == "en"


def test_phonemize_reads_as_a_request_unless_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phonemize", "--language", "en", "Wake me at 7:30 pm 😀"]) == 0
    assert json.loads(capsys.readouterr().out)["norm_text"] == "Wake me at seven thirty P M"
    assert main(["phonemize", "--upstream", "--language", "en", "Wake me at 7:30 pm"]) == 0
    assert json.loads(capsys.readouterr().out)["norm_text"] == "Wake me at seven thirty a.m. pm"


def test_phonemize_bad_mode_is_a_clean_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["phonemize", "--language", "klingon", "Hello."]) == 2
    assert "klingon" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # 0 samples per chunk made the audio writer fail (and the client wait forever); a queue
        # bound of 0 meant no bound at all.
        (["--samples-per-chunk", "0"], "--samples-per-chunk: must be 1 or more, got 0"),
        (["--max-queue", "0"], "--max-queue: must be 1 or more"),
        (["--concurrent-requests", "0"], "--concurrent-requests: must be 1 or more, got 0"),
        (["--concurrent-requests", "two"], "--concurrent-requests: must be a whole number, got 'two'"),
        (["--max-chars", "-5"], "--max-chars: must be 1 or more"),
        (["--threads", "x"], "--threads: must be a whole number, got 'x'"),
        (["--min-chunk-tokens", "0"], "--min-chunk-tokens: must be 1 or more"),
        (["--chunking", "words"], "chunking must be one of fixed, split, sentence, got 'words'"),
        (["--uri", "http://example:1"], "must start with tcp://, unix:// or stdio://"),
        (["--uri", "tcp://0.0.0.0"], "needs a host and a port"),
        (["--uri", "tcp://0.0.0.0:port"], "needs a host and a port"),
        (["--uri", "unix:///tmp/gsv.sock", "--zeroconf"], "--zeroconf needs a tcp:// URI"),
        (["--zeroconf", "--zeroconf-host", "my-box"], "--zeroconf-host 'my-box': must be this machine's IPv4"),
        (["--zeroconf", "--zeroconf-host", "0.0.0.0"], "must be this machine's IPv4 address"),
        (["--zeroconf", "--zeroconf-host", "fe80::1"], "must be this machine's IPv4 address"),
        (["synth", "--voice", "v", "--top-k", "0", "hi", "-o", "x.wav"], "top_k must be >= 1"),
        (["synth", "--voice", "v", "--speed", "9", "hi", "-o", "x.wav"], "speed must be in [0.25, 4]"),
    ],
)
def test_bad_flag_values_are_usage_errors(argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Refused while parsing, not after the models load (or at the first request)."""
    command = argv[:1] if argv[0] == "synth" else []
    with pytest.raises(SystemExit) as info:
        parse_args([*command, "--data-dir", "/d", *argv[len(command):]])
    assert info.value.code == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("command", [[], ["voices"], ["synth", "--voice", "v", "-o", "x.wav", "hi"]])
def test_missing_or_file_data_dir_is_a_clear_error(
    command: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistyped --data-dir used to serve no voice (or list none) without a word."""
    missing = tmp_path / "nope"
    assert main([*command, "--data-dir", str(missing), "--no-fallback"]) == 2
    assert f"--data-dir {missing} does not exist" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert main([*command, "--data-dir", str(a_file), "--no-fallback"]) == 2
    assert "is not a directory" in capsys.readouterr().err


@pytest.mark.parametrize(("device", "expected"), [("nonsense", "--device 'nonsense'"), ("cuda:99", "--device cuda:99")])
def test_unusable_device_is_a_clear_error(
    device: str, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It used to start, list the voices, and fail every request (or leave every voice out)."""
    assert main(["voices", "--data-dir", str(tmp_path), "--device", device, "--no-fallback"]) == 2
    assert expected in capsys.readouterr().err


# Reports OMP_WAIT_POLICY at the moment `import torch` starts and OPENBLAS_NUM_THREADS when
# `import numpy` starts, then runs the entry point (a CLI command, or a benchmark script's module
# level).
_WATCH_TORCH_IMPORT = """
import importlib.abc, os, runpy, sys
class Watch(importlib.abc.MetaPathFinder):
    watched = {"torch": "OMP_WAIT_POLICY", "numpy": "OPENBLAS_NUM_THREADS"}
    def find_spec(self, name, path, target=None):
        variable = self.watched.pop(name, None)
        if variable is not None:
            print(f"{variable} at {name} import:", os.environ.get(variable), flush=True)
        if not self.watched:
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Watch())
sys.argv = sys.argv[1:]
try:
    if sys.argv[0] == "-m":
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:  # a benchmark script: its imports only (its main block would run the benchmark)
        sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python script.py` does
        runpy.run_path(sys.argv[0], run_name="benchmark_imports")
except SystemExit:
    pass
"""


def _entry_points(tmp_path: Path) -> list[list[str]]:
    root = Path(__file__).resolve().parent.parent
    benchmarks = sorted(str(path) for path in (root / "benchmarks").glob("bench_*.py"))
    commands = [["-m", "wyoming_gsv", "voices", "--data-dir", str(tmp_path), "--no-build"]]
    return commands + [[bench] for bench in benchmarks]


def test_every_entry_point_sets_passive_omp_wait_before_torch_loads(tmp_path: Path) -> None:
    """A spinning OpenMP pool made 2 threads many times slower on a busy machine; every entry
    point that loads torch must have OMP_WAIT_POLICY=PASSIVE set first (unless the user set it).
    Likewise OPENBLAS_NUM_THREADS=1 before numpy loads: numpy's BLAS runs the GPT's decode
    matmuls (GemvLinear), and more of its threads spin between them."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_NUM_THREADS")}
    loaded = {"torch": 0, "numpy": 0}
    for command in _entry_points(tmp_path):
        result = subprocess.run(
            [sys.executable, "-c", _WATCH_TORCH_IMPORT, *command], env=env, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, f"{command}: {result.stderr[-500:]}"
        for module, variable, value in (("torch", "OMP_WAIT_POLICY", "PASSIVE"), ("numpy", "OPENBLAS_NUM_THREADS", "1")):
            lines = [line for line in result.stdout.splitlines() if line.startswith(f"{variable} at {module} import")]
            assert not lines or lines[0].endswith(f": {value}"), f"{command}: {lines[0]}"
            loaded[module] += bool(lines)
    assert loaded["torch"] >= 2 and loaded["numpy"] >= 2  # the CLI and the model benchmarks load both


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_without_native_cpu_support_falls_back_to_fp32(monkeypatch, precision: str) -> None:
    """Half precision without the CPU's instructions for it is emulated, many times slower than
    fp32: one warning, then fp32."""
    import torch

    from wyoming_gsv.synthesis.runtime import resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    dtype, warning = resolve_dtype(precision, "cpu")
    assert dtype == torch.float32 and warning is not None and f"--precision {precision}" in warning
    runtime = runtime_settings(parse_args(["serve", "--data-dir", "/d", "--precision", precision]))
    assert runtime.dtype == torch.float32
    # Where the CPU has the instructions (and on CUDA), the choice stands.
    native = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert resolve_dtype(precision, "cuda") == (native, None)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: True)
    assert resolve_dtype(precision, "cpu") == (native, None)


def test_bf16_stands_on_an_avx512_bf16_cpu_without_amx(monkeypatch) -> None:
    """AVX512-BF16 alone runs oneDNN's bf16 kernels (2x the fp32 GPT and vocoder speed measured
    here); fp16 there is still emulated."""
    import torch

    from wyoming_gsv.synthesis.runtime import resolve_dtype

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
    assert resolve_dtype("bf16", "cpu") == (torch.bfloat16, None)
    assert resolve_dtype("fp16", "cpu")[0] == torch.float32


def test_precision_fallback_is_logged_once(tmp_path: Path, caplog, monkeypatch) -> None:
    import torch

    from wyoming_gsv.synthesis.runtime import Runtime

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    args = parse_args(["serve", "--data-dir", str(tmp_path), "--precision", "bf16", "--no-fallback"])
    with caplog.at_level("WARNING"):
        runtime = Runtime(runtime_settings(args))
    runtime.close()
    assert [r.getMessage() for r in caplog.records].count(resolve_warning(caplog)) == 1
    assert runtime.backend.settings.dtype == torch.float32


def resolve_warning(caplog) -> str:
    return next(r.getMessage() for r in caplog.records if "--precision bf16" in r.getMessage())


def test_overlap_is_on_by_default_where_it_can_be() -> None:
    """GPT and SoVITS overlap by default on a CPU with 2+ threads; --no-overlap turns it off."""
    from wyoming_gsv.synthesis.runtime import RuntimeSettings, worker_threads

    assert runtime_settings(parse_args(["serve", "--data-dir", "/d"])).overlap is None
    assert runtime_settings(parse_args(["serve", "--data-dir", "/d", "--no-overlap"])).overlap is False
    assert runtime_settings(parse_args(["serve", "--data-dir", "/d", "--overlap"])).overlap is True
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=2)) == (1, 1)
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=5)) == (3, 2)
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=2, overlap=False)) == (2, 0)
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=1)) == (1, 0)
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=4, device="cuda")) == (4, 0)


def test_concurrent_requests_flag_and_its_device_default() -> None:
    """Unset, the device decides: 4 requests at once on CUDA (their GPTs batched), 1 on the CPU;
    above 1 the CPU's GPT/SoVITS overlap worker steps aside (the batcher's thread is the overlap)."""
    from wyoming_gsv.synthesis.runtime import RuntimeSettings, concurrent_requests, worker_threads

    assert runtime_settings(parse_args(["serve", "--data-dir", "/d"])).concurrent_requests is None
    flagged = runtime_settings(parse_args(["serve", "--data-dir", "/d", "--concurrent-requests", "3"]))
    assert flagged.concurrent_requests == 3 and concurrent_requests(flagged) == 3
    assert concurrent_requests(RuntimeSettings(data_dir=Path("/d"), device="cuda")) == 4
    assert concurrent_requests(RuntimeSettings(data_dir=Path("/d"), device="cuda:1")) == 4
    assert concurrent_requests(RuntimeSettings(data_dir=Path("/d"), device="cpu")) == 1
    assert concurrent_requests(RuntimeSettings(data_dir=Path("/d"), device="cuda", concurrent_requests=1)) == 1
    assert worker_threads(RuntimeSettings(data_dir=Path("/d"), threads=4, concurrent_requests=2)) == (4, 0)
    with pytest.raises(ValueError, match="concurrent_requests must be 1 or more"):
        RuntimeSettings(data_dir=Path("/d"), concurrent_requests=0)
