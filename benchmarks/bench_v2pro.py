"""v2Pro/v2ProPlus costs at real size with random weights: speaker network and decoder.

    .venv/bin/python benchmarks/bench_v2pro.py [--seconds 5] [--reps 3] [--threads 1 2]

Rows:
* speaker network (ERes2NetV2, 32 kHz reference -> 16 kHz -> fbank -> 20480-d embedding) for a
  reference of `--seconds` seconds. It runs once per voice (the bundle stores its result), so it
  costs start-up time, never request time.
* SoVITS decode for `--seconds` of audio: v2 (baseline, timed in the same run), v2Pro
  (gin 1024) and v2ProPlus (gin 1024, generator 768 channels, first kernel 20), as seconds of
  compute per second of audio and as a ratio to v2.
Medians over `--reps` runs, variants interleaved so that load from other processes hits them alike.
"""

from __future__ import annotations

import argparse
import statistics

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import numpy as np
import torch

from timing import median_wall_s, timed
from wyoming_gsv.gsv.sovits import SovitsConfig, SovitsModel
from wyoming_gsv.gsv.sovits_pro import SPEAKER_EMBEDDING_DIM, SovitsProModel
from wyoming_gsv.gsv.speaker import ERes2NetV2, SpeakerEncoder

CODES_PER_SECOND = 25
PHONES_PER_SECOND = 12


def real_config(version: str) -> SovitsConfig:
    config = SovitsConfig(version=version)
    if version in ("v2Pro", "v2ProPlus"):
        config.gin_channels = 1024
    if version == "v2ProPlus":
        config.upsample_initial_channel = 768
        config.upsample_kernel_sizes = [20, 16, 8, 2, 2]
    return config


def build(version: str, seed: int = 0) -> SovitsModel:
    torch.manual_seed(seed)
    cls = SovitsProModel if version != "v2" else SovitsModel
    model = cls(real_config(version))
    model.quantizer.embed.normal_()
    return model


def decode_inputs(model: SovitsModel, seconds: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 1024, (int(seconds * CODES_PER_SECOND),), generator=gen)
    phones = torch.randint(0, 732, (int(seconds * PHONES_PER_SECOND),), generator=gen)
    spec = torch.rand(1, 1025, 150, generator=gen)
    speaker = [torch.randn(SPEAKER_EMBEDDING_DIM, generator=gen)] if model.needs_speaker_embedding else None
    ge = model.global_embedding([spec], speaker)
    return codes, phones, ge


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    speaker = SpeakerEncoder(ERes2NetV2(), torch.device("cpu"))
    reference = (0.1 * np.random.default_rng(0).standard_normal(int(32000 * args.seconds))).astype(np.float32)
    models = {version: build(version) for version in ("v2", "v2Pro", "v2ProPlus")}
    inputs = {version: decode_inputs(model, args.seconds) for version, model in models.items()}

    print(f"torch {torch.__version__}, reference/audio {args.seconds:.1f} s, median of {args.reps}")
    print(f"{'part':<34}{'threads':>8}{'median s':>10}{'s per s audio':>15}{'x v2':>7}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        speaker.embed(reference)  # warm-up
        sv_time = median_wall_s(lambda: speaker.embed(reference), args.reps)
        print(f"{'speaker network (ERes2NetV2)':<34}{threads:>8}{sv_time:>10.3f}{'':>15}{'':>7}")
        for version, model in models.items():
            codes, phones, ge = inputs[version]
            model.decode(codes[:25], phones[:12], ge, noise_scale=0.0)  # warm-up
        timings: dict[str, list[float]] = {version: [] for version in models}
        for _ in range(args.reps):
            for version, model in models.items():
                codes, phones, ge = inputs[version]
                timings[version].append(timed(lambda: model.decode(codes, phones, ge))[0])
        base = statistics.median(timings["v2"])
        for version, samples in timings.items():
            t = statistics.median(samples)
            print(f"{'SoVITS decode ' + version:<34}{threads:>8}{t:>10.3f}{t / args.seconds:>15.3f}{t / base:>7.2f}")


if __name__ == "__main__":
    main()
