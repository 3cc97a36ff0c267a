"""An inference-only, NHWC-native form of a folded :class:`~redi_stream.model.net.RediNet` for the CPU.

``RediNet.forward`` is the specification; :class:`FastRediNet` computes the same function (tested equal to float32
rounding) with less data movement. On the CPU, oneDNN runs convolutions fastest on channels-last (NHWC) memory,
and most of what the plain forward spends outside convolutions is copies: ``pixel_(un)shuffle``, ``cat``, the
channel shuffle, the clamp, and the final NCHW -> NHWC transpose. Here every one of those becomes at most one
strided copy straight into the buffer its consumer reads:

* ``pixel_unshuffle(s2, 16)`` and ``pixel_unshuffle(s2, 4)`` are single gathers from the mosaic ``x``.
* The HSE stem's grouped conv (1024 -> 128, 8 inputs per group) is a depthwise 3x3 conv followed by a sum over
  each group's 8 channels (oneDNN's grouped kernel for 8-in/1-out groups is ~3x slower than its depthwise one).
* FB1's ``channel_shuffle(cat(MSE, HSE))`` feeding a 4-group conv is a buffer laid out per group as
  ``[MSE 16 ch, HSE 16 ch]`` with that conv's input channels permuted to match; the MSE residual add writes
  straight into its slots.
* FB1's LeakyReLU + PixelShuffle(4) and the LSE output are copied straight into FB2's 24-channel NHWC input.
* FB2's PixelShuffle(2) + clamp become an in-place clamp and one copy into the caller's NHWC output.
* The convs in front of a PixelShuffle have their output channels permuted from (c, i, j) to (i, j, c) order,
  so the shuffle copies move runs of 12 (FB1) or 6 (FB2) contiguous floats instead of scattering single floats.

Measured at 1088x1920 on the 2-core development machine (shared, so best of interleaved runs): plain NCHW
forward 1.00, channels_last forward 0.86-0.89, this 0.68-0.79 of the time. What is left is ~80% convolutions
(FB2's 5x5 24->12 at H/2 alone ~1/3). Rejected: the stem as one strided conv on ``x`` (exact but 128x the MACs:
a 96x96 kernel per output), LSE as a stride-2 10x10 conv on ``x`` (exact, same MACs, 6x slower in oneDNN), FB2
split into two 12-channel convs to skip the concat (slower than one 24-channel conv plus the copy).

Shapes: ``x`` (N, 1, H, W) float32, H and W multiples of 32 -> ``out`` (N, H, W, 3) float32 (NHWC) in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from redi_stream.model.net import LEAKY_SLOPE, RediNet, check_input


def _cl(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _nchw(t_nhwc: Tensor) -> Tensor:
    """A (N, h, w, C) contiguous tensor viewed as the channels-last (N, C, h, w) tensor that convs accept."""
    return t_nhwc.permute(0, 3, 1, 2)


def _nhwc(t: Tensor) -> Tensor:
    """A channels-last (N, C, h, w) tensor viewed as (N, h, w, C) (no copy)."""
    return t.permute(0, 2, 3, 1)


class FastRediNet(nn.Module):
    """Same function as ``RediNet.forward`` (inference only), NHWC output, fewer copies. See the module docstring.

    Args:
        net: a RediNet; its weights are copied (folded if needed), ``net`` itself is not modified.

    ``forward(x, out=None)``: ``x`` float32 (N, 1, H, W); ``out`` optional float32 (N, H, W, 3) contiguous tensor
    to write into (e.g. a view of a host NumPy buffer); returns ``out``. Call under ``torch.inference_mode()``.
    """

    def __init__(self, net: RediNet):
        super().__init__()
        net = net.folded_copy()
        self.net = net.to(memory_format=torch.channels_last)
        self.net.requires_grad_(False)
        stem = net.conv32x[0]
        # Grouped conv (128 groups of 8 inputs) == depthwise conv (1024 ch) + sum of each group's 8 outputs.
        self.register_buffer("stem_dw_weight", stem.weight.detach().reshape(1024, 1, 3, 3).clone())
        self.register_buffer("stem_bias", stem.bias.detach().clone())
        # FB1's grouped conv reads shuffled channels [m0 h0 m1 h1 ...]; our buffer holds, per group k,
        # [m(16k..16k+15), h(16k..16k+15)]: permute the conv's 32 input channels of each group to match.
        w = net.conv32_8_cat[0].weight.detach()
        self.register_buffer("fb1_weight", _cl(w.view(32, 16, 2, 3, 3).transpose(1, 2).reshape(32, 32, 3, 3)))
        # Output channels of the convs before PixelShuffle(r) reordered from c*r*r + i*r + j to (i*r + j)*C + c.
        self._permute_out_channels(self.net.conv32_8_cat[1], 12, 4)
        self._permute_out_channels(self.net.conv_2_8_32, 3, 2)

    @staticmethod
    @torch.no_grad()
    def _permute_out_channels(conv: nn.Conv2d, c: int, r: int) -> None:
        w = conv.weight.view(c, r * r, *conv.weight.shape[1:]).transpose(0, 1).reshape(conv.weight.shape)
        conv.weight.copy_(_cl(w))
        conv.bias.copy_(conv.bias.view(c, r * r).t().reshape(-1))

    # Module outputs are channels-last NCHW tensors; _nhwc/_nchw switch between the two views without copying.
    def _hse(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        net = self.net
        # pixel_unshuffle(pixel_unshuffle(x, 2), 16): channel = (py*2 + px)*256 + qy*16 + qx
        t32 = x.view(n, h // 32, 16, 2, w // 32, 16, 2).permute(0, 1, 4, 3, 6, 2, 5).reshape(n, h // 32, w // 32, 1024)
        y = F.conv2d(_nchw(t32), self.stem_dw_weight, None, padding=1, groups=1024)
        y = _nhwc(y).reshape(n, h // 32, w // 32, 128, 8).sum(-1).add_(self.stem_bias)
        stem = net.conv32x[1](_nchw(y))
        r1 = net.rdb1(stem)
        r2 = net.rdb2(r1)
        r3 = net.rdb3(r2)
        z = net.rdball(torch.cat((r1, r2, r3), 1)).add_(stem)
        return net.conv_rdb8x(_cl(F.pixel_shuffle(z, 4)))

    def forward(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        check_input(x)
        net = self.net
        n, _, h, w = x.shape
        x = x.contiguous()
        if out is None:
            out = torch.empty((n, h, w, 3), dtype=x.dtype, device=x.device)
        h2, w2, h8, w8 = h // 2, w // 2, h // 8, w // 8

        # FB1 input buffer, per group k of the 4-group conv: [MSE 16 ch, HSE 16 ch].
        fb1_in = torch.empty((n, h8, w8, 4, 2, 16), dtype=x.dtype, device=x.device)
        hse = _nhwc(self._hse(x))
        fb1_in[..., 1, :].copy_(hse.reshape(n, h8, w8, 4, 16))
        # MSE on pixel_unshuffle(s2, 4): channel = (py*2 + px)*16 + qy*4 + qx
        t8 = x.view(n, h8, 4, 2, w8, 4, 2).permute(0, 1, 4, 3, 6, 2, 5).reshape(n, h8, w8, 64)
        rb = net.resblock8x
        m = _nhwc(rb.conv2(rb.act(rb.conv1(_nchw(t8)))))
        torch.add(m.reshape(n, h8, w8, 4, 16), t8.view(n, h8, w8, 4, 16), out=fb1_in[..., 0, :])

        # FB2 input buffer (N, H/2, W/2, 24) = [LSE 12 ch, FB1 12 ch].
        fb2_in = torch.empty((n, h2, w2, 24), dtype=x.dtype, device=x.device)
        y = F.conv2d(_nchw(fb1_in.view(n, h8, w8, 128)), self.fb1_weight, net.conv32_8_cat[0].bias, padding=1, groups=4)
        y = _nhwc(net.conv32_8_cat[1](y)).contiguous()
        F.leaky_relu_(y, LEAKY_SLOPE)
        # PixelShuffle(4) with channels in (i, j, c) order: (N, h8, w8, (i*4 + j)*12 + c) -> (N, 4*h8 + i, 4*w8 + j, c).
        # Two copies (into a dense 12-channel tensor, then into FB2's buffer) beat one: torch's strided copy moves
        # 48-float runs in the first and 12-float runs at a fixed stride in the second, ~5x faster than 12-float
        # runs scattered in both dimensions.
        fb1 = torch.empty((n, h8, 4, w8, 4, 12), dtype=x.dtype, device=x.device)
        fb1.copy_(y.view(n, h8, w8, 4, 4, 12).permute(0, 1, 3, 2, 4, 5))
        fb2_in[..., 12:].copy_(fb1.view(n, h2, w2, 12))
        lse = net.conv2x(F.pixel_unshuffle(x, 2))
        fb2_in[..., :12].copy_(_nhwc(lse))

        z = _nhwc(net.conv_2_8_32(_nchw(fb2_in))).contiguous().clamp_(0.0, 1.0)
        # PixelShuffle(2) with channels in (i, j, c) order: (N, h2, w2, (i*2 + j)*3 + c) -> (N, 2*h2 + i, 2*w2 + j, c)
        out.view(n, h2, 2, w2, 2, 3).copy_(z.view(n, h2, w2, 2, 2, 3).permute(0, 1, 3, 2, 4, 5))
        return out
