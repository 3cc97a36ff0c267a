"""Numba CPU kernels for the frame loop, each with a NumPy twin in :mod:`redi_stream.kernels.reference`.

Kernels are pure functions that write into a caller-owned ``out=`` buffer and allocate nothing per frame. They are
compiled lazily by numba (``cache=True``: once per machine, then loaded from disk); call :func:`warm_up` before the
first frame. They release the GIL (``nogil``) and are single-threaded, so any thread may call them. No torch, no I/O.
"""

from redi_stream.kernels.gain import GainSmoother, estimate_gain
from redi_stream.kernels.hotpix import fix_hot_pixels
from redi_stream.kernels.isp import apply_isp, apply_isp_yuv420p, float_to_uint, rgb_to_yuv420p
from redi_stream.kernels.pack import mosaic_rgb, pack_raw, padded_shape, unpack_crop
from redi_stream.kernels.temporal import TemporalDenoiser, noise_scale, temporal_denoise, temporal_noise_scale
from redi_stream.kernels.unpack import unpack_raw10, unpack_raw12
from redi_stream.kernels.warmup import warm_up

__all__ = [
    "GainSmoother",
    "TemporalDenoiser",
    "apply_isp",
    "apply_isp_yuv420p",
    "estimate_gain",
    "fix_hot_pixels",
    "float_to_uint",
    "mosaic_rgb",
    "noise_scale",
    "pack_raw",
    "padded_shape",
    "rgb_to_yuv420p",
    "temporal_denoise",
    "temporal_noise_scale",
    "unpack_crop",
    "unpack_raw10",
    "unpack_raw12",
    "warm_up",
]
