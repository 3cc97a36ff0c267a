"""The constants of SPEC §3 (paper Eq. 5), in one place for every layer: NumPy only (no numba, no torch).

Eq. 5 weighs every normalised pixel ``r`` by the weight of its histogram bin (darkest bin 1, brightest 1e-5,
saturated pixels 0) and returns ``A = clamp(target * sum(w) / sum(w * r), lo, hi)``. ``kernels.gain`` (the numba
kernel), ``model.gpu_ops`` (the device sums) and ``model.synth`` (the torch twin used in training) all take their
bins from here, so the three cannot drift apart.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: The largest network input: amplified values are clipped here, as SID's pipeline clips ``raw * ratio`` (the
#: packers, ``kernels.pack_raw`` and ``model.gpu_ops``, and the training inputs of ``model.synth`` and
#: ``model.data``). Training inputs stay near [0, 1]; a light in the frame (a street lamp, a headlight, a hot pixel)
#: amplified x100 reaches 50 or more, and the network's coarse-scale branch spreads that over the whole frame
#: (README, "The colour pipeline", has the measurement).
INPUT_CEILING = 1.0

N_BINS = 127
#: Bin edges ``b_i = (2^(8 i / 127) - 1) / 255``, i = 0..127 (float64; b_0 = 0, b_127 = 1 exactly).
BIN_EDGES = np.array([(2.0 ** (8.0 * i / N_BINS) - 1.0) / 255.0 for i in range(N_BINS + 1)])
#: Bin weights ``w_j = 10^(-5 j / 126)``, j = 0..126: darkest bin 1, brightest 1e-5.
BIN_WEIGHTS = np.array([10.0 ** (-5.0 * j / (N_BINS - 1)) for j in range(N_BINS)])
BIN_EDGES.setflags(write=False)
BIN_WEIGHTS.setflags(write=False)


def weights_of(r: np.ndarray) -> np.ndarray:
    """Eq. 5 weight of normalised values ``r`` in [0, 1] (float64): ``w_j`` for ``b_j <= r < b_{j+1}``, 0 for r >= 1."""
    j = np.searchsorted(BIN_EDGES, r, side="right") - 1
    w = np.zeros(r.shape, dtype=np.float64)
    inside = j < N_BINS
    w[inside] = BIN_WEIGHTS[j[inside]]
    return w


@functools.lru_cache(maxsize=8)
def gain_lut(black: tuple[float, float, float, float], white: float) -> np.ndarray:
    """(4, L + 1, 2) float64 table of ``(w(r), w(r) * r)`` per 2x2 position and raw value 0..L-1, L = floor(white)+1.

    ``r = clip((v - black_p) / (white - black_p), 0, 1)`` with the black level rounded to float32 as the kernels
    use it. Raw values >= L exceed the white level, so they are saturated and weigh 0: entry L holds (0, 0) and the
    users clamp indices to L. Read-only; cached per levels (built once per stream in practice).
    """
    n = int(min(math.floor(white) + 1, 65536))
    v = np.arange(n, dtype=np.float64)
    lut = np.zeros((4, n + 1, 2), dtype=np.float64)
    for p in range(4):
        b = np.float64(np.float32(black[p]))
        r = np.clip((v - b) / (white - b), 0.0, 1.0)
        w = weights_of(r)
        lut[p, :n, 0] = w
        lut[p, :n, 1] = w * r
    lut.setflags(write=False)
    return lut
