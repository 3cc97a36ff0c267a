"""Amplification: the per-frame estimate of SPEC §3 (paper Eq. 5) and its temporal smoothing.

Eq. 5 weighs every normalised pixel ``r`` by the weight of its histogram bin (darkest bin 1, brightest 1e-5,
saturated pixels 0) and returns ``A = clamp(target * sum(w) / sum(w * r), lo, hi)``. Since ``w`` and ``w * r`` depend
only on the pixel's raw value and its 2x2 position, they are tabulated once per (black levels, white level) in a
lookup table (LUT) built with NumPy (:func:`redi_stream.amplifier.gain_lut`: ``np.searchsorted`` on the float64 bin
edges, the same arithmetic the NumPy twin uses per pixel, so both put every value in the same bin); the numba kernel
then only gathers and sums. The bins and the table live in :mod:`redi_stream.amplifier`, shared with ``model``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from redi_stream.amplifier import BIN_EDGES, BIN_WEIGHTS, N_BINS, gain_lut, weights_of  # noqa: F401 (re-exported)
from redi_stream.kernels.pack import _check_levels, _check_raw

@njit(cache=True, nogil=True)
def _gain_sums(raw, lut):
    """(sum w, sum w*r) in float64 over an (H, W) uint16 frame, gathering from a (4, L+1, 2) LUT
    (``amplifier.gain_lut``).

    Four accumulators (one per column parity and quantity) shorten the float64 add chains.
    """
    h, w = raw.shape
    last = lut.shape[1] - 1
    half = w // 2
    sw0 = 0.0
    sw1 = 0.0
    swr0 = 0.0
    swr1 = 0.0
    for y in range(h):
        row = raw[y]
        p = 2 * (y & 1)
        la = lut[p]
        lb = lut[p + 1]
        for k in range(half):
            va = min(np.int64(row[2 * k]), last)
            vb = min(np.int64(row[2 * k + 1]), last)
            sw0 += la[va, 0]
            swr0 += la[va, 1]
            sw1 += lb[vb, 0]
            swr1 += lb[vb, 1]
        if w & 1:
            va = min(np.int64(row[w - 1]), last)
            sw0 += la[va, 0]
            swr0 += la[va, 1]
    return sw0 + sw1, swr0 + swr1


def gain_from_sums(sum_w: float, sum_wr: float, target: float, lo: float, hi: float) -> float:
    """``clamp(target * sum_w / sum_wr, lo, hi)``; ``hi`` for an all-black frame, ``lo`` for an all-saturated one.

    All-black (every pixel at or below black, ``sum_wr == 0 < sum_w``): nothing to measure, use the most gain.
    All-saturated (``sum_w == 0``: every pixel weighs 0): amplifying cannot help, use the least gain.
    """
    if sum_wr > 0.0:
        return float(min(max(target * sum_w / sum_wr, lo), hi))
    return float(hi) if sum_w > 0.0 else float(lo)


def _check_gain_args(target: float, lo: float, hi: float) -> None:
    if not (math.isfinite(target) and target > 0):
        raise ValueError(f"target must be finite and > 0, got {target}")
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"need finite 0 < lo <= hi, got lo={lo}, hi={hi}")


def estimate_gain(
    raw: np.ndarray,
    black: np.ndarray,
    white: float,
    target: float = 0.01,
    lo: float = 1.0,
    hi: float = 300.0,
) -> float:
    """Per-frame amplification by SPEC §3 (paper Eq. 5, n = 128).

    Args:
        raw: (H, W) uint16 mosaic in raw DN (the unpadded frame as stored; any Bayer phase, any layout).
        black: (4,) black level per 2x2 position (TL, TR, BL, BR); white: white level, > every black level.
        target: the Eq. 5 constant (0.01 in the paper; calibrate for the weights in use, see SPEC §3).
        lo, hi: clamp range of the result.

    Returns:
        ``A = clamp(target * sum(w) / sum(w * r), lo, hi)`` with ``r = clip((raw - black) / (white - black), 0, 1)``
        and ``w`` the weight of r's bin; ``hi`` if the frame is all black, ``lo`` if it is all saturated. Sums are
        float64. The user multiplier is applied by the caller, not here.

    Thread-safety: pure; safe from any thread (the LUT cache is an ``lru_cache``).
    """
    _check_raw(raw)
    black = np.asarray(black, dtype=np.float32)
    white = float(white)
    _check_levels(black, white)
    target, lo, hi = float(target), float(lo), float(hi)
    _check_gain_args(target, lo, hi)
    lut = gain_lut(tuple(float(b) for b in black), white)
    sum_w, sum_wr = _gain_sums(raw, lut)
    return gain_from_sums(sum_w, sum_wr, target, lo, hi)


class GainSmoother:
    """Temporal smoothing of per-frame gains for video: an EMA in log space that jumps on scene cuts.

    Why: Eq. 5 is re-estimated on every frame, and noise, small motion and flicker of lights make it wander by a few
    percent from frame to frame; amplified 100-300x, that wander is visible as brightness flicker (SPEC §3). Averaging
    in log space treats x2 and /2 symmetrically. A real change of scene (lights switched on, a cut in the footage)
    should not fade in over many frames, so ``cut_frames`` consecutive estimates that agree with each other and all
    differ from the smoothed value by more than ``cut_ratio`` reset the state to the newest estimate. Estimates that
    jump around without agreeing (alternating noise) never count as a cut; they are simply averaged.

    Args:
        time_constant_frames: EMA time constant in frames (alpha = 1 - exp(-1 / tc)); 0 disables smoothing.
        cut_ratio: a frame is "off" when ``|log g - log smoothed| > log(cut_ratio)``; must be > 1.
        cut_frames: consecutive agreeing "off" frames that make a scene cut; >= 1.

    Not thread-safe; owned by the one stage that computes gains.
    """

    def __init__(self, time_constant_frames: float = 8.0, cut_ratio: float = 2.0, cut_frames: int = 2) -> None:
        tc = float(time_constant_frames)
        if not (math.isfinite(tc) and tc >= 0):
            raise ValueError(f"time_constant_frames must be finite and >= 0, got {time_constant_frames}")
        if not (math.isfinite(cut_ratio) and cut_ratio > 1):
            raise ValueError(f"cut_ratio must be finite and > 1, got {cut_ratio}")
        if int(cut_frames) < 1:
            raise ValueError(f"cut_frames must be >= 1, got {cut_frames}")
        self.time_constant_frames = tc
        self.cut_ratio = float(cut_ratio)
        self.cut_frames = int(cut_frames)
        self._alpha = 1.0 - math.exp(-1.0 / tc) if tc > 0 else 1.0
        self._log_cut = math.log(self.cut_ratio)
        self.reset()

    def reset(self) -> None:
        """Forget the history; the next :meth:`update` returns its input."""
        self._log_s: float | None = None
        self._n_off = 0
        self._log_first_off = 0.0

    @property
    def value(self) -> float | None:
        """The current smoothed gain, or None before the first update."""
        return None if self._log_s is None else math.exp(self._log_s)

    def update(self, gain: float, upcoming: float | None = None) -> float:
        """Feed one frame's estimate (finite, > 0); return the smoothed gain for that frame.

        ``upcoming``: the next frame's estimate when it is already known (file sources look one frame ahead). An
        off frame whose successor is off the same way counts that successor towards the cut, so a cut takes
        effect on its own first frame instead of one frame late (which showed as a one-frame exposure jump at
        every hard cut). A successor back near the smoothed gain (a flash) changes nothing.
        """
        gain = float(gain)
        if not (math.isfinite(gain) and gain > 0):
            raise ValueError(f"gain must be finite and > 0, got {gain}")
        lg = math.log(gain)
        if self._log_s is None or self._alpha == 1.0:
            self._log_s = lg
            self._n_off = 0
            return gain
        if abs(lg - self._log_s) > self._log_cut:
            # Off frames count towards a cut only while they agree with the first one of the run.
            if self._n_off and abs(lg - self._log_first_off) <= self._log_cut:
                self._n_off += 1
            else:
                self._n_off = 1
                self._log_first_off = lg
            seen = self._n_off
            if upcoming is not None and upcoming > 0 and math.isfinite(upcoming):
                lu = math.log(upcoming)
                seen += abs(lu - self._log_s) > self._log_cut and abs(lu - self._log_first_off) <= self._log_cut
            if seen >= self.cut_frames:
                self._log_s = lg
                self._n_off = 0
                return gain
        else:
            self._n_off = 0
        self._log_s += self._alpha * (lg - self._log_s)
        return math.exp(self._log_s)
