"""Motion-adaptive temporal denoising of the network's linear output (``--temporal-denoise``), for still cameras.

Why: REDI is a single-frame network. On a still scene its residual noise is different in every frame, and because
the network has already smoothed it spatially it shows as low-frequency blotches that crawl from frame to frame.
Smoothing the gain (``kernels.gain.GainSmoother``) cannot help: the per-frame Eq. 5 estimate already varies by
well under 1% on a static scene; the crawl is the image itself.

What: a recursive filter per pixel, ``s <- s + k * (x - s)``, where ``x`` is the new frame and ``s`` the output so
far. ``k`` is ``k_min`` (= 1 / frames: an exponential average over about ``frames`` frames) where the pixel's change
looks like noise, and 1 (take the new frame) where it looks like motion, with a linear ramp between:

* the change ``d`` is the mean absolute difference over R, G, B divided by ``sqrt(level)`` (the output's noise grows
  with brightness, roughly as photon noise does) and by ``sigma``;
* ``sigma`` is the frame's noise scale, measured in time and bounded by one measured in space. In time
  (:func:`temporal_noise_scale`): the median absolute difference between the frame and the filter's state, on the
  channel mean of a subset of rows, variance-stabilised the same way (1.4826 * MAD). On a still scene that is the
  noise the filter must remove; where a few things move, the median ignores them. In space (:func:`noise_scale`):
  the same statistic of horizontal neighbour differences within the frame (divided by sqrt(2)), which motion cannot
  inflate. ``sigma`` is the temporal scale when it lies between 1 and ``SPATIAL_CAP`` times the spatial one, else
  the spatial one: the network smooths its residual noise spatially (the shipped weights leave 3.1-3.5x more noise
  in time than their neighbour differences show), so the spatial scale alone would call that noise motion; above
  the cap the typical pixel changed by more than noise can explain (a pan, a cut), and the spatial scale keeps such
  changes from being averaged into trails;
* ``k = k_min`` for ``d <= lo`` (2 sigma), 1 for ``d >= hi`` (4 sigma).

A scene cut or a change of brightness moves every pixel by far more than the noise, so the filter follows it at
once; there is no state to reset except on a change of frame size. A NaN in the input or state takes the new value.

Measured: ``redi-stream eval`` reports it on its static clip (README). ``tests/kernels/test_temporal.py`` checks
the behaviour on synthetic scenes: white and spatially smoothed noise, a moving edge, a cut.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from redi_stream.kernels.rows import deinterleave, interleave, row, rows_in

#: Ramp of the blend factor in units of the noise scale: below ``LO`` the change is noise, above ``HI`` motion.
LO, HI = 2.0, 4.0
#: Added to the level before its square root (linear units; the network's output is in [0, 1]).
LEVEL_EPS = 1e-3
#: Rows used by :func:`noise_scale` and :func:`temporal_noise_scale`: every ``ROW_STEP``-th one.
ROW_STEP = 16
#: The temporal noise scale is used up to this multiple of the spatial one (the shipped weights: about 3.1-3.5).
SPATIAL_CAP = 5.0


@njit(cache=True, nogil=True, inline="always")
def _stabilised_diff(a, b, eps):
    """|a - b| / sqrt(level + eps), level = mean of a and b clipped at 0 (NaN if either is NaN)."""
    level = max(np.float32(0.5) * (a + b), np.float32(0.0)) + eps
    return abs(a - b) / np.sqrt(level)


@njit(cache=True, nogil=True, inline="always")
def _mad_scale(d, n):
    """1.4826 * median of the first ``n`` values (a robust sigma), 0.0 if there are none."""
    if n == 0:
        return 0.0
    return 1.4826 * np.median(d[:n])


@njit(cache=True, nogil=True)
def _noise_scale(lin_body, lin_last, eps, step):
    """See :func:`noise_scale`; ``lin`` as a ``rows.rows`` pair."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    rows = (h + step - 1) // step
    if w < 2 or rows == 0:
        return 0.0
    d = np.empty(rows * (w - 1), np.float32)
    third = np.float32(1.0 / 3.0)
    n = 0
    for y in range(0, h, step):
        src = row(lin_body, lin_last, y)
        prev = (src[0] + src[1] + src[2]) * third
        for x in range(1, w):
            cur = (src[3 * x] + src[3 * x + 1] + src[3 * x + 2]) * third
            v = _stabilised_diff(cur, prev, eps)
            if v == v:  # skip NaN
                d[n] = v
                n += 1
            prev = cur
    return _mad_scale(d, n) / math.sqrt(2.0)


@njit(cache=True, nogil=True)
def _temporal_noise_scale(lin_body, lin_last, state_body, state_last, eps, step):
    """See :func:`temporal_noise_scale`; ``lin`` and ``state`` as ``rows.rows`` pairs."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    rows = (h + step - 1) // step
    if w == 0 or rows == 0:
        return 0.0
    d = np.empty(rows * w, np.float32)
    third = np.float32(1.0 / 3.0)
    n = 0
    for y in range(0, h, step):
        src = row(lin_body, lin_last, y)
        srow = row(state_body, state_last, y)
        for x in range(w):
            cur = (src[3 * x] + src[3 * x + 1] + src[3 * x + 2]) * third
            old = (srow[3 * x] + srow[3 * x + 1] + srow[3 * x + 2]) * third
            v = _stabilised_diff(cur, old, eps)
            if v == v:  # skip NaN
                d[n] = v
                n += 1
    return _mad_scale(d, n)


def temporal_noise_scale(lin: np.ndarray, state: np.ndarray) -> float:
    """The noise scale measured in time: ``1.4826 * median(|m[y, x] - s[y, x]| / sqrt(level + eps))`` over every
    ``ROW_STEP``-th row, ``m`` and ``s`` the mean of R, G, B of the frame and of the filter's state and ``level``
    their mean (clipped at 0); NaN differences are skipped; 0.0 if there are none.

    Args:
        lin, state: (H, W, 3) float32 linear RGB of one shape (any strides).
    """
    _check_lin(lin)
    _check_lin(state)
    if state.shape != lin.shape:
        raise ValueError(f"state must have the frame's shape {lin.shape}, got {state.shape}")
    if lin.shape[0] == 0:
        return 0.0
    return float(_temporal_noise_scale(*rows_in(lin), *rows_in(state), np.float32(LEVEL_EPS), ROW_STEP))


def combined_noise_scale(temporal: float, spatial: float) -> float:
    """The sigma :class:`TemporalDenoiser` uses: ``temporal`` where it lies in ``[spatial, SPATIAL_CAP *
    spatial]``, else ``spatial`` (above the cap the typical pixel moved by more than noise does: a pan or a cut)."""
    return temporal if spatial <= temporal <= SPATIAL_CAP * spatial else spatial


def noise_scale(lin: np.ndarray) -> float:
    """The frame's noise scale for :func:`temporal_denoise`: ``1.4826 * median(|m[y, x] - m[y, x-1]| /
    sqrt(level + eps)) / sqrt(2)`` over every ``ROW_STEP``-th row, ``m`` the mean of R, G, B and ``level`` the
    mean of the two pixels' ``m`` (clipped at 0); NaN differences are skipped; 0.0 if there are none.

    Args:
        lin: (H, W, 3) float32 linear RGB (any strides).
    """
    _check_lin(lin)
    if lin.shape[0] == 0:
        return 0.0
    return float(_noise_scale(*rows_in(lin), np.float32(LEVEL_EPS), ROW_STEP))


@njit(cache=True, nogil=True, fastmath={"contract"})
def _temporal_denoise(lin_body, lin_last, state, k_min, inv_sigma, lo, hi, eps):
    """See :func:`temporal_denoise`; ``lin`` as a ``rows.rows`` pair, ``state`` (H, 3 W) C-contiguous. Per row:
    the frame and the state into planes, the blend factor of each pixel, the blend, the state back (SIMD loops)."""
    h = lin_body.shape[0] + 1
    w = lin_last.shape[0] // 3
    third = np.float32(1.0 / 3.0)
    span = np.float32(1.0) / (hi - lo)
    zero = np.float32(0.0)
    one = np.float32(1.0)
    new = np.empty((3, w), np.float32)
    old = np.empty((3, w), np.float32)
    blend = np.empty(w, np.float32)
    r, g, b = new[0], new[1], new[2]
    sr, sg, sb = old[0], old[1], old[2]
    for y in range(h):
        deinterleave(row(lin_body, lin_last, y), new)
        st = state[y]
        deinterleave(st, old)
        for x in range(w):
            level = max((sr[x] + sg[x] + sb[x]) * third, zero) + eps
            d = (abs(r[x] - sr[x]) + abs(g[x] - sg[x]) + abs(b[x] - sb[x])) * third * inv_sigma / np.sqrt(level)
            blend[x] = k_min + (one - k_min) * min(max((d - lo) * span, zero), one)
        for c in range(3):
            nc = new[c]
            oc = old[c]
            for x in range(w):
                k = blend[x]
                # motion, or NaN in the frame or the state: the new value as is
                oc[x] = nc[x] if k >= one or not (k >= k_min) else oc[x] + k * (nc[x] - oc[x])
        interleave(old, st)


def temporal_denoise(lin: np.ndarray, state: np.ndarray, frames: float, sigma: float) -> np.ndarray:
    """One step of the motion-adaptive recursive filter (module docstring): updates ``state`` in place.

    Args:
        lin: (H, W, 3) float32 new frame, linear (any strides).
        state: (H, W, 3) float32 C-contiguous: the previous output; overwritten with this frame's output.
        frames: averaging length where the scene is still (``k_min = 1 / frames``), >= 1.
        sigma: the frame's noise scale (:func:`noise_scale`); 0 or less makes every change motion (no filtering).

    Returns:
        ``state``.
    """
    _check_lin(lin)
    if state.dtype != np.float32 or state.shape != lin.shape or not state.flags.c_contiguous:
        raise ValueError(f"state must be C-contiguous float32 {lin.shape}, got {state.dtype} {state.shape}")
    _check_frames(frames)
    if lin.shape[0]:
        _step(rows_in(lin), state, frames, sigma)
    return state


def _step(lin_rows: tuple[np.ndarray, np.ndarray], state: np.ndarray, frames: float, sigma: float) -> np.ndarray:
    """:func:`temporal_denoise` on arguments already checked, the frame (at least one row) as ``rows_in(lin)``."""
    inv_sigma = 1.0 / sigma if sigma > 0.0 and math.isfinite(sigma) else math.inf
    h, w, _ = state.shape
    _temporal_denoise(*lin_rows, state.reshape(h, 3 * w), np.float32(1.0 / frames), np.float32(inv_sigma),
                      np.float32(LO), np.float32(HI), np.float32(LEVEL_EPS))
    return state


def _check_lin(lin: np.ndarray) -> None:
    if lin.dtype != np.float32 or lin.ndim != 3 or lin.shape[2] != 3:
        raise ValueError(f"need (H, W, 3) float32, got {lin.dtype} {lin.shape}")


def _check_frames(frames: float) -> None:
    if not (math.isfinite(frames) and frames >= 1.0):
        raise ValueError(f"temporal denoise frames must be finite and >= 1, got {frames}")


class TemporalDenoiser:
    """Holds the filter's state for a stream of frames of one size (a new size starts over).

    ``__call__(lin) -> (H, W, 3)`` float32 C-contiguous output, owned by the denoiser and overwritten by the next
    call. The first frame (and the first after a size change) passes through unchanged. Not thread-safe.
    """

    def __init__(self, frames: float) -> None:
        _check_frames(frames)
        self.frames = float(frames)
        self._state: np.ndarray | None = None

    def __call__(self, lin: np.ndarray) -> np.ndarray:
        _check_lin(lin)
        if self._state is None or self._state.shape != lin.shape:
            self._state = np.array(lin, dtype=np.float32, order="C", copy=True)
            return self._state
        eps = np.float32(LEVEL_EPS)
        if lin.shape[0] == 0:
            return self._state
        lin_rows = rows_in(lin)
        spatial = float(_noise_scale(*lin_rows, eps, ROW_STEP))
        sigma = combined_noise_scale(float(_temporal_noise_scale(*lin_rows, *rows_in(self._state), eps, ROW_STEP)),
                                     spatial)
        return _step(lin_rows, self._state, self.frames, sigma)
