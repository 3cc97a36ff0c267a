"""Hot pixels: single raw samples far above every neighbour, replaced from their own colour before amplification.

A hot (or stuck, or RTS-noise) pixel in a dark raw frame is one sample well above black while its neighbours sit
near it; amplified x100 it becomes a saturated point, and the network spreads such a point into a blot a few dozen
pixels wide. Cameras map out the defects they know (a DNG may list them: ``capture.opcodes``); this filter finds the
others in each frame on its own, so it needs no calibration and follows pixels that come and go with temperature.

A sample at (y, x) with signal ``s`` (above its 2x2 position's black level) is hot when, for ``m`` the largest signal
among its 8 adjacent samples (any colour) and its 8 same-colour samples two away (across, down, diagonally), and
``m+ = max(m, 0)``:

* ``s - m+ > threshold``, with ``threshold = max(excess * sigma, floor * (white - black))``, ``sigma`` the frame's
  noise (:func:`raw_noise_sigma`: the robust deviation of same-colour neighbours' differences), and
* ``s > ratio * m+``.

Both must hold against all 16 neighbours, so an edge, a line, a textured patch or a light source that lights more
than one sample is left alone; so are two hot samples side by side (each is the other's neighbour). A star imaged
onto a single sample with nothing around it would be taken for one, which is why the filter is opt-in
(``--hot-pixels``). A hot sample becomes the inverse-distance-weighted mean of its same-colour neighbours within two
samples (red and blue: 8; green: those and the 4 diagonal greens), as ``capture.opcodes`` fills listed bad pixels.
The two-sample border is not examined.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from redi_stream.frames import CFA

#: Defaults: a hot sample stands more than 8 noise deviations, and 0.2% of the range, above all 16 neighbours, and
#: more than 4x the brightest of them. At a gain of x100 0.2% of the range is a fifth of full brightness.
EXCESS, RATIO, FLOOR = 8.0, 4.0, 0.002
_SIGMA_ROW_STEP = 4  # noise is estimated on every 4th row: the median does not need them all


@njit(cache=True, nogil=True)
def _noise_sigma(raw, row_step):
    """Lower median of |raw[y, x] - raw[y, x + 2]| over rows 0, step, 2 step, ..., times 1.4826 / sqrt(2)."""
    h, w = raw.shape
    counts = np.zeros(65536, np.int64)
    n = 0
    for y in range(0, h, row_step):
        row = raw[y]
        for x in range(w - 2):
            a = np.int64(row[x])
            b = np.int64(row[x + 2])
            counts[a - b if a >= b else b - a] += 1
            n += 1
    if n == 0:
        return 0.0
    k = (n - 1) // 2
    seen = 0
    for v in range(65536):
        seen += counts[v]
        if seen > k:
            return v * 1.4826 / math.sqrt(2.0)
    return 0.0


@njit(cache=True, nogil=True)
def _fix_hot_pixels(raw, black, green_parity, threshold, ratio, out):
    h, w = raw.shape
    for y in range(h):
        out[y, :] = raw[y, :]
    w_orth = 0.5
    w_diag2 = 1.0 / math.sqrt(8.0)
    w_diag1 = 1.0 / math.sqrt(2.0)
    count = 0
    for y in range(2, h - 2):
        py = 2 * (y & 1)
        # The first test in integers: most samples of a dark frame stop here.
        lim_even = np.int64(min(math.floor(black[py] + threshold), 65535.0))
        lim_odd = np.int64(min(math.floor(black[py + 1] + threshold), 65535.0))
        row = raw[y]
        for x in range(2, w - 2):
            if np.int64(row[x]) <= (lim_odd if x & 1 else lim_even):
                continue
            s = np.float64(row[x]) - black[py + (x & 1)]  # > threshold now
            # Against each neighbour in turn, stopping at the first that is close enough (in a bright or textured
            # area, usually the first): s - max(v, 0) > threshold and s > ratio * max(v, 0).
            hot = True
            for dy in range(-1, 2):  # the 8 adjacent samples, any colour
                qy = 2 * ((y + dy) & 1)
                for dx in range(-1, 2):
                    if dy != 0 or dx != 0:
                        v = max(np.float64(raw[y + dy, x + dx]) - black[qy + ((x + dx) & 1)], 0.0)
                        if s - v <= threshold or s <= ratio * v:
                            hot = False
                            break
                if not hot:
                    break
            if not hot:
                continue
            b = black[py + (x & 1)]  # same colour, same 2x2 position: same black level
            total = 0.0
            wsum = 0.0
            for dy in range(-2, 3, 2):
                for dx in range(-2, 3, 2):
                    if dy != 0 or dx != 0:
                        v = np.float64(raw[y + dy, x + dx]) - b
                        if s - max(v, 0.0) <= threshold or s <= ratio * max(v, 0.0):
                            hot = False
                        wt = w_orth if (dy == 0 or dx == 0) else w_diag2
                        total += wt * v
                        wsum += wt
            if not hot:
                continue
            if (y + x) & 1 == green_parity:  # a green sample: the four diagonal greens next to it count too
                for dy in range(-1, 2, 2):
                    qy = 2 * ((y + dy) & 1)
                    for dx in range(-1, 2, 2):
                        v = np.float64(raw[y + dy, x + dx]) - black[qy + ((x + dx) & 1)]
                        total += w_diag1 * v
                        wsum += w_diag1
            value = total / wsum + b
            out[y, x] = np.uint16(min(max(value + 0.5, 0.0), 65535.0))  # rounded half up
            count += 1
    return count


def raw_noise_sigma(raw: np.ndarray) -> float:
    """A frame's noise deviation in DN: the robust (median-based) deviation of same-colour horizontal neighbours'
    differences on every 4th row, divided by sqrt(2). Texture raises it, so the filter gets stricter on detail."""
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"raw must be a (H, W) uint16 array, got {raw.dtype} {raw.shape}")
    return float(_noise_sigma(raw, _SIGMA_ROW_STEP))


def hot_pixel_threshold(raw: np.ndarray, black: np.ndarray, white: float, *, excess: float = EXCESS,
                        floor: float = FLOOR) -> float:
    """``max(excess * raw_noise_sigma(raw), floor * (white - max(black)))``, in DN above black."""
    return max(excess * raw_noise_sigma(raw), floor * (float(white) - float(np.max(black))))


def fix_hot_pixels(raw: np.ndarray, black: np.ndarray, white: float, cfa: CFA, out: np.ndarray, *,
                   excess: float = EXCESS, ratio: float = RATIO, floor: float = FLOOR) -> int:
    """Copy ``raw`` into ``out`` with its hot samples replaced (module docstring); returns how many were replaced.

    Args:
        raw: (H, W) uint16 mosaic in raw DN, Bayer pattern ``cfa``.
        black: (4,) float32 black level per 2x2 position (TL, TR, BL, BR); white: the white level.
        out: (H, W) uint16, not sharing memory with ``raw`` (neighbours are read from ``raw``).
        excess, ratio, floor: the criteria of the module docstring.

    Raises:
        ValueError: wrong dtype, shape or aliasing.
    """
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"raw must be a (H, W) uint16 array, got {raw.dtype} {raw.shape}")
    if out.dtype != np.uint16 or out.shape != raw.shape:
        raise ValueError(f"out must be uint16 {raw.shape}, got {out.dtype} {out.shape}")
    if np.shares_memory(raw, out):
        raise ValueError("out must not share memory with raw")
    black = np.ascontiguousarray(black, dtype=np.float64).reshape(4)
    threshold = hot_pixel_threshold(raw, black, white, excess=excess, floor=floor)
    green_parity = 1 if CFA(cfa) in (CFA.RGGB, CFA.BGGR) else 0
    return int(_fix_hot_pixels(raw, black, green_parity, threshold, float(ratio), out))
