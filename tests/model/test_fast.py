"""FastRediNet (the CPU fast path): same function as the spec forward; the H/4 rewrite of 5x5 convs; buffers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from redi_stream.model import RediNet
from redi_stream.model import fast as fast_module
from redi_stream.model.fast import FastRediNet, compose_3x3, space_to_depth_conv_weight
from tests.conftest import make_random_redi_net


@pytest.fixture(scope="module")
def net() -> RediNet:
    return make_random_redi_net(1)


def _unshuffle_index(c_count: int):
    """pixel_unshuffle(s, 2) channel order: c * 4 + 2a + b."""
    return lambda c, a, b: c * 4 + 2 * a + b


@pytest.mark.parametrize("c_in, c_out, h, w", [(4, 12, 8, 12), (24, 12, 6, 10), (3, 5, 2, 4)])
def test_space_to_depth_conv_equals_5x5_conv(c_in, c_out, h, w):
    torch.manual_seed(0)
    s = torch.randn(2, c_in, h, w, dtype=torch.float64)
    weight = torch.randn(c_out, c_in, 5, 5, dtype=torch.float64)
    k4 = space_to_depth_conv_weight(weight, 4 * c_in, 4 * c_out, _unshuffle_index(c_in), _unshuffle_index(c_out))
    assert k4.shape == (4 * c_out, 4 * c_in, 3, 3)
    got = F.conv2d(F.pixel_unshuffle(s, 2), k4, padding=1)
    ref = F.pixel_unshuffle(F.conv2d(s, weight, padding=2), 2)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)  # borders included: zero padding maps exactly
    # Structural zeros: per dimension, 2.5 of the 3 taps are used on average (25/36 of the kernel).
    assert int((k4 != 0).sum()) == c_out * c_in * 4 * 25


def test_space_to_depth_conv_rejects_other_kernels():
    with pytest.raises(ValueError, match="5x5"):
        space_to_depth_conv_weight(torch.zeros(1, 1, 3, 3), 4, 4, _unshuffle_index(1), _unshuffle_index(1))


def test_fast_matches_spec_within_1e4_at_a_larger_size(net):
    """Issue 5's bar: max |diff| <= 1e-4 vs the spec forward, random weights, random input in [0, 1]."""
    x = torch.rand(1, 1, 256, 416, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got = FastRediNet(net)(x)
        ref = net(x).permute(0, 2, 3, 1)
    assert 0.05 < float(((ref > 0) & (ref < 1)).float().mean())
    assert float((got - ref).abs().max()) <= 1e-4


def test_scratch_buffers_follow_the_input_shape(net):
    fast = FastRediNet(net).eval()
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(1, 1, 64, 96, generator=gen) * 2, torch.rand(2, 1, 32, 64, generator=gen) * 2
    with torch.inference_mode():
        ref_a, ref_b = net(a).permute(0, 2, 3, 1), net(b).permute(0, 2, 3, 1)
        for x, ref in ((a, ref_a), (a, ref_a), (b, ref_b), (a, ref_a)):  # reuse, change shape, change back
            torch.testing.assert_close(fast(x), ref, rtol=0, atol=1e-5)


def test_fast_bf16_is_close(net):
    x = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        got = FastRediNet(net).to(torch.bfloat16)(x.to(torch.bfloat16)).float()
        ref = net(x).permute(0, 2, 3, 1)
    assert float(torch.linalg.norm(got - ref) / torch.linalg.norm(ref)) < 0.05


def test_compose_3x3_is_exact_away_from_the_edges():
    torch.manual_seed(5)
    s = torch.randn(1, 3, 12, 14, dtype=torch.float64)
    w1, w2 = torch.randn(4, 3, 3, 3, dtype=torch.float64), torch.randn(5, 4, 3, 3, dtype=torch.float64)
    two_step = F.conv2d(F.conv2d(s, w1, padding=1), w2, padding=1)
    one = F.conv2d(s, compose_3x3(w2, w1), padding=2)
    torch.testing.assert_close(one[..., 1:-1, 1:-1], two_step[..., 1:-1, 1:-1], rtol=0, atol=1e-10)
    assert not torch.allclose(one[..., 0, :], two_step[..., 0, :])  # the edge is why FastRediNet fixes strips


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (1, 1, 32, 160), (3, 1, 96, 32)])
def test_fast_equals_spec_at_the_smallest_sizes(net, shape):
    """H/4 = 8: the edge strips (4 wide) overlap; every pixel must still match the spec forward."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(6)) * 2
    with torch.inference_mode():
        torch.testing.assert_close(FastRediNet(net)(x), net(x).permute(0, 2, 3, 1), rtol=0, atol=1e-5)


def test_between_ops_runs_between_the_convolutions_and_may_change_the_thread_count(net):
    """The hook TorchRunner uses to follow the CPU gate: called at every conv boundary, and switching torch's
    thread count there (1 <-> 2 alternately) leaves the result the spec forward's."""
    x = torch.rand(1, 1, 64, 96, generator=torch.Generator().manual_seed(7)) * 2
    fast = FastRediNet(net).eval()
    calls: list[int] = []
    before = torch.get_num_threads()

    def hook() -> None:
        calls.append(torch.get_num_threads())
        torch.set_num_threads(1 if len(calls) % 2 else 2)

    fast.between_ops = hook
    try:
        with torch.inference_mode():
            got = fast(x)
            ref = net(x).permute(0, 2, 3, 1)
    finally:
        torch.set_num_threads(before)
    # start + stem (2) + rdb1 (4 layers + 1x1) + rdb2, rdb3 (5 + 1 each) + rdball, conv_rdb8x
    # + MSE (2) + FB1 (2) + FB2 (2)
    assert len(calls) == 28
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    fast.between_ops = None
    with torch.inference_mode():
        fast(x)
    assert len(calls) == 28


needs_fused = pytest.mark.skipif(not fast_module.fused_convs(),
                                 reason="this torch build has no working oneDNN fused convs")


@needs_fused
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_conv_helpers_equal_the_plain_ops(dtype):
    g = torch.Generator().manual_seed(5)
    cl = lambda t: t.to(dtype).contiguous(memory_format=torch.channels_last)  # noqa: E731
    x, w, b = cl(torch.randn(1, 16, 12, 20, generator=g)), cl(torch.randn(24, 16, 3, 3, generator=g)), torch.randn(24)
    acc = cl(torch.randn(1, 24, 12, 20, generator=g))
    tol = dict(rtol=0, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=0.1)
    with torch.inference_mode():
        b = b.to(dtype)
        torch.testing.assert_close(fast_module.conv3x3_leaky(x, w, b, True), fast_module.conv3x3_leaky(x, w, b, False),
                                   **tol)
        got = fast_module.conv3x3_add_(acc.clone(), x, w, b, True)
        want = fast_module.conv3x3_add_(acc.clone(), x, w, b, False)
        torch.testing.assert_close(got, want, **tol)
        assert not torch.equal(got, acc)  # added in place into the accumulator it returns
        torch.testing.assert_close(fast_module.conv3x3_plus(x, acc, w, b, True),
                                   fast_module.conv3x3_plus(x, acc, w, b, False), **tol)


@needs_fused
def test_fused_forward_equals_the_unfused_one(net, monkeypatch):
    x = torch.rand(1, 1, 96, 160, generator=torch.Generator().manual_seed(6))
    fast = FastRediNet(net).eval()
    with torch.inference_mode():
        fused = fast(x).clone()
        bf_fused = FastRediNet(net).to(torch.bfloat16)(x.to(torch.bfloat16), out=torch.empty(1, 96, 160, 3)).clone()
        monkeypatch.setattr(fast_module, "FUSED_CONVS", False)
        plain = fast(x)
        bf_plain = FastRediNet(net).to(torch.bfloat16)(x.to(torch.bfloat16), out=torch.empty(1, 96, 160, 3))
    torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6)
    assert float(fused.min()) >= 0.0 and float(fused.max()) <= 1.0
    # bf16 into a float32 output (the runner's case): within bf16's rounding of each other, clamped too
    assert float((bf_fused - bf_plain).abs().max()) < 0.02
    assert float(bf_fused.min()) >= 0.0 and float(bf_fused.max()) <= 1.0


def test_fused_convs_are_used_only_when_they_match_the_plain_ops(monkeypatch):
    # The ops are private to PyTorch: a release whose ops take other arguments or compute otherwise must fall back.
    assert fast_module._fused_convs_available() == fast_module.fused_convs()
    monkeypatch.setattr(fast_module.F, "leaky_relu_", lambda t, slope: t.mul_(0.5))  # plain no longer matches fused
    assert fast_module._fused_convs_available() is False
    monkeypatch.undo()
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert fast_module._fused_convs_available() is False
