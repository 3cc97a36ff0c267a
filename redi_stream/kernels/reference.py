"""NumPy twins of the numba kernels: the plain, slow, obviously-right versions the tests compare against.

Each function computes the specification literally (float64 where the kernel uses a shortcut) and allocates its
result; none of them is meant for the frame loop. Signatures mirror the kernels without ``out=``.
"""

from __future__ import annotations

import numpy as np

from redi_stream.amplifier import INPUT_CEILING
from redi_stream.frames import CFA
from redi_stream.kernels.gain import BIN_EDGES, BIN_WEIGHTS, N_BINS
from redi_stream.kernels.isp import KB, KG, KR, srgb_encode
from redi_stream.kernels.temporal import HI, LEVEL_EPS, LO, ROW_STEP


def _per_position(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) array of ``values[2 (y & 1) + (x & 1)]``."""
    yy = (np.arange(shape[0]) & 1)[:, None]
    xx = (np.arange(shape[1]) & 1)[None, :]
    return np.asarray(values)[2 * yy + xx]


def normalise_raw(raw: np.ndarray, black: np.ndarray, white: float) -> np.ndarray:
    """float64 ``clip((raw - black[pos]) / (white - black[pos]), 0, 1)``."""
    b = _per_position(np.asarray(black, dtype=np.float32).astype(np.float64), raw.shape)
    return np.clip((raw.astype(np.float64) - b) / (float(white) - b), 0.0, 1.0)


def pack_raw(raw: np.ndarray, black: np.ndarray, white: float, cfa: CFA, gain: float, hp: int, wp: int) -> np.ndarray:
    """Twin of ``kernels.pack_raw`` into a new (hp, wp) float32 array, padding by ``np.pad(mode="reflect")``."""
    dy, dx = CFA(cfa).offset
    h, w = raw.shape
    r = np.minimum(normalise_raw(raw, black, white) * float(gain), INPUT_CEILING)
    return np.pad(r, ((dy, hp - h - dy), (dx, wp - w - dx)), mode="reflect").astype(np.float32)


def mosaic_rgb(rgb: np.ndarray, cfa: CFA) -> np.ndarray:
    """Twin of ``kernels.mosaic_rgb``."""
    h, w, _ = rgb.shape
    ch = _per_position(np.array(CFA(cfa).colors), (h, w))
    return np.take_along_axis(rgb, ch[:, :, None], axis=2)[:, :, 0]


def estimate_gain(
    raw: np.ndarray, black: np.ndarray, white: float, target: float = 0.01, lo: float = 1.0, hi: float = 300.0
) -> float:
    """Twin of ``kernels.estimate_gain``: bins every pixel with ``np.searchsorted``, sums in float64."""
    r = normalise_raw(raw, black, white).ravel()
    j = np.searchsorted(BIN_EDGES, r, side="right") - 1
    w = np.where(j < N_BINS, BIN_WEIGHTS[np.minimum(j, N_BINS - 1)], 0.0)
    sum_w = float(np.sum(w))
    sum_wr = float(np.sum(w * r))
    if sum_wr > 0:
        return float(np.clip(target * sum_w / sum_wr, lo, hi))
    return float(hi) if sum_w > 0 else float(lo)


def apply_isp(lin: np.ndarray, wb: np.ndarray, cam_to_srgb: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """Twin of ``kernels.apply_isp`` with the exact sRGB curve in float64; a NaN after the matrix renders as 0."""
    c = lin.astype(np.float64) * np.asarray(wb, dtype=np.float64)
    c = np.where(c > 1.0, 1.0, c)  # the highlight clip (NaN stays NaN)
    s = np.einsum("...j,ij->...i", c, np.asarray(cam_to_srgb, dtype=np.float64))
    s = np.where(np.isnan(s), 0.0, s)
    maxval = np.iinfo(dtype).max
    return np.floor(srgb_encode(np.clip(s, 0.0, 1.0)) * maxval + 0.5).astype(dtype)


def float_to_uint(img: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
    """Twin of ``kernels.float_to_uint`` (float32 arithmetic, like the kernel)."""
    x = np.clip(np.nan_to_num(img.astype(np.float32), nan=0.0), 0.0, 1.0)
    return np.floor(x * np.float32(np.iinfo(dtype).max) + np.float32(0.5)).astype(dtype)


def rgb_to_yuv420p(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Twin of ``kernels.rgb_to_yuv420p`` in float64: BT.709 limited range, chroma from 2x2 block means."""
    f = rgb.astype(np.float64)
    luma = KR * f[..., 0] + KG * f[..., 1] + KB * f[..., 2]
    y = np.floor(16.0 + 219.0 / 255.0 * luma + 0.5)
    h, w, _ = rgb.shape
    m = f.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    lm = KR * m[..., 0] + KG * m[..., 1] + KB * m[..., 2]
    u = np.floor(128.0 + 224.0 / 255.0 * (m[..., 2] - lm) / (2 * (1 - KB)) + 0.5)
    v = np.floor(128.0 + 224.0 / 255.0 * (m[..., 0] - lm) / (2 * (1 - KR)) + 0.5)
    return tuple(np.clip(p, 0, 255).astype(np.uint8) for p in (y, u, v))  # type: ignore[return-value]


def unpack_raw10(packed: np.ndarray, width: int) -> np.ndarray:
    """Twin of ``kernels.unpack_raw10``."""
    h = packed.shape[0]
    groups = -(-width // 4)
    g = packed[:, : 5 * groups].reshape(h, groups, 5).astype(np.uint16)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint16)
    px = (g[:, :, :4] << 2) | ((g[:, :, 4:5] >> shifts) & 3)
    return px.reshape(h, 4 * groups)[:, :width].copy()


def unpack_raw12(packed: np.ndarray, width: int) -> np.ndarray:
    """Twin of ``kernels.unpack_raw12``."""
    h = packed.shape[0]
    pairs = -(-width // 2)
    g = packed[:, : 3 * pairs].reshape(h, pairs, 3).astype(np.uint16)
    shifts = np.array([0, 4], dtype=np.uint16)
    px = (g[:, :, :2] << 4) | ((g[:, :, 2:3] >> shifts) & 15)
    return px.reshape(h, 2 * pairs)[:, :width].copy()


def noise_scale(lin: np.ndarray) -> float:
    """Twin of ``kernels.temporal.noise_scale`` (float64 arithmetic)."""
    m = lin[::ROW_STEP].astype(np.float64).mean(axis=2)
    level = np.maximum(0.5 * (m[:, 1:] + m[:, :-1]), 0.0) + LEVEL_EPS
    d = (np.abs(np.diff(m, axis=1)) / np.sqrt(level)).ravel()
    d = d[~np.isnan(d)]
    return float(1.4826 * np.median(d) / np.sqrt(2.0)) if d.size else 0.0


def temporal_noise_scale(lin: np.ndarray, state: np.ndarray) -> float:
    """Twin of ``kernels.temporal.temporal_noise_scale`` (float64 arithmetic)."""
    m = lin[::ROW_STEP].astype(np.float64).mean(axis=2)
    s = state[::ROW_STEP].astype(np.float64).mean(axis=2)
    level = np.maximum(0.5 * (m + s), 0.0) + LEVEL_EPS
    d = (np.abs(m - s) / np.sqrt(level)).ravel()
    d = d[~np.isnan(d)]
    return float(1.4826 * np.median(d)) if d.size else 0.0


def temporal_denoise(lin: np.ndarray, state: np.ndarray, frames: float, sigma: float) -> np.ndarray:
    """Twin of ``kernels.temporal.temporal_denoise``: returns the new state (float32), ``state`` untouched."""
    x = lin.astype(np.float64)
    s = state.astype(np.float64)
    k_min = 1.0 / frames
    level = np.maximum(s.mean(axis=2), 0.0) + LEVEL_EPS
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.abs(x - s).mean(axis=2) / (sigma if sigma > 0 else 0.0) / np.sqrt(level)
        k = k_min + (1.0 - k_min) * np.clip((d - LO) / (HI - LO), 0.0, 1.0)
    k = np.where(k >= k_min, k, 1.0)[..., None]  # NaN: take the new value
    return np.where(k >= 1.0, x, s + k * (x - s)).astype(np.float32)


def raw_noise_sigma(raw: np.ndarray, row_step: int = 4) -> float:
    """Twin of ``kernels.hotpix.raw_noise_sigma``: the lower median by ``np.partition``."""
    rows = raw[::row_step].astype(np.int64)
    d = np.abs(rows[:, :-2] - rows[:, 2:]).ravel()
    if d.size == 0:
        return 0.0
    return float(np.partition(d, (d.size - 1) // 2)[(d.size - 1) // 2]) * 1.4826 / np.sqrt(2.0)


def fix_hot_pixels(
    raw: np.ndarray, black: np.ndarray, threshold: float, ratio: float, cfa: CFA
) -> tuple[np.ndarray, int]:
    """Twin of ``kernels.hotpix.fix_hot_pixels`` with the threshold given: whole-array shifts instead of loops."""
    h, w = raw.shape
    sig = raw.astype(np.float64) - _per_position(np.asarray(black, np.float64).reshape(4), raw.shape)
    out = raw.copy()
    if h < 5 or w < 5:
        return out, 0

    def shifted(dy: int, dx: int) -> np.ndarray:
        return sig[2 + dy : h - 2 + dy, 2 + dx : w - 2 + dx]

    centre = shifted(0, 0)
    adjacent = [shifted(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    ring = [(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if dy or dx]
    lim1 = np.maximum(np.max(adjacent, axis=0), 0.0)
    lim2 = np.maximum(np.maximum(lim1, np.max([shifted(dy, dx) for dy, dx in ring], axis=0)), 0.0)
    hot = (centre > threshold)
    for lim in (lim1, lim2):
        hot &= (centre - lim > threshold) & (centre > ratio * lim)
    wt = {(dy, dx): (0.5 if dy == 0 or dx == 0 else 1 / np.sqrt(8.0)) for dy, dx in ring}
    total = sum(wt[k] * shifted(*k) for k in ring)
    wsum = sum(wt.values())
    yy, xx = np.mgrid[2 : h - 2, 2 : w - 2]
    green = (yy + xx) % 2 == (1 if CFA(cfa) in (CFA.RGGB, CFA.BGGR) else 0)
    diag = sum(shifted(dy, dx) for dy in (-1, 1) for dx in (-1, 1)) / np.sqrt(2.0)
    total = np.where(green, total + diag, total)
    wsum = np.where(green, wsum + 4 / np.sqrt(2.0), wsum)
    own_black = _per_position(np.asarray(black, np.float64).reshape(4), raw.shape)[2 : h - 2, 2 : w - 2]
    value = np.clip(np.floor(total / wsum + own_black + 0.5), 0, 65535).astype(np.uint16)
    inner = out[2 : h - 2, 2 : w - 2]
    inner[hot] = value[hot]
    return out, int(hot.sum())
