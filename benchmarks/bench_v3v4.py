"""SoVITS v3 / v4 synthesis speed beside v2: seconds of compute per second of audio, real sizes,
random weights, on the CPU.

    .venv/bin/python benchmarks/bench_v3v4.py [--seconds 3] [--steps 8 32] [--threads 1 2] [--reps 1]

Builds in memory the real v3 and v4 `SynthesizerTrnV3` (DiT 1024 x 22 blocks) with their real
vocoders (v3 BigVGAN 24 kHz 1536 ch, v4 HiFi-GAN 48 kHz) and the real v2 `SynthesizerTrn` (the
baseline, timed in the same run), all seeded random. Times the SoVITS side of one sentence of
`--seconds` of audio (semantic codes + phones -> waveform; the GPT is the same for all three), with
a 3 s reference prompt, for each sample_steps value (v3/v4 only) and thread count: v3/v4 from their
timed parts (see `measure`), so 32 steps cost two sampler runs, not 32 DiT calls per row. Reports
median wall seconds, s/s audio, and the ratio to v2 at the same thread count.
"""

from __future__ import annotations

import argparse
import os

import wyoming_gsv  # noqa: F401  (first: the package sets its thread settings before numpy and torch load)
import torch

from bench_sovits import build_real_v2
from timing import median_wall_s
from wyoming_gsv.gsv.audio import sinc_resample
from wyoming_gsv.gsv.bigvgan import BigVGAN, BigVGANConfig, HifiGanVocoder
from wyoming_gsv.gsv.mel import log_mel_spectrogram, normalize_mel
from wyoming_gsv.gsv.sovits import SovitsConfig
from wyoming_gsv.gsv.sovits_v3 import LAYOUTS, SovitsV3Model

CODES_PER_SECOND = 25
PHONES_PER_SECOND = 12
REFERENCE_SECONDS = 3.0


def build_v3v4(version: str, seed: int = 0) -> SovitsV3Model:
    torch.manual_seed(seed)
    model = SovitsV3Model(SovitsConfig(version=version))
    model.quantizer.embed.normal_()
    model.cfm.estimator.rotary_embed.inv_freq.copy_(1.0 / 10000 ** (torch.arange(0, 64, 2).float() / 64))
    model.vocoder = BigVGAN(BigVGANConfig(use_tanh_at_final=False, use_bias_at_final=False)) if version == "v3" \
        else HifiGanVocoder()
    return model.eval()


def inputs(seconds: float, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "codes": torch.randint(0, 1024, (int(seconds * CODES_PER_SECOND),), generator=g),
        "phones": torch.randint(1, 700, (max(1, int(seconds * PHONES_PER_SECOND)),), generator=g),
        "prompt_codes": torch.randint(0, 1024, (int(REFERENCE_SECONDS * CODES_PER_SECOND),), generator=g),
        "prompt_phones": torch.randint(1, 700, (int(REFERENCE_SECONDS * PHONES_PER_SECOND),), generator=g),
        "ref_audio": 0.1 * torch.randn(int(REFERENCE_SECONDS * 32000), generator=g),
    }


def measure(seconds: float, steps: list[int], threads: list[int], reps: int) -> list[tuple[str, int, int, float, float]]:
    """Rows (model, sample_steps, threads, wall s, audio s).

    v3/v4 time their parts: conditioning features, the sampler at 1 and 2 steps (their difference is
    one Euler step of the DiT at the real length), the vocoder; a sentence at N steps costs
    features + sampler(1) + (N - 1) * step + vocoder (the loop is the same DiT call N times).
    """
    data = inputs(seconds)
    rows = []
    v2 = build_real_v2()
    ge = torch.randn(1, 512, 1) * 0.1
    models = {version: build_v3v4(version) for version in ("v3", "v4")}
    contexts = {}
    for version, model in models.items():
        mel_config = LAYOUTS[version].reference_mel
        audio = sinc_resample(data["ref_audio"], 32000, mel_config.sampling_rate)
        mel = normalize_mel(log_mel_spectrogram(audio, mel_config))
        contexts[version] = model.prompt_context(data["prompt_codes"], data["prompt_phones"], ge, mel)
    saved = torch.get_num_threads()

    try:
        for n in threads:
            torch.set_num_threads(n)
            generator = torch.Generator().manual_seed(0)
            wall = median_wall_s(lambda: v2.decode(data["codes"], data["phones"], ge, generator=generator), reps)
            rows.append(("v2", 0, n, wall, len(data["codes"]) * v2.samples_per_code / v2.output_rate))
            for version, model in models.items():
                context = contexts[version]
                with torch.inference_mode():
                    target = model.features(data["codes"], data["phones"], ge)
                    conditioning = torch.cat([context.features, target], dim=-1)
                    mel = model.sample_mel(conditioning, context.mel, 1, generator=generator)
                features_s = median_wall_s(lambda: model.features(data["codes"], data["phones"], ge), reps)
                one = median_wall_s(lambda: model.sample_mel(conditioning, context.mel, 1, generator=generator), reps)
                two = median_wall_s(lambda: model.sample_mel(conditioning, context.mel, 2, generator=generator), reps)
                vocoder_s = median_wall_s(lambda: model.vocode(mel), reps)
                step = max(two - one, 0.0)
                audio_s = mel.shape[-1] * model.vocoder.upsample_rate / model.output_rate
                print(f"  {version} threads={n}: features {features_s:.2f} s, sampler 1 step {one:.2f} s, "
                      f"+1 step {step:.2f} s (T={conditioning.shape[-1]} frames), vocoder {vocoder_s:.2f} s", flush=True)
                for step_count in steps:
                    total = features_s + one + (step_count - 1) * step + vocoder_s
                    rows.append((version, step_count, n, total, audio_s))
    finally:
        torch.set_num_threads(saved)
    return rows


def print_table(rows: list[tuple[str, int, int, float, float]]) -> None:
    print(f"torch {torch.__version__}, real-size SoVITS, random weights, CPU")
    header = f"{'model':6s} {'steps':>5s} {'thr':>3s} {'wall s':>8s} {'audio s':>8s} {'s/s audio':>9s} {'x v2':>7s}"
    print(header)
    print("-" * len(header))
    base = {threads: wall / audio for model, _, threads, wall, audio in rows if model == "v2"}
    for model, steps, threads, wall, audio in rows:
        rtf = wall / audio
        print(f"{model:6s} {steps or '-':>5} {threads:3d} {wall:8.2f} {audio:8.2f} {rtf:9.3f} {rtf / base[threads]:7.1f}")
    print(f"s/s audio = wall s / audio s (SoVITS side only). Load average now {os.getloadavg()[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    print_table(measure(args.seconds, args.steps, args.threads, args.reps))


if __name__ == "__main__":
    main()
