"""Raw Bayer frame -> the network's input mosaic: normalise, amplify, unify the CFA to RGGB, reflect-pad.

Geometry (ARCHITECTURE.md, "Pack"): with ``(dy, dx) = cfa.offset`` the stored frame lands at
``out[dy:dy+H, dx:dx+W]``; the ``dy`` rows above, the ``dx`` columns to the left and everything below/right up to
``(Hp, Wp)`` are filled by reflection without repeating the edge (NumPy ``mode="reflect"``). Reflection about a
pixel moves every index by an even amount, so each padded pixel has the Bayer phase of the position it lands on and
the whole ``(Hp, Wp)`` mosaic is RGGB (R at (0, 0)) whatever the stored pattern was.

Reflection needs at least 2 rows and 2 columns: a 1-pixel-wide frame cannot be reflected without changing the
Bayer phase (NumPy would repeat the single row), so such frames are rejected with ``ValueError``. Padding wider
than the frame (tiny frames, e.g. 2x2 -> 32x32) reflects repeatedly, exactly as ``np.pad(..., "reflect")`` does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from redi_stream.amplifier import INPUT_CEILING
from redi_stream.frames import CFA


def padded_shape(h: int, w: int, cfa: CFA, multiple: int = 32) -> tuple[int, int]:
    """(Hp, Wp) of the packed mosaic of an (h, w) frame with pattern ``cfa``: the same for every pattern.

    ``Hp = ceil((h + 1) / multiple) * multiple`` and likewise for ``Wp``: room for the largest unification offset
    (one row, one column) whatever ``cfa`` is. A canvas that depended on the pattern (``h + dy``) would give an
    RGGB frame whose sides are multiples of 32 a network input 32 rows and columns smaller than the same scene in
    any other phase, and the network's 1/32-scale branches see the whole canvas: a trained model's overall colour
    moved by up to 2% with it (the ``isp_rose`` files, README "Default weights"). ``cfa`` is still checked.

    Raises:
        ValueError: ``h`` or ``w`` below 2, or ``multiple`` below 1.
    """
    h, w, multiple = int(h), int(w), int(multiple)
    if h < 2 or w < 2:
        raise ValueError(f"a Bayer frame needs at least 2x2 pixels, got {h}x{w}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    CFA(cfa)
    return -(-(h + 1) // multiple) * multiple, -(-(w + 1) // multiple) * multiple


@njit(cache=True, nogil=True, inline="always")
def _reflect(i: int, n: int) -> int:
    """Index ``i`` (any integer) folded into ``[0, n)`` by edge-excluding reflection, period ``2 (n - 1)``; n >= 2."""
    period = 2 * (n - 1)
    i = i % period  # Python semantics: non-negative for negative i
    if i >= n:
        i = period - i
    return i


@njit(cache=True, nogil=True)
def _pack_raw(raw, black, white, dy, dx, gain, ceiling, out):
    """Normalise, amplify and place ``raw`` into ``out`` at (dy, dx); reflect-pad the rest of ``out``.

    Args:
        raw: (H, W) uint16 mosaic in raw DN, any Bayer phase, H, W >= 2.
        black: (4,) float32 black level per 2x2 position of ``raw`` (TL, TR, BL, BR).
        white: float64 white level, > every black level.
        dy, dx: int64 offsets (0 or 1 for CFA unification; any value >= 0 works).
        gain: float64 amplification applied after clipping to [0, 1].
        ceiling: float64, the largest value written (``INPUT_CEILING``; an argument, not a global, so that numba's
            on-disk cache of this function cannot keep an old value).
        out: (Hp, Wp) float32, Hp >= dy + H, Wp >= dx + W; fully overwritten, values in
            [0, min(gain, ceiling)].

    ``out[dy + y, dx + x] = min(clip((raw[y, x] - black[p]) / (white - black[p]), 0, 1) * gain, ceiling)``
    with ``p = 2 (y & 1) + (x & 1)``, in float32 (a true division, so a pixel at exactly ``white`` gives exactly 1).
    """
    h, w = raw.shape
    hp, wp = out.shape
    g = np.float32(gain)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    ceiling = np.float32(ceiling)
    half = w // 2
    for y in range(h):
        row = raw[y]
        orow = out[dy + y]
        dst = orow[dx : dx + w]  # a row view indexed from 0: lets LLVM drop the offset and vectorise
        p = 2 * (y & 1)
        b0 = black[p]
        b1 = black[p + 1]
        d0 = np.float32(white - np.float64(b0))
        d1 = np.float32(white - np.float64(b1))
        # Column pairs, so each lane keeps one position's constants (measured 6x faster than a per-pixel select).
        for k in range(half):
            x = 2 * k
            r0 = (np.float32(row[x]) - b0) / d0
            r1 = (np.float32(row[x + 1]) - b1) / d1
            dst[x] = min(min(max(r0, zero), one) * g, ceiling)
            dst[x + 1] = min(min(max(r1, zero), one) * g, ceiling)
        if w & 1:
            r0 = (np.float32(row[w - 1]) - b0) / d0
            dst[w - 1] = min(min(max(r0, zero), one) * g, ceiling)
        for c in range(dx):
            orow[c] = orow[dx + _reflect(c - dx, w)]
        for c in range(dx + w, wp):
            orow[c] = orow[dx + _reflect(c - dx, w)]
    for r in range(dy):
        out[r, :] = out[dy + _reflect(r - dy, h), :]
    for r in range(dy + h, hp):
        out[r, :] = out[dy + _reflect(r - dy, h), :]
    return out


def _check_levels(black: np.ndarray, white: float) -> None:
    if black.shape != (4,):
        raise ValueError(f"black must have 4 values (TL, TR, BL, BR), got shape {black.shape}")
    if not (np.all(np.isfinite(black)) and np.isfinite(white)):
        raise ValueError(f"black and white levels must be finite, got {black.tolist()} and {white}")
    if not white > float(black.max()):
        raise ValueError(f"white level {white} must exceed every black level {black.tolist()}")


def _check_raw(raw: np.ndarray) -> None:
    if raw.dtype != np.uint16 or raw.ndim != 2:
        raise ValueError(f"raw must be a (H, W) uint16 array, got {raw.dtype} {raw.shape}")
    if raw.shape[0] < 2 or raw.shape[1] < 2:
        raise ValueError(f"a Bayer frame needs at least 2x2 pixels, got {raw.shape[0]}x{raw.shape[1]}")


def pack_raw(raw: np.ndarray, black: np.ndarray, white: float, cfa: CFA, gain: float, out: np.ndarray) -> np.ndarray:
    """Pack a raw frame into the network's RGGB input: black-subtract, normalise, clip, amplify, unify, pad.

    Args:
        raw: (H, W) uint16 mosaic in raw DN with Bayer pattern ``cfa``; H, W >= 2 (any parity).
        black: (4,) black level per 2x2 position of ``raw`` as stored (TL, TR, BL, BR), in DN
            (``RawMeta.black_level_array``).
        white: white (saturation) level in DN, > every black level.
        cfa: Bayer pattern of ``raw``; ``(dy, dx) = cfa.offset`` rows/cols are reflect-prepended.
        gain: amplification (finite, >= 0), applied after clipping to [0, 1]; the amplified value is clipped at
            1 again (:data:`INPUT_CEILING`).
        out: (Hp, Wp) float32, caller-owned (e.g. a pinned host slot), Hp >= H + dy, Wp >= W + dx; usually
            :func:`padded_shape`. Fully overwritten.

    Returns:
        ``out``: an RGGB mosaic with values in [0, min(gain, INPUT_CEILING)]; the frame occupies
        ``out[dy:dy+H, dx:dx+W]`` and the rest is reflect padding (NumPy ``"reflect"`` semantics, repeated for
        pads wider than the frame).

    Raises:
        ValueError: wrong dtype/shape, frame smaller than 2x2, ``out`` too small, bad levels or gain.
    """
    _check_raw(raw)
    black = np.asarray(black, dtype=np.float32)
    white = float(white)
    _check_levels(black, white)
    gain = float(gain)
    if not (np.isfinite(gain) and gain >= 0):
        raise ValueError(f"gain must be finite and >= 0, got {gain}")
    dy, dx = CFA(cfa).offset
    h, w = raw.shape
    if out.dtype != np.float32 or out.ndim != 2 or out.shape[0] < h + dy or out.shape[1] < w + dx:
        raise ValueError(
            f"out must be float32 (Hp, Wp) with Hp >= {h + dy}, Wp >= {w + dx} for a {h}x{w} {cfa} frame, "
            f"got {out.dtype} {out.shape}"
        )
    return _pack_raw(raw, np.ascontiguousarray(black), white, dy, dx, gain, float(INPUT_CEILING), out)


def unpack_crop(net_out: np.ndarray, cfa: CFA, h: int, w: int) -> np.ndarray:
    """View of the original frame's region in a network output: ``[..., dy:dy+h, dx:dx+w, :]``.

    Args:
        net_out: (Hp, Wp, 3) or (N, Hp, Wp, 3) NHWC host array from the runner.
        cfa: the Bayer pattern the frame was packed with; h, w: the frame's size.

    Returns:
        A view (no copy; usually not C-contiguous) of shape (h, w, 3) or (N, h, w, 3).
    """
    if net_out.ndim not in (3, 4) or net_out.shape[-1] != 3:
        raise ValueError(f"net_out must be (Hp, Wp, 3) or (N, Hp, Wp, 3), got {net_out.shape}")
    dy, dx = CFA(cfa).offset
    hp, wp = net_out.shape[-3:-1]
    if hp < dy + h or wp < dx + w:
        raise ValueError(f"net_out {net_out.shape} too small for a {h}x{w} {cfa} frame")
    return net_out[..., dy : dy + h, dx : dx + w, :]


@njit(cache=True, nogil=True)
def _mosaic_rgb(rgb, colors, out):
    """``out[y, x] = rgb[y, x, colors[2 (y & 1) + (x & 1)]]``; rgb (H, W, 3), colors (4,) int64, out (H, W)."""
    h, w = out.shape
    for y in range(h):
        p = 2 * (y & 1)
        c0 = colors[p]
        c1 = colors[p + 1]
        for x in range(w):
            out[y, x] = rgb[y, x, c1 if x & 1 else c0]
    return out


def mosaic_rgb(rgb: np.ndarray, cfa: CFA, out: np.ndarray) -> np.ndarray:
    """Sample an RGB image through a Bayer pattern (the inverse of demosaicing, for tests and training data).

    Args:
        rgb: (H, W, 3) float32 (any layout), channels R, G, B.
        cfa: pattern of the produced mosaic; position (y, x) takes channel ``cfa.colors[2 (y&1) + (x&1)]``.
        out: (H, W) float32, overwritten.

    Returns:
        ``out``.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or out.shape != rgb.shape[:2] or out.dtype != rgb.dtype:
        raise ValueError(f"need rgb (H, W, 3) and out (H, W) of the same dtype, got {rgb.shape}, {out.shape}")
    colors = np.array(CFA(cfa).colors, dtype=np.int64)
    return _mosaic_rgb(rgb, colors, out)
