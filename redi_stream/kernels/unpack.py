"""MIPI CSI-2 packed raw -> uint16 mosaics (camera capture: Raspberry Pi HQ, V4L2 ``pRAA``/``pRCC`` formats).

RAW10: every 4 pixels take 5 bytes: bytes 0-3 hold bits 9:2 of pixels 0-3, byte 4 holds their bits 1:0 (pixel 0 in
bits 1:0, pixel 1 in bits 3:2, ...). RAW12: every 2 pixels take 3 bytes: bytes 0-1 hold bits 11:4 of pixels 0-1,
byte 2 holds their bits 3:0 (pixel 0 in bits 3:0). Lines may be padded to a larger stride (bytes per line); a width
that is not a multiple of the group size still occupies a whole last group. Output values are the sensor's 10- or
12-bit codes, unscaled (the white level comes from the metadata).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _unpack_raw10(packed, width, out):
    """See :func:`unpack_raw10`."""
    h = out.shape[0]
    groups = width // 4
    for y in range(h):
        src = packed[y]
        dst = out[y]
        for k in range(groups):
            s = 5 * k
            lsb = np.uint16(src[s + 4])
            x = 4 * k
            dst[x] = (np.uint16(src[s]) << 2) | (lsb & 3)
            dst[x + 1] = (np.uint16(src[s + 1]) << 2) | ((lsb >> 2) & 3)
            dst[x + 2] = (np.uint16(src[s + 2]) << 2) | ((lsb >> 4) & 3)
            dst[x + 3] = (np.uint16(src[s + 3]) << 2) | ((lsb >> 6) & 3)
        s = 5 * groups
        for i in range(width - 4 * groups):
            lsb = np.uint16(src[s + 4])
            dst[4 * groups + i] = (np.uint16(src[s + i]) << 2) | ((lsb >> (2 * i)) & 3)
    return out


@njit(cache=True, nogil=True)
def _unpack_raw12(packed, width, out):
    """See :func:`unpack_raw12`."""
    h = out.shape[0]
    pairs = width // 2
    for y in range(h):
        src = packed[y]
        dst = out[y]
        for k in range(pairs):
            s = 3 * k
            lsb = np.uint16(src[s + 2])
            dst[2 * k] = (np.uint16(src[s]) << 4) | (lsb & 15)
            dst[2 * k + 1] = (np.uint16(src[s + 1]) << 4) | (lsb >> 4)
        if width & 1:
            s = 3 * pairs
            dst[width - 1] = (np.uint16(src[s]) << 4) | (np.uint16(src[s + 2]) & 15)
    return out


def _check(packed: np.ndarray, width: int, out: np.ndarray, group_px: int, group_bytes: int) -> int:
    width = int(width)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ValueError(f"packed must be a (H, stride) uint8 array, got {packed.dtype} {packed.shape}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    need = -(-width // group_px) * group_bytes
    if packed.shape[1] < need:
        raise ValueError(f"a line of {width} pixels needs >= {need} bytes, stride is {packed.shape[1]}")
    if out.dtype != np.uint16 or out.shape != (packed.shape[0], width):
        raise ValueError(f"out must be ({packed.shape[0]}, {width}) uint16, got {out.dtype} {out.shape}")
    return width


def unpack_raw10(packed: np.ndarray, width: int, out: np.ndarray) -> np.ndarray:
    """MIPI RAW10 -> uint16 codes 0..1023.

    Args:
        packed: (H, stride) uint8, stride >= ceil(width / 4) * 5 (extra bytes per line ignored).
        width: pixels per line.
        out: (H, width) uint16, overwritten.

    Returns:
        ``out``.
    """
    width = _check(packed, width, out, 4, 5)
    return _unpack_raw10(packed, width, out)


def unpack_raw12(packed: np.ndarray, width: int, out: np.ndarray) -> np.ndarray:
    """MIPI RAW12 -> uint16 codes 0..4095.

    Args:
        packed: (H, stride) uint8, stride >= ceil(width / 2) * 3 (extra bytes per line ignored).
        width: pixels per line.
        out: (H, width) uint16, overwritten.

    Returns:
        ``out``.
    """
    width = _check(packed, width, out, 2, 3)
    return _unpack_raw12(packed, width, out)
