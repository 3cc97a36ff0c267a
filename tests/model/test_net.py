"""RediNet: size facts from SPEC §2, shapes, input checks, the named pieces, folding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from redi_stream.errors import ConfigError
from redi_stream.model import RediNet, count_parameters, fold_weight_norm
from redi_stream.model.net import channel_shuffle


@pytest.fixture(scope="module")
def net() -> RediNet:
    torch.manual_seed(0)
    return RediNet().eval()


def test_parameter_count_matches_spec(net):
    # SPEC §2: 784,768 parameters in the training (weight-normalised) form: weights + biases + one g per channel.
    assert count_parameters(net) == 784_768
    assert count_parameters(RediNet(weight_norm=False)) == 784_768 - 1_336  # 27 convs, 1,336 output channels
    assert len(net.state_dict()) == 63


def _count_macs(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Multiply-accumulates per forward, counted from the shapes the layers really see (forward hooks).

    ``conv``: out_elements * (in_channels / groups) * kh * kw (the products); ``bias``: one add per output element
    of a conv with bias; ``act``: one op per LeakyReLU output element. ptflops reports conv + bias + act.
    """
    counts = {"conv": 0.0, "bias": 0.0, "act": 0.0}

    def conv_hook(mod: nn.Conv2d, inp, out):
        kh, kw = mod.kernel_size
        counts["conv"] += out.numel() * (mod.in_channels // mod.groups) * kh * kw
        if mod.bias is not None:
            counts["bias"] += out.numel()

    def act_hook(mod, inp, out):
        counts["act"] += out.numel()

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.LeakyReLU):
            handles.append(mod.register_forward_hook(act_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return counts


def test_mac_count_matches_spec_at_2048x4096(net):
    # Every layer's work is proportional to H * W (all sizes are multiples of 32), so a 64x64 count scales exactly.
    counts = _count_macs(net, torch.rand(1, 1, 64, 64))
    scale = (2048 * 4096) / (64 * 64)
    conv_macs = counts["conv"] * scale
    ptflops_macs = (counts["conv"] + counts["bias"] + counts["act"]) * scale
    assert ptflops_macs == pytest.approx(41.38e9, rel=0.001)  # 41.378e9
    assert conv_macs == pytest.approx(41.38e9, rel=0.005)  # the products alone: 41.23e9
    assert conv_macs == 41_230_008_320


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (2, 1, 32, 96)])
def test_forward_shape_range_and_pieces(net, shape):
    n, _, h, w = shape
    x = torch.rand(shape) * 4
    with torch.no_grad():
        y = net(x)
        s2 = net.unshuffle(x)
        hse, mse, lse = net.hse(s2), net.mse(s2), net.lse(s2)
        fb1 = net.fb1(mse, hse)
        fb2 = net.fb2(lse, fb1)
    assert y.shape == (n, 3, h, w) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert s2.shape == (n, 4, h // 2, w // 2)
    assert hse.shape == mse.shape == (n, 64, h // 8, w // 8)
    assert lse.shape == fb1.shape == (n, 12, h // 2, w // 2)
    torch.testing.assert_close(fb2.clamp(0, 1), y, rtol=0, atol=0)


def test_batch_items_are_independent(net):
    x = torch.rand(2, 1, 32, 64)
    with torch.no_grad():
        both = net(x)
        first = net(x[:1])
    torch.testing.assert_close(both[:1], first, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 60, 64), (1, 1, 64, 48), (1, 3, 64, 64), (1, 64, 64), (1, 1, 0, 64)])
def test_bad_input_shape_raises_config_error(net, shape):
    with pytest.raises(ConfigError, match="multiple|N, 1, H, W"):
        net(torch.zeros(shape))
    with pytest.raises(ValueError):  # ConfigError is also a ValueError
        net(torch.zeros(shape))


def test_channel_shuffle_interleaves_two_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


def test_rdb_first_and_last_dense_layers_have_no_activation(net):
    for rdb, n in ((net.rdb1, 4), (net.rdb2, 5), (net.rdb3, 5)):
        acts = [type(layer.act).__name__ for layer in rdb.layers]
        assert acts == ["Identity"] + ["LeakyReLU"] * (n - 2) + ["Identity"]
        assert [layer.conv.in_channels for layer in rdb.layers] == [64 + 32 * i for i in range(n)]
        assert rdb.conv1x1.in_channels == 64 + 32 * n


def test_fold_equals_unfolded_and_removes_parametrizations():
    torch.manual_seed(1)
    net = RediNet().eval()
    with torch.no_grad():  # make g differ from ||v|| so folding really has something to fold
        for mod in net.modules():
            if isinstance(mod, nn.Conv2d):
                g = mod.parametrizations.weight.original0
                g.mul_(torch.rand_like(g) + 0.5)
    x = torch.rand(1, 1, 64, 96) * 2
    with torch.no_grad():
        ref = net(x)
        assert not net.is_folded
        assert fold_weight_norm(net) is net
        assert net.is_folded
        out = net(x)
    assert not any("parametrizations" in k for k in net.state_dict())
    assert len(net.state_dict()) == 27 + 9
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert net.fold() is net  # folding twice is harmless


def test_init_is_msra_fan_in():
    torch.manual_seed(2)
    net = RediNet()
    w = net.resblock8x.conv1.weight.detach()  # followed by LeakyReLU(0.2): std = sqrt(2 / (1 + 0.04)) / sqrt(576)
    assert float(w.std()) == pytest.approx((2 / 1.04) ** 0.5 / 24, rel=0.05)
    w = net.resblock8x.conv2.weight.detach()  # no rectifier follows: linear gain, std = 1 / sqrt(576)
    assert float(w.std()) == pytest.approx(1 / 24, rel=0.05)
    assert float(net.conv2x.bias.detach().abs().max()) == 0.0


def test_backward_runs_in_training_form():
    net = RediNet().train()
    y = net(torch.rand(1, 1, 32, 32))
    y.mean().backward()
    g = net.conv_2_8_32.parametrizations.weight.original0.grad
    assert g is not None and g.shape == (12, 1, 1, 1)
