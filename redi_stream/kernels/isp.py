"""The small ISP after the network (SPEC §4) and colour conversions for the encoder.

``apply_isp``: linear camera RGB -> white balance, clipped at 1 -> camera-to-sRGB matrix -> clip -> sRGB transfer
curve -> uint8/uint16 (within one code value of the exact curve: a polynomial for uint8, a small table for uint16).

The clip after the white balance is the raw converters' "clip" highlight mode. A clipped highlight (a street lamp, a
headlight, a network output at 1) is the sensor's white in every channel; the white-balance gains (R 2, B 1.7 in
daylight) take it to (2, 1, 1.7), which a colour matrix with negative off-diagonal terms turns magenta: (255, 197,
255) in 8-bit sRGB for a typical matrix. Clipped at 1 first, it is (1, 1, 1), which the matrix (its rows sum to 1)
keeps white. Colours inside the sensor's range reach at most 1 after the white balance and are not touched.
``float_to_uint``: quantise an already display-referred image (sRGB-output checkpoints).
``rgb_to_yuv420p``: BT.709 limited-range planes for the video encoder.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from redi_stream.kernels.rows import deinterleave, interleave, row, rows_in, write_rows

#: The uint16 curve table is indexed by ``u = sqrt(x)``: in u the curve's slope is bounded (<= 1.45 of full
#: scale), unlike in x (12.92 at the toe), so a small uniform table is accurate everywhere.
SRGB_LUT_U16_SIZE = 4096  # linear interpolation: error <= 0.06 code before rounding
#: The uint8 curve above the linear toe, ``255 * (1.055 * x^(1/2.4) - 0.055)``, is ``255 * (1.055 * v^(5/3) -
#: 0.055)`` in ``v = x^(1/4)`` (two square roots): smooth on [0.0031308^(1/4), 1], so a degree-5 polynomial is
#: within 0.005 code of it. Unlike a table it runs as SIMD arithmetic (1080p ISP + YUV: 9.9 vs 11.7 ms).
SRGB_POLY_U8_DEGREE = 5
_SRGB_TOE = 0.0031308


def srgb_encode(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB transfer curve of linear ``x`` in [0, 1] (float64 in, float64 out)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(np.maximum(x, 0.0031308), 1.0 / 2.4) - 0.055)


@functools.lru_cache(maxsize=1)
def _srgb_poly_u8() -> np.ndarray:
    """(6,) float32: power-series coefficients (constant first) of ``255 * srgb(v^4)`` in ``v`` on
    [0.0031308^(1/4), 1], a Chebyshev least-squares fit (max error 0.0045 code); read-only."""
    v = np.linspace(_SRGB_TOE**0.25, 1.0, 200_001)
    fit = np.polynomial.Chebyshev.fit(v, 255.0 * srgb_encode(v**4), SRGB_POLY_U8_DEGREE)
    coef = fit.convert(kind=np.polynomial.Polynomial).coef.astype(np.float32)
    coef.setflags(write=False)
    return coef


@functools.lru_cache(maxsize=1)
def _srgb_lut_u16() -> np.ndarray:
    """(2, 4096) float32: the value (row 0) and the slope to the next entry (row 1) of ``65535 * srgb(u^2)`` at
    ``u = i / 4096``; read-only."""
    u = np.arange(SRGB_LUT_U16_SIZE + 1) / SRGB_LUT_U16_SIZE
    v = srgb_encode(u * u) * 65535.0
    lut = np.ascontiguousarray(np.stack([v[:-1], np.diff(v)]), dtype=np.float32)
    lut.setflags(write=False)
    return lut


@njit(cache=True, nogil=True, inline="always")
def _clip01(v):
    """min(max(0, v), 1) in float32; NaN -> 0 (``max(0, nan)`` keeps its first argument)."""
    return min(max(np.float32(0.0), v), np.float32(1.0))


@njit(cache=True, nogil=True, inline="always")
def _matrix(m):
    """The 9 entries of ``M``, row by row."""
    return (m[0, 0], m[0, 1], m[0, 2], m[1, 0], m[1, 1], m[1, 2], m[2, 0], m[2, 1], m[2, 2])


@njit(cache=True, nogil=True, inline="always")
def _balanced_planes(src, wb, planar):
    """A flat interleaved camera-RGB row (3 W,) into the (3, W) planes ``planar``, times ``wb`` and clipped at 1
    (NaN stays NaN, for the final clip): the deinterleaving pass does the white balance too."""
    one = np.float32(1.0)
    w0, w1, w2 = wb[0], wb[1], wb[2]
    pr, pg, pb = planar[0], planar[1], planar[2]
    for x in range(planar.shape[1]):
        r = src[3 * x] * w0
        g = src[3 * x + 1] * w1
        b = src[3 * x + 2] * w2
        pr[x] = one if r > one else r
        pg[x] = one if g > one else g
        pb[x] = one if b > one else b


@njit(cache=True, nogil=True, inline="always")
def _srgb_u8(s, p, toe, toe_slope):
    """``255 * srgb(s)`` (before rounding) of ``s`` in [0, 1]: the linear toe, else the polynomial of
    :func:`_srgb_poly_u8` (``p``) in ``s^(1/4)``."""
    q = np.sqrt(np.sqrt(s))
    e = p[0] + q * (p[1] + q * (p[2] + q * (p[3] + q * (p[4] + q * p[5]))))
    return toe_slope * s if s <= toe else e


@njit(cache=True, nogil=True, inline="always")
def _isp_row_u8(src, wb, mm, poly, planar, codes, dst, store):
    """One row of :func:`apply_isp` to uint8: ``src`` (3 W,) float32 interleaved RGB -> ``codes`` (3, W) uint8
    planes and, if ``store``, ``dst`` (3 W,) interleaved. ``planar`` (3, W) float32 is scratch.

    Split into planar passes so that the matrix, clip and curve run as SIMD loops (one pass over interleaved
    pixels was bound by scalar square roots: 11.8 vs 7.2 ms per 1080p frame).
    """
    p = (poly[0], poly[1], poly[2], poly[3], poly[4], poly[5])
    toe = np.float32(_SRGB_TOE)
    toe_slope = np.float32(255.0 * 12.92)
    half = np.float32(0.5)
    pr, pg, pb = planar[0], planar[1], planar[2]
    _balanced_planes(src, wb, planar)
    for c in range(3):
        a0, a1, a2 = mm[3 * c], mm[3 * c + 1], mm[3 * c + 2]
        cc = codes[c]
        for x in range(planar.shape[1]):
            cc[x] = np.int32(_srgb_u8(_clip01(a0 * pr[x] + a1 * pg[x] + a2 * pb[x]), p, toe, toe_slope) + half)
    if store:  # else planes only (apply_isp_yuv420p with out=None)
        interleave(codes, dst)


# FMA contraction only (no other fast-math: NaN must still clip to 0): the curve's polynomial runs ~2 ms faster
# per 1080p frame with it.
_FM = {"contract"}


@njit(cache=True, nogil=True, fastmath=_FM)
def _apply_isp_u8(lin_body, lin_last, wb, m, poly, out_body, out_last):
    """See :func:`apply_isp`; ``poly`` is ``_srgb_poly_u8()``; rows as ``rows.rows`` pairs."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    mm = _matrix(m)
    planar = np.empty((3, w), np.float32)
    codes = np.empty((3, w), np.uint8)
    for y in range(h):
        _isp_row_u8(row(lin_body, lin_last, y), wb, mm, poly, planar, codes, row(out_body, out_last, y), True)


@njit(cache=True, nogil=True)
def _apply_isp_u16(lin_body, lin_last, wb, m, lut, out_body, out_last):
    """See :func:`apply_isp`; ``lut`` is ``_srgb_lut_u16()``: linear interpolation at ``sqrt(x) * 4096``.
    Planar passes per row as in :func:`_isp_row_u8`, the square roots in a loop of their own so that it runs as
    SIMD code beside the table's gathers (1080p: 15 vs 37 ms). No FMA contraction: the reference's values."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    mm = _matrix(m)
    value, slope = lut[0], lut[1]
    n = np.int32(value.shape[0])
    scale = np.float32(n)
    half = np.float32(0.5)
    planar = np.empty((3, w), np.float32)
    t = np.empty(w, np.float32)
    codes = np.empty((3, w), np.uint16)
    pr, pg, pb = planar[0], planar[1], planar[2]
    for y in range(h):
        _balanced_planes(row(lin_body, lin_last, y), wb, planar)
        for c in range(3):
            a0, a1, a2 = mm[3 * c], mm[3 * c + 1], mm[3 * c + 2]
            for x in range(w):
                t[x] = np.sqrt(_clip01(a0 * pr[x] + a1 * pg[x] + a2 * pb[x])) * scale
            cc = codes[c]
            for x in range(w):
                i = min(np.int32(t[x]), n - np.int32(1))
                cc[x] = np.int32(value[i] + (t[x] - np.float32(i)) * slope[i] + half)
        interleave(codes, row(out_body, out_last, y))


def _isp_args(
    lin: np.ndarray, wb: np.ndarray, cam_to_srgb: np.ndarray, out: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Check the ISP's arguments; returns ``wb`` (3,) and ``cam_to_srgb`` (3, 3) as C-contiguous float32."""
    if lin.dtype != np.float32 or lin.ndim != 3 or lin.shape[2] != 3 or out.shape != lin.shape:
        raise ValueError(
            f"need lin float32 (H, W, 3) and out of the same shape, got {lin.dtype} {lin.shape}, {out.shape}"
        )
    wb = np.ascontiguousarray(wb, dtype=np.float32)
    m = np.ascontiguousarray(cam_to_srgb, dtype=np.float32)
    if wb.shape != (3,) or m.shape != (3, 3):
        raise ValueError(f"need wb (3,) and cam_to_srgb (3, 3), got {wb.shape}, {m.shape}")
    return wb, m


def apply_isp(lin: np.ndarray, wb: np.ndarray, cam_to_srgb: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Render linear camera RGB to display sRGB: ``round(maxval * srgb(clip(M @ min(wb * lin, 1), 0, 1)))``.

    Args:
        lin: (H, W, 3) float32 linear camera RGB, nominally [0, 1]; may be a non-contiguous view (e.g.
            :func:`unpack_crop` of the runner's output). A channel that is NaN after the matrix renders as 0 (so a
            NaN input channel blanks every output channel the matrix mixes it into).
        wb: (3,) white-balance multipliers (R, G, B); cam_to_srgb: (3, 3) matrix (``RawMeta``).
        out: (H, W, 3) uint8 (maxval 255) or uint16 (maxval 65535), overwritten.

    Returns:
        ``out``; within 1 code value of the exact curve (``reference.apply_isp``). The sRGB curve is a polynomial
        in x^(1/4) for uint8 and a table indexed by sqrt(x), interpolated, for uint16.

    ``lin`` and ``out`` reach the kernel as C-contiguous rows (``rows.rows``), so one specialisation serves every
    layout whose rows are contiguous (``unpack_crop`` views included). Single-threaded (prange measured 1.3x on 2
    shared cores: not worth a thread pool next to the network).
    """
    wb, m = _isp_args(lin, wb, cam_to_srgb, out)
    if out.dtype == np.uint8:
        kernel, table = _apply_isp_u8, _srgb_poly_u8()
    elif out.dtype == np.uint16:
        kernel, table = _apply_isp_u16, _srgb_lut_u16()
    else:
        raise ValueError(f"out must be uint8 or uint16, got {out.dtype}")
    if out.size == 0:
        return out
    write_rows(kernel, (*rows_in(lin), wb, m, table), [out])
    return out


def _maxval(out: np.ndarray) -> int:
    if out.dtype == np.uint8:
        return 255
    if out.dtype == np.uint16:
        return 65535
    raise ValueError(f"out must be uint8 or uint16, got {out.dtype}")


@njit(cache=True, nogil=True)
def _float_to_uint(img_body, img_last, maxval, out_body, out_last):
    """See :func:`float_to_uint`; rows as ``rows.rows`` pairs (flat, 3 W values each), maxval float32."""
    h = img_body.shape[0] + 1
    n = img_last.shape[0]
    half = np.float32(0.5)
    for y in range(h):
        src = row(img_body, img_last, y)
        dst = row(out_body, out_last, y)
        for k in range(n):
            dst[k] = np.int32(_clip01(src[k]) * maxval + half)


def float_to_uint(img: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Quantise a display-referred float image: ``floor(clip(img, 0, 1) * maxval + 0.5)`` (NaN -> 0).

    Args:
        img: (H, W, 3) or (N, H, W, 3) float32 in [0, 1] (e.g. an sRGB-output checkpoint's crop; views are fine).
        out: same shape, uint8 (maxval 255) or uint16 (maxval 65535), overwritten.

    Returns:
        ``out``.
    """
    maxval = np.float32(_maxval(out))
    if img.dtype != np.float32 or img.ndim not in (3, 4) or img.shape[-1] != 3 or out.shape != img.shape:
        raise ValueError(
            f"need img float32 (..., H, W, 3) and out of the same shape, got {img.dtype} {img.shape}, {out.shape}"
        )
    for src, dst in zip(img, out) if img.ndim == 4 else [(img, out)]:
        if dst.size:
            write_rows(_float_to_uint, (*rows_in(src), maxval), [dst])
    return out


# BT.709 luma coefficients.
KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB


#: float32 constants of the yuv420p kernels: Kr, Kg, Kb, the luma and chroma scales of limited range, and the Y and
#: C offsets with the 0.5 of rounding by truncation added (values are >= 0).
_BT709_F32 = (
    np.float32(KR), np.float32(KG), np.float32(KB),
    np.float32(219.0 / 255.0),
    np.float32(224.0 / 255.0 / (2.0 * (1.0 - KB))),
    np.float32(224.0 / 255.0 / (2.0 * (1.0 - KR))),
    np.float32(16.5), np.float32(128.5),
)


@njit(cache=True, nogil=True, inline="always")
def _yuv_rows(r0, g0, b0, r1, g1, b1, y0, y1, u_row, v_row, w):
    """Y of two rows and U, V of their 2x2 blocks from uint8 R, G, B planes (BT.709 limited range, see
    :func:`rgb_to_yuv420p`); the first ``w`` values of ``y0`` and ``y1`` and ``w / 2`` of ``u_row`` and ``v_row``
    (uint8 ``rows.rows`` rows, which may run on past them) are overwritten."""
    kr, kg, kb, sy, su, sv, off_y, off_c = _BT709_F32
    quarter = np.float32(0.25)
    lo = np.float32(0.0)
    hi = np.float32(255.0)
    for x in range(w):
        y0[x] = np.int32(sy * (kr * np.float32(r0[x]) + kg * np.float32(g0[x]) + kb * np.float32(b0[x])) + off_y)
    for x in range(w):
        y1[x] = np.int32(sy * (kr * np.float32(r1[x]) + kg * np.float32(g1[x]) + kb * np.float32(b1[x])) + off_y)
    for i in range(w // 2):
        x = 2 * i
        # Sums of 4 uint8 are exact in float32; the block mean is a quarter of each.
        r = quarter * np.float32(np.int32(r0[x]) + np.int32(r0[x + 1]) + np.int32(r1[x]) + np.int32(r1[x + 1]))
        g = quarter * np.float32(np.int32(g0[x]) + np.int32(g0[x + 1]) + np.int32(g1[x]) + np.int32(g1[x + 1]))
        b = quarter * np.float32(np.int32(b0[x]) + np.int32(b0[x + 1]) + np.int32(b1[x]) + np.int32(b1[x + 1]))
        luma = kr * r + kg * g + kb * b
        u_row[i] = np.int32(min(max(su * (b - luma) + off_c, lo), hi))
        v_row[i] = np.int32(min(max(sv * (r - luma) + off_c, lo), hi))


@njit(cache=True, nogil=True)
def _rgb_to_yuv420p(rgb_body, rgb_last, y_body, y_last, u_body, u_last, v_body, v_last):
    """See :func:`rgb_to_yuv420p`; every array as a ``rows.rows`` pair."""
    h = rgb_body.shape[0] + 1
    w = rgb_last.shape[0] // 3
    codes = np.empty((2, 3, w), np.uint8)
    for j in range(h // 2):
        for k in range(2):
            deinterleave(row(rgb_body, rgb_last, 2 * j + k), codes[k])
        _yuv_rows(codes[0, 0], codes[0, 1], codes[0, 2], codes[1, 0], codes[1, 1], codes[1, 2],
                  row(y_body, y_last, 2 * j), row(y_body, y_last, 2 * j + 1),
                  row(u_body, u_last, j), row(v_body, v_last, j), w)


@njit(cache=True, nogil=True, fastmath=_FM)
def _apply_isp_yuv420p(lin_body, lin_last, wb, m, poly, store, out_body, out_last,
                       y_body, y_last, u_body, u_last, v_body, v_last):
    """See :func:`apply_isp_yuv420p`: two rows at a time, the YUV computed from the rows' uint8 planes while they
    are in cache (the same arithmetic as :func:`_rgb_to_yuv420p`, so the planes are identical). Every array as a
    ``rows.rows`` pair; ``store``: also write the interleaved RGB rows."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    mm = _matrix(m)
    planar = np.empty((3, w), np.float32)
    codes = np.empty((2, 3, w), np.uint8)
    for j in range(h // 2):
        for k in range(2):
            r = 2 * j + k
            _isp_row_u8(row(lin_body, lin_last, r), wb, mm, poly, planar, codes[k], row(out_body, out_last, r),
                        store)
        _yuv_rows(codes[0, 0], codes[0, 1], codes[0, 2], codes[1, 0], codes[1, 1], codes[1, 2],
                  row(y_body, y_last, 2 * j), row(y_body, y_last, 2 * j + 1),
                  row(u_body, u_last, j), row(v_body, v_last, j), w)


def _check_yuv_planes(h: int, w: int, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    if h % 2 or w % 2:
        raise ValueError(f"yuv420p needs even height and width, got {h}x{w}")
    for name, plane, shape in (("y", y, (h, w)), ("u", u, (h // 2, w // 2)), ("v", v, (h // 2, w // 2))):
        if plane.dtype != np.uint8 or plane.shape != shape:
            raise ValueError(f"{name} must be {shape} uint8, got {plane.dtype} {plane.shape}")


def apply_isp_yuv420p(
    lin: np.ndarray, wb: np.ndarray, cam_to_srgb: np.ndarray, out: np.ndarray | None,
    y: np.ndarray, u: np.ndarray, v: np.ndarray,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`apply_isp` to uint8 and :func:`rgb_to_yuv420p` of its result, in one pass over the image.

    The outputs are identical to the two calls made one after the other (tested). With ``out=None`` no RGB image is
    written at all, which two passes could not do. Speed (1080p, ``python -m redi_stream.kernels.bench``, Intel
    development CPU, 2026-12-07): 5.0-5.2 ms for the planes only, 5.6-6.0 ms with ``out``, against 3.9 + 1.4 ms for
    the two passes. Since the kernels read C-contiguous rows (``rows.rows``), two passes cost no more than one.

    Args:
        lin, wb, cam_to_srgb: as for :func:`apply_isp` (``lin`` (H, W, 3) float32, H and W even).
        out: (H, W, 3) uint8 sRGB, overwritten; None: the planes only (when nothing needs the RGB image, e.g. a
            video sink alone: no interleaved store).
        y: (H, W) uint8; u, v: (H/2, W/2) uint8; BT.709 limited range, overwritten.

    Returns:
        ``(out, y, u, v)``.
    """
    wb, m = _isp_args(lin, wb, cam_to_srgb, lin if out is None else out)  # (lin: only its shape is compared)
    if out is not None and out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 for yuv420p, got {out.dtype}")
    h, w, _ = lin.shape
    _check_yuv_planes(h, w, y, u, v)
    if h == 0:
        return out, y, u, v
    args = (*rows_in(lin), wb, m, _srgb_poly_u8())
    if out is None:  # rows the kernel never writes (store=False)
        write_rows(_apply_isp_yuv420p, (*args, False, np.empty((0, 0), np.uint8), np.empty(0, np.uint8)), [y, u, v])
    else:
        write_rows(_apply_isp_yuv420p, (*args, True), [out, y, u, v])
    return out, y, u, v


def rgb_to_yuv420p(
    rgb: np.ndarray, y: np.ndarray, u: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """sRGB uint8 -> BT.709 limited-range YUV 4:2:0 planes (for the encoder).

    ``Y = 16 + 219/255 * (Kr R + Kg G + Kb B)``, ``U = 128 + 224/255 * (B - Y') / (2 (1 - Kb))``,
    ``V = 128 + 224/255 * (R - Y') / (2 (1 - Kr))`` with Kr = 0.2126, Kb = 0.0722; U and V are computed from the mean
    R, G, B of each 2x2 block (chroma centred between the block's pixels); rounding half up.

    Args:
        rgb: (H, W, 3) uint8, H and W even (any layout).
        y: (H, W) uint8; u, v: (H/2, W/2) uint8; all overwritten.

    Returns:
        ``(y, u, v)``.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    _check_yuv_planes(h, w, y, u, v)
    if h:
        write_rows(_rgb_to_yuv420p, rows_in(rgb), [y, u, v])
    return y, u, v
