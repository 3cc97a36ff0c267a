"""Tiling: spans partition the frame, tiled == untiled where the overlap covers the receptive field."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.errors import ConfigError
from redi_stream.model import RediNet, run_tiled
from redi_stream.model.tiling import EXACT_OVERLAP, tile_spans


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 80), tile=st.integers(1, 40), overlap=st.integers(2, 10))
def test_tile_spans_partition_the_axis(length, tile, overlap):
    length, tile, overlap = 32 * length, 32 * tile, 32 * overlap
    if tile <= 2 * overlap and tile < length:
        return  # rejected by run_tiled
    spans = tile_spans(length, tile, overlap)
    assert spans[0][2] == 0 and spans[-1][3] == length
    for (_, _, _, prev_stop), (_, _, start, _) in zip(spans, spans[1:]):
        assert start == prev_stop  # cores are contiguous and disjoint
    for w0, w1, c0, c1 in spans:
        assert 0 <= w0 <= c0 < c1 <= w1 <= length
        assert w1 - w0 == min(tile, length)  # every window has the same shape
        assert w0 % 32 == 0
        assert c0 - w0 >= overlap or w0 == 0  # interior edges keep the full margin
        assert w1 - c1 >= overlap or w1 == length


def test_tiled_small_receptive_field_is_exact():
    torch.manual_seed(0)
    weight = torch.randn(3, 1, 5, 5)

    def fn(t):
        return F.conv2d(F.conv2d(t, weight, padding=2).sum(1, keepdim=True), weight, padding=2)

    x = torch.rand(2, 1, 320, 448)
    torch.testing.assert_close(run_tiled(fn, x, (192, 256), 64), fn(x), rtol=0, atol=1e-5)


def test_tiled_redinet_with_exact_overlap_equals_untiled():
    torch.manual_seed(1)
    net = RediNet(weight_norm=False).eval()
    x = torch.rand(1, 1, 64, 1280)
    with torch.no_grad():
        ref = net(x)
        got = run_tiled(net, x, (64, 2 * EXACT_OVERLAP + 64), EXACT_OVERLAP)  # two windows along the width
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


def test_whole_frame_tile_is_the_plain_call():
    x = torch.rand(1, 1, 64, 96)
    assert torch.equal(run_tiled(lambda t: t.repeat(1, 3, 1, 1), x, (128, 128), 64), x.repeat(1, 3, 1, 1))


@pytest.mark.parametrize(
    "shape, tile, overlap, match",
    [
        ((1, 1, 64, 100), (64, 64), 64, "width 100"),
        ((1, 1, 256, 256), (100, 128), 64, "tile height 100"),
        ((1, 1, 256, 256), (128, 128), 32, ">= 64"),
        ((1, 1, 256, 256), (128, 128), 96, "multiple of 32|twice the overlap"),
        ((1, 1, 256, 256), (128, 128), 64, "twice the overlap"),
        ((1, 2, 64, 64), (64, 64), 64, r"\(N, 1, H, W\)"),
    ],
)
def test_bad_tiling_arguments(shape, tile, overlap, match):
    with pytest.raises(ConfigError, match=match):
        run_tiled(lambda t: t, torch.zeros(shape), tile, overlap)
