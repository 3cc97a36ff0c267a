"""Compile every kernel before the first frame.

numba compiles one specialisation per argument type (dtype, ndim, memory layout, read-only flag); with
``cache=True`` the machine code is then loaded from ``__pycache__`` in later processes. :func:`warm_up` calls every
public kernel on tiny inputs with exactly the types the pipeline passes, so frame 0 is not slow. ``dispatchers()``
lists the numba dispatchers, for tests that check no new specialisation appears after warm-up.
"""

from __future__ import annotations

import numpy as np

from redi_stream.frames import CFA
from redi_stream.kernels import gain, hotpix, isp, pack, temporal, unpack


def dispatchers() -> dict[str, object]:
    """Name -> numba dispatcher of every kernel (``.signatures`` lists what has been compiled)."""
    return {
        "pack_raw": pack._pack_raw,
        "mosaic_rgb": pack._mosaic_rgb,
        "estimate_gain": gain._gain_sums,
        "fix_hot_pixels": hotpix._fix_hot_pixels,
        "raw_noise_sigma": hotpix._noise_sigma,
        "apply_isp_u8": isp._apply_isp_u8,
        "apply_isp_u16": isp._apply_isp_u16,
        "float_to_uint": isp._float_to_uint,
        "rgb_to_yuv420p": isp._rgb_to_yuv420p,
        "apply_isp_yuv420p": isp._apply_isp_yuv420p,
        "unpack_raw10": unpack._unpack_raw10,
        "unpack_raw12": unpack._unpack_raw12,
        "noise_scale": temporal._noise_scale,
        "temporal_noise_scale": temporal._temporal_noise_scale,
        "temporal_denoise": temporal._temporal_denoise,
    }


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel for every argument layout the pipeline uses.

    Covers: ``pack_raw``, ``estimate_gain`` and ``fix_hot_pixels`` on C-contiguous uint16 frames; ``apply_isp`` and
    ``float_to_uint`` with a C-contiguous input and with a strided view (``unpack_crop`` of a padded output), into
    C-contiguous uint8 and uint16 outputs, and fused with yuv420p planes (``apply_isp_yuv420p``); ``noise_scale``,
    ``temporal_noise_scale`` and ``temporal_denoise`` on both input layouts; ``rgb_to_yuv420p``; ``unpack_raw10/12``;
    ``mosaic_rgb``. Takes seconds on a cold cache, well under one on a warm one. Call from the thread that will run
    the kernels, or any thread: compiled code is shared by all threads.
    """
    raw = np.full((4, 6), 600, dtype=np.uint16)
    black = np.array([512.0, 512.0, 512.0, 512.0], dtype=np.float32)
    packed = np.empty(pack.padded_shape(4, 6, CFA.BGGR, multiple=8), dtype=np.float32)
    pack.pack_raw(raw, black, 1023.0, CFA.BGGR, 2.0, packed)
    gain.estimate_gain(raw, black, 1023.0)
    hotpix.fix_hot_pixels(raw, black, 1023.0, CFA.BGGR, np.empty_like(raw))
    rgb = np.full((4, 6, 3), 0.25, dtype=np.float32)
    pack.mosaic_rgb(rgb, CFA.RGGB, np.empty((4, 6), dtype=np.float32))

    net_out = np.full((8, 8, 3), 0.25, dtype=np.float32)
    views = (net_out[:4, :6], pack.unpack_crop(net_out, CFA.BGGR, 4, 6))  # C-contiguous rows, strided view
    wb = np.ones(3, dtype=np.float32)
    m = np.eye(3, dtype=np.float32)
    for lin in (np.ascontiguousarray(views[0]), views[1]):
        for dtype in (np.uint8, np.uint16):
            out = np.empty(lin.shape, dtype=dtype)
            isp.apply_isp(lin, wb, m, out)
            isp.float_to_uint(lin, out)
        isp.apply_isp_yuv420p(lin, wb, m, np.empty(lin.shape, np.uint8), np.empty((4, 6), np.uint8),
                              np.empty((2, 3), np.uint8), np.empty((2, 3), np.uint8))
        state = np.ascontiguousarray(views[0])
        temporal.temporal_noise_scale(lin, state)
        temporal.temporal_denoise(lin, state, 4.0, temporal.noise_scale(lin))
    rgb8 = np.zeros((4, 6, 3), dtype=np.uint8)
    isp.rgb_to_yuv420p(rgb8, np.empty((4, 6), np.uint8), np.empty((2, 3), np.uint8), np.empty((2, 3), np.uint8))
    unpack.unpack_raw10(np.zeros((2, 10), dtype=np.uint8), 6, np.empty((2, 6), dtype=np.uint16))
    unpack.unpack_raw12(np.zeros((2, 9), dtype=np.uint8), 6, np.empty((2, 6), dtype=np.uint16))
