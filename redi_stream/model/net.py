"""The REDI network (Lamba & Mitra, CVPR 2021), written from SPEC §2.

Layout of :class:`RediNet` (scales relative to the input's H x W)::

    x (N,1,H,W) --pixel_unshuffle 2--> s2 (N,4,H/2,W/2)
      s2 --hse--> (N,64,H/8)    stem at H/32, RDB1..3, rdball + stem, PixelShuffle 4, conv_rdb8x
      s2 --mse--> (N,64,H/8)    resblock8x on pixel_unshuffle(s2, 4)
      s2 --lse--> (N,12,H/2)    conv2x 5x5
      fb1(mse, hse) -> (N,12,H/2);  fb2(lse, fb1) -> (N,3,H,W);  clamp to [0, 1]

The three trunks are independent until ``fb1``/``fb2``; ``forward`` runs them one after the other (this is the
specification the runners are tested against), and the CUDA runner schedules the same named methods on three
streams.

Module names follow the blocks of SPEC §2 without the official code's one-element ``Sequential`` wrappers, so an
official checkpoint key such as ``RDB2.dense_layers.3.conv.1.weight_v`` maps to ``rdb2.layers.3.conv.*`` here (see
:mod:`redi_stream.model.weights`).

Weight normalisation (``weight = g * v / ||v||``, norm per output channel) is a parametrisation on every conv while
training; :func:`fold_weight_norm` turns it into plain weights for inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from redi_stream.errors import ConfigError

#: Every spatial size the network accepts is a multiple of this (pixel_unshuffle 2, then 16).
SIZE_MULTIPLE = 32
#: Negative slope of every LeakyReLU in the network.
LEAKY_SLOPE = 0.2


def _conv(
    c_in: int,
    c_out: int,
    k: int,
    *,
    groups: int = 1,
    bias: bool = True,
    slope: float | None = None,
    weight_norm: bool = True,
) -> nn.Conv2d:
    """A stride-1, 'same'-padded conv with MSRA init and (optionally) weight normalisation.

    Init (He et al. 2015, Kaiming normal, fan-in): ``slope`` is the negative slope of the LeakyReLU that the
    conv's output goes through next (SPEC §2: "a = the following LeakyReLU slope"); ``None`` means no rectifier
    follows, and the gain is the linear one (std = 1/sqrt(fan_in)) rather than ReLU's sqrt(2)/sqrt(fan_in): a
    ReLU gain on a linear layer would double the activation variance at every such layer. Biases start at zero.
    With weight normalisation the parametrisation is added after init, so ``g = ||v||`` and the initial effective
    weight equals the Kaiming draw.
    """
    conv = nn.Conv2d(c_in, c_out, k, padding=(k - 1) // 2, groups=groups, bias=bias)
    if slope is None:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
    else:
        nn.init.kaiming_normal_(conv.weight, a=slope, mode="fan_in", nonlinearity="leaky_relu")
    if bias:
        nn.init.zeros_(conv.bias)
    if weight_norm:
        _weight_norm(conv, name="weight", dim=0)
    return conv


class DenseLayer(nn.Module):
    """One dense layer of a modified RDB: ``conv(act(x))``, 3x3, no bias, ``growth`` output channels.

    ``act`` is LeakyReLU(0.2) for the middle layers of a block and the identity for its first and last layer.
    """

    def __init__(self, c_in: int, growth: int, *, rectify_input: bool, slope: float | None, weight_norm: bool):
        super().__init__()
        self.act: nn.Module = nn.LeakyReLU(LEAKY_SLOPE) if rectify_input else nn.Identity()
        self.conv = _conv(c_in, growth, 3, bias=False, slope=slope, weight_norm=weight_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.act(x))


class ResidualDenseBlock(nn.Module):
    """Modified residual dense block (SPEC §2): ``n_layers`` dense layers, conv1x1 fusion, + block input.

    Dense layer i sees ``cat(block input, out_0, ..., out_{i-1})`` (outputs not rectified: a middle layer's
    LeakyReLU is applied to its own input only). Shapes: (N, channels, h, w) -> (N, channels, h, w).
    """

    def __init__(self, channels: int = 64, growth: int = 32, n_layers: int = 4, *, weight_norm: bool = True):
        super().__init__()
        layers = []
        for i in range(n_layers):
            middle = 0 < i < n_layers - 1
            # Layer i's output goes through a LeakyReLU next only if layer i + 1 is a middle layer.
            feeds_rectifier = 0 < i + 1 < n_layers - 1
            layers.append(
                DenseLayer(
                    channels + growth * i,
                    growth,
                    rectify_input=middle,
                    slope=LEAKY_SLOPE if feeds_rectifier else None,
                    weight_norm=weight_norm,
                )
            )
        self.layers = nn.ModuleList(layers)
        self.conv1x1 = _conv(channels + growth * n_layers, channels, 1, bias=False, weight_norm=weight_norm)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, 1) if len(feats) > 1 else x))
        return self.conv1x1(torch.cat(feats, 1)) + x


class ResBlock(nn.Module):
    """``conv2(LeakyReLU(conv1(x))) + x``, both 3x3 with bias; (N, C, h, w) -> (N, C, h, w)."""

    def __init__(self, channels: int = 64, *, weight_norm: bool = True):
        super().__init__()
        self.conv1 = _conv(channels, channels, 3, slope=LEAKY_SLOPE, weight_norm=weight_norm)
        self.act = nn.LeakyReLU(LEAKY_SLOPE)
        self.conv2 = _conv(channels, channels, 3, weight_norm=weight_norm)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(self.act(self.conv1(x))) + x


def check_input(x: Tensor) -> None:
    """Raise :class:`ConfigError` unless ``x`` is (N, 1, H, W) with H and W multiples of 32."""
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"REDI input must be (N, 1, H, W) Bayer RGGB, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
        raise ConfigError(
            f"REDI input height and width must be positive multiples of {SIZE_MULTIPLE}, got {h}x{w}; "
            "pad the frame (reflect) and crop the output back"
        )


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet channel shuffle: view C as (groups, C // groups), transpose, flatten; (N,C,h,w) -> same."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class RediNet(nn.Module):
    """REDI, exactly SPEC §2: (N, 1, H, W) RGGB mosaic -> (N, 3, H, W) in [0, 1].

    Args:
        weight_norm: put a weight-norm parametrisation on every conv (training form; 784,768 parameters). With
            False the convs hold plain weights (inference form; 783,432 parameters), as after :meth:`fold`.

    Input: float (N, 1, H, W), black-subtracted, normalised by (white - black), times the amplification; H and W
    positive multiples of 32. Output: float (N, 3, H, W) clamped to [0, 1]; its colour space is stated by the
    weights' metadata (``model.meta.output`` once loaded by :func:`~redi_stream.model.weights.load_weights`).
    """

    def __init__(self, *, weight_norm: bool = True):
        super().__init__()
        #: :class:`~redi_stream.model.weights.WeightsMeta` of loaded weights; None for a freshly built network.
        self.meta = None
        wn = weight_norm
        # HSE (H/32): grouped stem on pixel_unshuffle(s2, 16), three RDBs, global 1x1 fusion.
        self.conv32x = nn.Sequential(
            _conv(1024, 128, 3, groups=128, weight_norm=wn),
            _conv(128, 64, 3, weight_norm=wn),
        )
        self.rdb1 = ResidualDenseBlock(64, 32, 4, weight_norm=wn)
        self.rdb2 = ResidualDenseBlock(64, 32, 5, weight_norm=wn)
        self.rdb3 = ResidualDenseBlock(64, 32, 5, weight_norm=wn)
        self.rdball = _conv(192, 64, 1, bias=False, weight_norm=wn)
        self.conv_rdb8x = _conv(4, 64, 3, weight_norm=wn)
        # MSE (H/8).
        self.resblock8x = ResBlock(64, weight_norm=wn)
        # FB1 (H/8 -> H/2).
        self.conv32_8_cat = nn.Sequential(
            _conv(128, 32, 3, groups=4, weight_norm=wn),
            _conv(32, 192, 3, slope=LEAKY_SLOPE, weight_norm=wn),
        )
        self.fb1_act = nn.LeakyReLU(LEAKY_SLOPE)
        # LSE (H/2) and FB2 (H/2 -> H).
        self.conv2x = _conv(4, 12, 5, weight_norm=wn)
        self.conv_2_8_32 = _conv(24, 12, 5, weight_norm=wn)

    # --- the named pieces of forward; the CUDA runner schedules exactly these -------------------------------
    @staticmethod
    def unshuffle(x: Tensor) -> Tensor:
        """(N, 1, H, W) RGGB -> s2 (N, 4, H/2, W/2), channels R, G1, G2, B."""
        return F.pixel_unshuffle(x, 2)

    def hse(self, s2: Tensor) -> Tensor:
        """High-scale encoder: s2 (N, 4, H/2, W/2) -> (N, 64, H/8, W/8)."""
        stem = self.conv32x(F.pixel_unshuffle(s2, 16))
        r1 = self.rdb1(stem)
        r2 = self.rdb2(r1)
        r3 = self.rdb3(r2)
        y = self.rdball(torch.cat((r1, r2, r3), 1)) + stem
        return self.conv_rdb8x(F.pixel_shuffle(y, 4))

    def mse(self, s2: Tensor) -> Tensor:
        """Medium-scale encoder: s2 (N, 4, H/2, W/2) -> (N, 64, H/8, W/8)."""
        return self.resblock8x(F.pixel_unshuffle(s2, 4))

    def lse(self, s2: Tensor) -> Tensor:
        """Low-scale encoder: s2 (N, 4, H/2, W/2) -> (N, 12, H/2, W/2)."""
        return self.conv2x(s2)

    def fb1(self, mse_out: Tensor, hse_out: Tensor) -> Tensor:
        """First fuse block: (N, 64, H/8) x 2 -> (N, 12, H/2, W/2)."""
        y = channel_shuffle(torch.cat((mse_out, hse_out), 1), 2)
        y = self.fb1_act(self.conv32_8_cat(y))
        return F.pixel_shuffle(y, 4)

    def fb2(self, lse_out: Tensor, fb1_out: Tensor) -> Tensor:
        """Second fuse block: (N, 12, H/2) x 2 -> (N, 3, H, W), not yet clamped."""
        return F.pixel_shuffle(self.conv_2_8_32(torch.cat((lse_out, fb1_out), 1)), 2)

    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, H, W) -> (N, 3, H, W) in [0, 1]; the three trunks run one after the other.

        Raises:
            ConfigError: (also a ValueError) ``x`` is not (N, 1, H, W) with H, W multiples of 32.
        """
        check_input(x)
        s2 = self.unshuffle(x)
        hse_out = self.hse(s2)
        mse_out = self.mse(s2)
        lse_out = self.lse(s2)
        return self.fb2(lse_out, self.fb1(mse_out, hse_out)).clamp(0.0, 1.0)

    # --- deployment -------------------------------------------------------------------------------------------
    @property
    def is_folded(self) -> bool:
        """True when no conv carries a weight-norm parametrisation (inference form)."""
        return not any(parametrize.is_parametrized(m, "weight") for m in self.modules())

    def fold(self) -> "RediNet":
        """Fold weight normalisation into plain weights, in place; returns ``self``. See :func:`fold_weight_norm`."""
        return fold_weight_norm(self)

    @torch.no_grad()
    def folded_copy(self) -> "RediNet":
        """A new folded (plain-weight) RediNet on the CPU, float32, eval mode, same ``meta``; ``self`` is untouched.

        (``copy.deepcopy`` does not work on parametrised modules, hence this.)
        """
        plain = RediNet(weight_norm=False).eval()
        convs = {name: m for name, m in self.named_modules() if isinstance(m, nn.Conv2d)}
        for name, dst in plain.named_modules():
            if isinstance(dst, nn.Conv2d):
                src = convs[name]
                dst.weight.copy_(src.weight)  # evaluates g * v / ||v|| when parametrised
                if dst.bias is not None:
                    dst.bias.copy_(src.bias)
        plain.meta = self.meta
        return plain


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Replace every weight-norm parametrisation by the plain weight it computes (timm's ``convert_to_deploy``).

    In place; returns ``model``. The folded weight is ``g * v / ||v||`` evaluated once, so outputs equal the
    unfolded model's to float32 rounding. Models without parametrisations are returned unchanged.
    """
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of ``model``."""
    return sum(p.numel() for p in model.parameters())
