"""The generator's long convs as block DFTs (gsv/overlap_save.py, vits_modules.LongConv1d): the same
sums as the direct conv, on the official fixture's generator too, and only where they are meant to run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import load_npz
from wyoming_gsv.gsv.checkpoints import load_sovits_checkpoint
from wyoming_gsv.gsv.overlap_save import block_work_ratio, overlap_save_conv, spectral_weights
from wyoming_gsv.gsv.sovits import SovitsModel
from wyoming_gsv.gsv.vits_modules import Conv1d, LongConv1d

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# float rounding only: the direct conv's own error is ~1e-7 of the peak
RELATIVE = 1e-5


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """[1, C, T] -> [1, C, 1, T] channels-last: how the generator feeds its convs on the CPU."""
    return x.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def always_blocks(conv: LongConv1d) -> LongConv1d:
    conv.max_work_ratio = math.inf
    conv.min_blocks = 0
    return conv


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "kernel", "dilation", "padding", "length", "bias", "block"),
    [
        (16, 16, 11, 1, 5, 300, True, 32),
        (16, 16, 11, 5, 25, 301, True, 32),  # length not a multiple of the streams' hop
        (12, 20, 7, 3, 9, 97, False, 24),  # channels change, no bias
        (8, 8, 3, 1, 1, 5, True, 16),  # fewer samples than one block
        (8, 8, 5, 2, 0, 64, True, 16),  # no padding: shorter output
        (8, 8, 11, 1, 5, 1, True, 12),  # one sample, the smallest block
    ],
)
def test_overlap_save_sums_as_the_direct_conv(in_ch, out_ch, kernel, dilation, padding, length, bias, block) -> None:
    torch.manual_seed(length)
    weight = torch.randn(out_ch, in_ch, kernel)
    b = torch.randn(out_ch) if bias else None
    x = torch.randn(1, in_ch, length)
    expected = F.conv1d(x, weight, b, padding=padding, dilation=dilation)[0]
    actual = overlap_save_conv(x[0].T.contiguous(), spectral_weights(weight, b, block), kernel, dilation, padding)
    assert actual.shape == (expected.shape[1], out_ch)
    assert relative_error(actual.T, expected) < RELATIVE


def test_impossible_sizes_are_refused() -> None:
    weight = torch.randn(4, 4, 11)
    with pytest.raises(ValueError, match="block 11 must be even and exceed the kernel"):
        spectral_weights(weight, None, 11)
    with pytest.raises(ValueError, match="block 33 must be even"):
        spectral_weights(weight, None, 33)
    with pytest.raises(ValueError, match="shorter than the kernel"):
        overlap_save_conv(torch.randn(5, 4), spectral_weights(weight, None, 32), 11, 1, 0)


def test_work_ratio_counts_the_block_paths_multiply_adds() -> None:
    # 32-sample blocks, 11 taps: 22 outputs per block, 17 frequencies (15 complex, 2 real); per
    # output and channel pair (3 * 15 + 2) / 22 products, plus per channel 32 * 32 / 22 (analysis:
    # 17 cos and 15 sin rows) and 32 (synthesis).
    channels = 64
    expected = ((3 * 15 + 2) * channels**2 + 32 * 32 * channels + 32 * 22 * channels) / 22 / (11 * channels**2)
    assert block_work_ratio(channels, channels, 11, 32) == pytest.approx(expected)
    assert block_work_ratio(128, 128, 11, 32) < block_work_ratio(64, 64, 11, 32)  # wider: the transforms matter less
    assert block_work_ratio(128, 128, 11, 32) < block_work_ratio(128, 128, 7, 32)  # more taps: more to save
    assert block_work_ratio(8, 8, 32, 32) == math.inf  # no room for the kernel in a block: no block path
    assert block_work_ratio(8, 8, 11, 33) == math.inf  # odd blocks: refused by spectral_weights


def test_the_v2_generator_takes_blocks_for_its_widest_convs() -> None:
    """Which of the v2 generator's resblock convs the threshold puts on the block path: those
    bench_conv_algorithms measured faster there."""
    chosen = {
        (channels, kernel)
        for channels in (256, 128, 64, 32, 16)
        for kernel in (3, 7, 11)
        if LongConv1d(channels, channels, kernel).work_ratio <= LongConv1d.max_work_ratio
    }
    assert chosen == {(256, 7), (256, 11), (128, 7), (128, 11), (64, 11)}


@torch.inference_mode()
def test_long_convs_take_the_block_path_only_where_it_pays() -> None:
    conv = LongConv1d(128, 128, 11, padding=5)
    hop = conv.block - conv.kernel_size[0] + 1
    long_enough = channels_last(torch.randn(1, conv.in_channels, conv.min_blocks * hop))
    assert conv.uses_blocks(long_enough)
    expected = F.conv2d(long_enough, conv.weight.unsqueeze(2), conv.bias, padding=(0, 5))
    assert relative_error(conv(long_enough), expected) < RELATIVE
    assert conv._spectral is not None

    short = LongConv1d(conv.in_channels, conv.in_channels, conv.kernel_size[0], padding=5)
    assert not short.uses_blocks(long_enough[..., :-1])  # one block short: the direct conv ...
    assert torch.equal(short(long_enough[..., :-1]), Conv1d.forward(short, long_enough[..., :-1]))
    assert short._spectral is not None  # ... but the weights are ready for a longer call
    assert not conv.uses_blocks(long_enough[:, :, 0])  # [B, C, T]: the plain layout (GPU, upstream-style runs)
    assert not conv.uses_blocks(long_enough.contiguous())  # not channels-last
    assert not conv.uses_blocks(long_enough.double())
    assert not conv.uses_blocks(torch.cat([long_enough, long_enough]))  # batches
    narrow = LongConv1d(32, 32, 11, padding=5)
    assert narrow.work_ratio > narrow.max_work_ratio
    assert not narrow.uses_blocks(long_enough[:, :32].contiguous(memory_format=torch.channels_last))
    short_kernel = LongConv1d(conv.in_channels, conv.in_channels, 3, padding=1)
    assert not short_kernel.uses_blocks(long_enough)
    with torch.inference_mode(False), torch.enable_grad():
        assert not conv.uses_blocks(long_enough)


@torch.inference_mode()
def test_spectral_weights_follow_the_weights() -> None:
    torch.manual_seed(0)
    conv = always_blocks(LongConv1d(8, 8, 11, dilation=3, padding=15))
    x = channels_last(torch.randn(1, 8, 200))
    conv(x)
    first = conv._spectral
    assert first is not None

    other = LongConv1d(8, 8, 11, dilation=3, padding=15)
    conv.load_state_dict(other.state_dict())
    assert conv._spectral is None  # dropped, rebuilt from the new weights on the next call
    expected = F.conv2d(x, other.weight.unsqueeze(2), other.bias, padding=(0, 15), dilation=(1, 3))
    assert relative_error(conv(x), expected) < RELATIVE
    assert conv._spectral is not first

    conv.double()
    assert conv._spectral is None
    y = conv(x.double())  # float64 runs the direct conv
    assert y.dtype == torch.float64 and conv._spectral is None


@torch.inference_mode()
def test_generator_on_blocks_gives_the_official_waveform(unpacked_v2: dict[str, Path], v2_tiny: Path) -> None:
    """The tiny official generator with every resblock conv on the block path still reproduces
    the official decode (the product's thresholds keep these narrow convs direct)."""
    golden = load_npz(v2_tiny / "s2_golden.npz")
    model = SovitsModel.from_checkpoint(load_sovits_checkpoint(unpacked_v2["sovits"]))
    convs = [m for m in model.dec.modules() if isinstance(m, LongConv1d)]
    assert convs
    for conv in convs:
        always_blocks(conv)
    codes, phones = torch.from_numpy(golden["codes"]), torch.from_numpy(golden["phones"])
    ge = torch.from_numpy(golden["ge"])[None]
    audio = model.decode(codes, phones, ge, noise_scale=0.0)
    assert all(conv._spectral is not None for conv in convs)
    np.testing.assert_allclose(audio.numpy(), golden["audio_noise0"], atol=2e-4, rtol=0)
