"""warm_up compiles exactly the specialisations the pipeline uses, so frame 0 triggers no compilation."""

from __future__ import annotations

import numpy as np
import pytest

import redi_stream.kernels as kernels
from redi_stream.frames import CFA
from redi_stream.kernels import warmup


def _signatures() -> dict[str, int]:
    return {name: len(d.signatures) for name, d in warmup.dispatchers().items()}


def test_public_api() -> None:
    for name in kernels.__all__:
        assert callable(getattr(kernels, name)), name


@pytest.mark.parametrize("cfa", list(CFA))
def test_pipeline_calls_after_warm_up_compile_nothing(cfa: CFA) -> None:
    kernels.warm_up()
    before = _signatures()
    assert all(n >= 1 for n in before.values()), before

    # One frame's journey (ARCHITECTURE.md), with realistic layouts: frame data, a slot of a batch input buffer,
    # the runner's (N, Hp, Wp, 3) NHWC output cropped back per frame.
    h, w = 37, 64
    raw = np.random.default_rng(0).integers(0, 4096, size=(h, w)).astype(np.uint16)
    black = np.array([256.0, 256.0, 256.0, 256.0], dtype=np.float32)
    hp, wp = kernels.padded_shape(h, w, cfa)
    batch_in = np.empty((2, 1, hp, wp), dtype=np.float32)
    kernels.fix_hot_pixels(raw, black, 4095.0, cfa, np.empty_like(raw))
    gain = kernels.GainSmoother().update(kernels.estimate_gain(raw, black, 4095.0))
    kernels.pack_raw(raw, black, 4095.0, cfa, gain, batch_in[1, 0])
    net_out = np.random.default_rng(1).random((2, hp, wp, 3), dtype=np.float32)
    for dtype in (np.uint8, np.uint16):
        lin = kernels.unpack_crop(net_out, cfa, h, w)[1]
        kernels.apply_isp(lin, np.ones(3, np.float32), np.eye(3, dtype=np.float32), np.empty((h, w, 3), dtype))
        kernels.float_to_uint(lin, np.empty((h, w, 3), dtype))
    full = np.ascontiguousarray(net_out[0, :h, :w])  # a crop that happens to be contiguous
    kernels.apply_isp(full, np.ones(3, np.float32), np.eye(3, dtype=np.float32), np.empty((h, w, 3), np.uint8))
    rgb8 = np.empty((36, 64, 3), dtype=np.uint8)
    planes = np.empty((36, 64), np.uint8), np.empty((18, 32), np.uint8), np.empty((18, 32), np.uint8)
    kernels.rgb_to_yuv420p(rgb8, *planes)
    kernels.unpack_raw10(np.zeros((4, 80), np.uint8), 64, np.empty((4, 64), np.uint16))
    kernels.unpack_raw12(np.zeros((4, 96), np.uint8), 64, np.empty((4, 64), np.uint16))
    kernels.mosaic_rgb(net_out[0], cfa, np.empty((hp, wp), np.float32))
    for view in (lin, full):  # --temporal-denoise on the strided crop and on a contiguous one
        den = kernels.TemporalDenoiser(4.0)
        den(view)
        den(view)

    assert _signatures() == before
