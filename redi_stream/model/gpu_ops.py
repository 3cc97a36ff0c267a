"""Pre- and post-processing of the network as device-agnostic torch ops, for the CUDA path (SPEC §6, issue 5).

These are the torch twins of the numba kernels (``kernels.pack_raw``, ``kernels.estimate_gain``'s sums,
``kernels.apply_isp``, ``kernels.float_to_uint``, ``kernels.rgb_to_yuv420p``), so that on a GPU only raw uint16
frames go up and only uint8 planes come down, and the CPU does nothing but decode and encode. They are plain
torch, so they run (and are tested against the kernels) on the CPU too; on CUDA they are captured into the same
CUDA graph as the network by :class:`~redi_stream.stream.gpu_enhance.CudaRediEnhancer`.

Conventions (ARCHITECTURE.md): raw frames are (H, W) uint16 in raw DN with black levels per 2x2 position (TL, TR,
BL, BR); packing black-subtracts, divides by ``white - black``, clips to [0, 1], multiplies by the gain, unifies
the CFA to RGGB by reflect-prepending ``cfa.offset`` rows/cols and reflect-pads to multiples of 32. Reflection
moves indices by even amounts, so every padded pixel keeps its Bayer phase (NumPy ``"reflect"`` semantics,
repeated for pads wider than the frame).

torch has only limited uint16 support, so raw frames travel as int16 tensors with the same bits
(``torch.from_numpy(raw.view(np.int16))``); :func:`raw_to_float` reads them back as unsigned values.

``model`` layering: torch, :mod:`redi_stream.frames` and :mod:`redi_stream.amplifier` only; no kernels, capture or
stream imports.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from redi_stream.amplifier import INPUT_CEILING, gain_lut
from redi_stream.frames import CFA
from redi_stream.kernels.pack import padded_shape

#: sRGB transfer curve breakpoints (IEC 61966-2-1).
_SRGB_LINEAR_MAX = 0.0031308


def raw_to_float(raw: Tensor) -> Tensor:
    """(..., H, W) int16 (bits of uint16 DN) or uint16/int32 tensor -> float32 DN in [0, 65535]."""
    if raw.dtype == torch.int16:
        return raw.to(torch.int32).bitwise_and_(0xFFFF).to(torch.float32)
    return raw.to(torch.float32)


def _reflect_index(n_out: int, offset: int, n: int) -> np.ndarray:
    """Source index of each of ``n_out`` positions when the frame (length ``n`` >= 2) starts at ``offset`` and the
    rest is filled by edge-excluding reflection (period 2 (n - 1)); same as ``kernels.pack._reflect``."""
    period = 2 * (n - 1)
    i = (np.arange(n_out) - offset) % period
    return np.where(i >= n, period - i, i)


class BayerPacker:
    """``kernels.pack_raw`` in torch: raw (H, W) DN -> the network's (Hp, Wp) RGGB input, on any device.

    Args:
        shape: (H, W) of the raw frame (each >= 2); cfa: its Bayer pattern.
        black: (4,) black level per 2x2 position (TL, TR, BL, BR); white: white level (> every black level).
        device: where the index and level maps live (and the frames will be).
        multiple: pad to multiples of this (32 for the network).

    The per-pixel source index (unification + reflect padding) and the per-pixel black level and range are built
    once here; ``__call__`` is then one gather and four elementwise ops, with no host synchronisation, so it can
    be captured in a CUDA graph (give ``gain`` as a device tensor that the host updates before each replay).
    """

    def __init__(self, shape: tuple[int, int], cfa: CFA, black, white: float, device: str | torch.device = "cpu",
                 multiple: int = 32) -> None:
        h, w = (int(s) for s in shape)
        if h < 2 or w < 2:
            raise ValueError(f"a Bayer frame needs at least 2x2 pixels, got {h}x{w}")
        black = np.asarray(black, dtype=np.float32).reshape(-1)
        if black.shape != (4,) or not np.all(np.isfinite(black)) or not math.isfinite(white):
            raise ValueError(f"need 4 finite black levels and a finite white level, got {black.tolist()}, {white}")
        if not white > float(black.max()):
            raise ValueError(f"white level {white} must exceed every black level {black.tolist()}")
        self.cfa = CFA(cfa)
        dy, dx = self.cfa.offset
        hp, wp = padded_shape(h, w, self.cfa, multiple)
        self.shape, self.padded_shape, self.offset = (h, w), (hp, wp), (dy, dx)
        iy, ix = _reflect_index(hp, dy, h), _reflect_index(wp, dx, w)
        pos = 2 * (iy[:, None] & 1) + (ix[None, :] & 1)  # 2x2 position of each source pixel
        dev = torch.device(device)
        self.iy = torch.from_numpy(iy).to(dev)
        self.ix = torch.from_numpy(ix).to(dev)
        # float32 like the kernel: black as float32, white - black computed in float64 then rounded.
        denom = (np.float64(white) - black.astype(np.float64)).astype(np.float32)
        self.black_map = torch.from_numpy(black[pos]).to(dev)
        self.denom_map = torch.from_numpy(denom[pos]).to(dev)

    def __call__(self, raw: Tensor, gain: Tensor | float, out: Tensor | None = None) -> Tensor:
        """raw (H, W) int16/uint16 tensor -> (Hp, Wp) float32 in [0, min(gain, INPUT_CEILING)] (into ``out``)."""
        if tuple(raw.shape) != self.shape:
            raise ValueError(f"raw frame is {tuple(raw.shape)}, the packer was built for {self.shape}")
        v = raw_to_float(raw[self.iy[:, None], self.ix[None, :]])
        v = v.sub_(self.black_map).div_(self.denom_map).clamp_(0.0, 1.0).mul_(gain).clamp_(max=INPUT_CEILING)
        if out is None:
            return v
        return out.copy_(v)

    def crop(self, net_out: Tensor) -> Tensor:
        """View of the frame's region in an NHWC network output (..., Hp, Wp, 3) -> (..., H, W, 3)."""
        (dy, dx), (h, w) = self.offset, self.shape
        return net_out[..., dy : dy + h, dx : dx + w, :]


class GainSums:
    """Eq. 5's two sums (``sum w``, ``sum w r``, float64) of a raw frame on the device: ``kernels.estimate_gain``
    without the final division, so the gain can be formed without copying the frame back to the host.

    ``A = clamp(target * sum_w / sum_wr, lo, hi)`` (``kernels.gain.gain_from_sums``) is then computed by the caller
    from the two numbers (one 16-byte D2H) or kept on the device.
    """

    def __init__(self, shape: tuple[int, int], black, white: float, device: str | torch.device = "cpu") -> None:
        h, w = (int(s) for s in shape)
        lut = gain_lut(tuple(float(b) for b in np.asarray(black, np.float32).reshape(-1)), float(white))
        dev = torch.device(device)
        self.last = lut.shape[1] - 1
        # A copy: the shared table is read-only. Row p * (L + 1) + value.
        self.lut = torch.tensor(lut.reshape(-1, 2), device=dev)
        pos = 2 * (np.arange(h)[:, None] & 1) + (np.arange(w)[None, :] & 1)
        self.base = torch.from_numpy((pos * (self.last + 1)).astype(np.int64)).to(dev)
        self.shape = (h, w)

    def __call__(self, raw: Tensor) -> Tensor:
        """raw (H, W) int16/uint16 -> (2,) float64 tensor (sum w, sum w r)."""
        v = raw_to_float(raw).to(torch.int64).clamp_(max=self.last)
        return self.lut[(v + self.base).view(-1)].sum(0)


def srgb_encode(x: Tensor) -> Tensor:
    """IEC 61966-2-1 sRGB transfer curve of linear ``x`` in [0, 1]."""
    return torch.where(x <= _SRGB_LINEAR_MAX, x * 12.92, 1.055 * x.clamp_min(_SRGB_LINEAR_MAX).pow(1.0 / 2.4) - 0.055)


def _quantise(v: Tensor, dtype: torch.dtype) -> Tensor:
    maxval = {torch.uint8: 255.0, torch.int16: 65535.0, torch.int32: 65535.0}.get(dtype)
    if maxval is None:
        raise ValueError(f"dtype must be torch.uint8 (8-bit) or torch.int32 (16-bit codes), got {dtype}")
    return (v * maxval + 0.5).floor_().to(dtype)


def apply_isp(lin: Tensor, wb: Tensor, cam_to_srgb: Tensor, dtype: torch.dtype = torch.uint8) -> Tensor:
    """``kernels.apply_isp`` in torch: linear camera RGB (..., 3) -> WB -> matrix -> clip -> sRGB curve -> codes.

    Args:
        lin: (..., 3) float (any layout, e.g. a crop view of the network's NHWC output); wb: (3,); cam_to_srgb:
            (3, 3). NaN after the matrix renders as 0.
        dtype: torch.uint8 (0..255) or torch.int32 (0..65535, the caller narrows to uint16 on the host).

    Returns:
        (..., 3) tensor of ``dtype``: ``floor(maxval * srgb(clip(M @ min(wb * lin, 1), 0, 1)) + 0.5)``, the exact
        curve
        (the CPU kernel's approximations, a polynomial for uint8 and a table for uint16, are within one code of it).
    """
    wb = wb.to(torch.float32).to(lin.device)
    balanced = (lin.to(torch.float32) * wb).clamp_(max=1.0)  # the highlight clip of kernels.isp (NaN stays NaN)
    v = torch.nan_to_num(balanced @ cam_to_srgb.to(torch.float32).to(lin.device).t(), nan=0.0).clamp_(0.0, 1.0)
    return _quantise(srgb_encode(v), dtype)


def float_to_uint(img: Tensor, dtype: torch.dtype = torch.uint8) -> Tensor:
    """``kernels.float_to_uint`` in torch: ``floor(clip(img, 0, 1) * maxval + 0.5)`` (NaN -> 0)."""
    return _quantise(torch.nan_to_num(img.to(torch.float32), nan=0.0).clamp_(0.0, 1.0), dtype)


# BT.709 luma coefficients and limited-range scales, as kernels.isp.rgb_to_yuv420p.
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB


def rgb_to_yuv420p(rgb: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``kernels.rgb_to_yuv420p`` in torch: (H, W, 3) uint8 sRGB, H and W even -> BT.709 limited-range planes
    y (H, W), u (H/2, W/2), v (H/2, W/2) uint8 (contiguous). Chroma from each 2x2 block's mean RGB.

    float32 arithmetic in the kernel's order; a device that contracts multiply-adds into FMAs can differ by one
    code value where a value lands on a rounding boundary (rare; the tests allow it).
    """
    if rgb.dtype != torch.uint8 or rgb.dim() != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {tuple(rgb.shape)}")
    h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even height and width, got {h}x{w}")
    # Python floats rounded to float32: a float32 tensor times a Python scalar computes in float32, like the kernel.
    kr, kg, kb = (float(np.float32(k)) for k in (_KR, _KG, _KB))
    f = rgb.to(torch.float32)
    r, g, b = f.unbind(-1)
    luma = kr * r + kg * g + kb * b
    y = (float(np.float32(219.0 / 255.0)) * luma + 16.5).to(torch.uint8)
    blocks = rgb.view(h // 2, 2, w // 2, 2, 3).to(torch.int32).sum((1, 3)).to(torch.float32) * 0.25
    br, bg, bb = blocks.unbind(-1)
    bl = kr * br + kg * bg + kb * bb
    su = float(np.float32(224.0 / 255.0 / (2.0 * (1.0 - _KB))))
    sv = float(np.float32(224.0 / 255.0 / (2.0 * (1.0 - _KR))))
    u = (su * (bb - bl) + 128.5).clamp_(0.0, 255.0).to(torch.uint8)
    v = (sv * (br - bl) + 128.5).clamp_(0.0, 255.0).to(torch.uint8)
    return y.contiguous(), u.contiguous(), v.contiguous()
