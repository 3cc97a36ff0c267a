"""The torch twins of the CPU kernels (model.gpu_ops) against the numba kernels, on the CPU device (and CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from redi_stream import kernels
from redi_stream.frames import CFA
from redi_stream.model import gpu_ops

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def _raw(h: int, w: int, seed: int = 0, hi: int = 16383) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = rng.integers(0, hi + 200, size=(h, w)).astype(np.uint16)  # some pixels above white, some below black
    raw.flat[:3] = [65535, 0, 40000]
    return raw


def _t(a: np.ndarray, device: str) -> torch.Tensor:
    if a.dtype == np.uint16:
        a = a.view(np.int16)  # uint16 bits travel as int16 (torch's uint16 support is limited)
    return torch.from_numpy(np.ascontiguousarray(a)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("shape", [(40, 70), (33, 65), (2, 2), (64, 96)])
def test_packer_equals_pack_raw(device, cfa, shape):
    raw = _raw(*shape, seed=sum(shape))
    black, white, gain = np.array([512, 520, 505, 530], np.float32), 16383.0, 37.5
    hp, wp = kernels.padded_shape(*shape, cfa)
    ref = kernels.pack_raw(raw, black, white, cfa, gain, np.empty((hp, wp), np.float32))
    packer = gpu_ops.BayerPacker(shape, cfa, black, white, device)
    assert packer.padded_shape == (hp, wp)
    got = packer(_t(raw, device), torch.tensor(gain, device=device)).cpu().numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0)  # division order identical; 1 ulp of the gain product
    out = torch.full((hp, wp), -1.0, device=device)
    assert packer(_t(raw, device), gain, out=out) is out
    # crop() is unpack_crop on NHWC outputs.
    nhwc = np.random.default_rng(1).random((hp, wp, 3), dtype=np.float32)
    np.testing.assert_array_equal(packer.crop(torch.from_numpy(nhwc)).numpy(), kernels.unpack_crop(nhwc, cfa, *shape))


def test_packer_validation():
    with pytest.raises(ValueError, match="2x2"):
        gpu_ops.BayerPacker((1, 5), CFA.RGGB, [0] * 4, 100.0)
    with pytest.raises(ValueError, match="exceed"):
        gpu_ops.BayerPacker((4, 4), CFA.RGGB, [0, 0, 0, 200], 100.0)
    packer = gpu_ops.BayerPacker((4, 4), CFA.RGGB, [0] * 4, 100.0)
    with pytest.raises(ValueError, match="built for"):
        packer(torch.zeros(4, 6, dtype=torch.int16), 1.0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("white", [16383.0, 4095.5])
def test_gain_sums_give_estimate_gain(device, white):
    raw = _raw(37, 54, seed=3, hi=int(white))
    raw //= 40  # dark, as the amplifier sees it
    raw += 500
    black = np.array([500, 503, 498, 501], np.float32)
    sums = gpu_ops.GainSums(raw.shape, black, white, device)(_t(raw, device)).cpu().numpy()
    from redi_stream.kernels.gain import gain_from_sums

    got = gain_from_sums(float(sums[0]), float(sums[1]), 0.01, 1.0, 300.0)
    assert got == pytest.approx(kernels.estimate_gain(raw, black, white), rel=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("out_dtype, torch_dtype", [(np.uint8, torch.uint8), (np.uint16, torch.int32)])
def test_apply_isp_within_one_code_of_the_kernel(device, out_dtype, torch_dtype):
    rng = np.random.default_rng(5)
    lin = rng.random((48, 64, 3), dtype=np.float32) * 1.2 - 0.05
    lin[0, 0] = [np.nan, 0.5, 0.5]
    wb = np.array([2.1, 1.0, 1.7], np.float32)
    m = np.array([[1.6, -0.4, -0.2], [-0.2, 1.5, -0.3], [0.0, -0.5, 1.5]], np.float32)
    ref = kernels.apply_isp(lin, wb, m, np.empty(lin.shape, out_dtype)).astype(np.int64)
    got = gpu_ops.apply_isp(torch.from_numpy(lin).to(device), torch.from_numpy(wb), torch.from_numpy(m),
                            torch_dtype).cpu().numpy().astype(np.int64)
    assert np.abs(got - ref).max() <= 1
    assert (got == ref).mean() > 0.97
    assert got[0, 0].tolist() == ref[0, 0].tolist()  # the NaN pixel: same rendering as the kernel


@pytest.mark.parametrize("device", DEVICES)
def test_float_to_uint_equals_kernel(device):
    img = np.random.default_rng(6).random((20, 30, 3), dtype=np.float32) * 1.4 - 0.2
    img[1, 1, 1] = np.nan
    for out_dtype, torch_dtype in ((np.uint8, torch.uint8), (np.uint16, torch.int32)):
        ref = kernels.float_to_uint(img, np.empty(img.shape, out_dtype))
        got = gpu_ops.float_to_uint(torch.from_numpy(img).to(device), torch_dtype).cpu().numpy()
        np.testing.assert_array_equal(got.astype(np.int64), ref.astype(np.int64))


@pytest.mark.parametrize("device", DEVICES)
def test_rgb_to_yuv420p_equals_kernel(device):
    rgb = np.random.default_rng(7).integers(0, 256, size=(36, 50, 3)).astype(np.uint8)
    rgb[:2, :2] = 255
    rgb[2:4, :2] = 0
    h, w = rgb.shape[:2]
    ref = kernels.rgb_to_yuv420p(rgb, np.empty((h, w), np.uint8), np.empty((h // 2, w // 2), np.uint8),
                                 np.empty((h // 2, w // 2), np.uint8))
    got = gpu_ops.rgb_to_yuv420p(torch.from_numpy(rgb).to(device))
    for g, r in zip(got, ref):
        g = g.cpu().numpy()
        assert g.shape == r.shape and g.dtype == np.uint8
        diff = np.abs(g.astype(np.int64) - r)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    with pytest.raises(ValueError, match="even"):
        gpu_ops.rgb_to_yuv420p(torch.zeros(3, 4, 3, dtype=torch.uint8))
