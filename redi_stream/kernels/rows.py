"""Row access for the CPU kernels: any array whose rows are each contiguous, as C-contiguous pieces numba vectorises.

numba compiles one loop body per array layout; a strided view (``unpack_crop`` of the runner's NHWC output, a
plane with a padded line size) is typed 'A' and its per-pixel loops run with scalar loads. :func:`rows` gives the
same memory as a C-contiguous 2-D ``body`` plus the flat last row, so one specialisation serves every such layout
and the loops run as SIMD code. The ``@njit`` helpers here are inlined into the kernels that call them.

numba's on-disk cache (``cache=True``) checks only the file of the kernel it compiled, so after editing a helper
here in a source checkout, delete ``redi_stream/kernels/__pycache__`` (an installed release replaces every file,
which invalidates every entry).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Row access for the kernels: ``(body, last)`` with ``body[y]`` (y < H - 1) the flat row ``a[y]`` followed by
    the gap up to the next row (the kernels read only its first ``W * C`` values), and ``last`` the flat last row.
    Both are C-contiguous views of ``a`` (no copy), and numba compiles loops over C-contiguous rows to SIMD code; a
    strided 3-D view such as ``unpack_crop``'s was read with scalar loads (1080p ISP + YUV: 9.2 vs 5.4 ms, float to
    uint8: 12 vs 1.2 ms, temporal denoise 19.7 vs 12.0 ms). None if ``a``'s rows are not each contiguous (e.g. a
    column-flipped or broadcast view).

    ``a``: (H, W) or (H, W, C), H >= 1. Writes through ``body`` and ``last`` land in ``a``.
    """
    isz = a.itemsize
    if a.shape[0] < 1:
        return None
    first = a[0]
    if not first.flags.c_contiguous or a.strides[0] < first.size * isz or a.strides[0] % isz:
        return None
    body = np.lib.stride_tricks.as_strided(a, shape=(a.shape[0] - 1, a.strides[0] // isz), strides=(a.strides[0], isz))
    return body, a[-1].reshape(-1)


def rows_in(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`rows` of an input, copied first if its rows are not contiguous (a rare layout: not the pipeline's)."""
    r = rows(a)
    return r if r is not None else rows(np.ascontiguousarray(a))  # type: ignore[return-value]


def write_rows(kernel, args: tuple, outs: list[np.ndarray]) -> None:
    """``kernel(*args, *rows of outs[0], *rows of outs[1], ...)``, each output as a :func:`rows` pair; an output
    whose rows are not contiguous is written through a C-contiguous temporary and copied back."""
    pairs: list[np.ndarray] = []
    back = []
    for o in outs:
        r = rows(o)
        if r is None:
            tmp = np.empty(o.shape, o.dtype)
            back.append((o, tmp))
            r = rows(tmp)
        pairs += r
    kernel(*args, *pairs)
    for o, tmp in back:
        o[...] = tmp


@njit(cache=True, nogil=True, inline="always")
def row(body, last, y):
    """Row ``y`` of a :func:`rows` pair."""
    return body[y] if y < body.shape[0] else last


@njit(cache=True, nogil=True, inline="always")
def deinterleave(src, planar):
    """A flat interleaved RGB row (3 W,) into the (3, W) planes ``planar``."""
    pr, pg, pb = planar[0], planar[1], planar[2]
    for x in range(planar.shape[1]):
        pr[x] = src[3 * x]
        pg[x] = src[3 * x + 1]
        pb[x] = src[3 * x + 2]


@njit(cache=True, nogil=True, inline="always")
def interleave(planes, dst):
    """(3, W) planes into a flat interleaved row ``dst`` (3 W,)."""
    cr, cg, cb = planes[0], planes[1], planes[2]
    for x in range(planes.shape[1]):
        dst[3 * x] = cr[x]
        dst[3 * x + 1] = cg[x]
        dst[3 * x + 2] = cb[x]
