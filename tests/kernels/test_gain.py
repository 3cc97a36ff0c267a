"""estimate_gain (SPEC §3 Eq. 5) against hand-computed values and its twin; GainSmoother behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.frames import CFA
from redi_stream.kernels import GainSmoother, estimate_gain, reference
from redi_stream.kernels.gain import BIN_EDGES, BIN_WEIGHTS

ZERO_BLACK = np.zeros(4, dtype=np.float32)


def _bin(r: float) -> int:
    """Eq. 5 bin by the closed form of the edges: b_j <= r  <=>  j <= 127/8 * log2(255 r + 1)."""
    return math.floor(127.0 / 8.0 * math.log2(255.0 * r + 1.0))


def test_bin_edges_and_weights() -> None:
    assert BIN_EDGES.shape == (128,) and BIN_WEIGHTS.shape == (127,)
    assert BIN_EDGES[0] == 0.0 and BIN_EDGES[127] == 1.0
    assert BIN_WEIGHTS[0] == 1.0 and BIN_WEIGHTS[126] == pytest.approx(1e-5, rel=1e-12)
    assert np.all(np.diff(BIN_EDGES) > 0) and np.all(np.diff(BIN_WEIGHTS) < 0)


def test_uniform_frame_gives_target_over_r() -> None:
    """Every pixel equal: the weights cancel and A = target / r."""
    raw = np.full((6, 8), 5, dtype=np.uint16)  # r = 5 / 1000
    assert estimate_gain(raw, ZERO_BLACK, 1000.0) == pytest.approx(0.01 / 0.005, rel=1e-12)


def test_two_level_frame_hand_computed() -> None:
    r1, r2 = 0.001, 0.1
    j1, j2 = _bin(r1), _bin(r2)
    assert (j1, j2) == (5, 75)
    w1, w2 = 10.0 ** (-5.0 * j1 / 126), 10.0 ** (-5.0 * j2 / 126)
    raw = np.full((4, 4), 1, dtype=np.uint16)
    raw[2:] = 100  # half the pixels at r = 0.1
    want = 0.01 * (8 * w1 + 8 * w2) / (8 * w1 * r1 + 8 * w2 * r2)
    assert estimate_gain(raw, ZERO_BLACK, 1000.0) == pytest.approx(want, rel=1e-12)
    # Saturated pixels (at or above white) weigh 0 and change nothing.
    with_sat = np.concatenate([raw, np.array([[1000, 1001, 65535, 1000]], dtype=np.uint16)])
    assert estimate_gain(with_sat, ZERO_BLACK, 1000.0) == pytest.approx(want, rel=1e-12)


def test_black_level_per_position() -> None:
    black = np.array([100.0, 200.0, 300.0, 400.0], dtype=np.float32)
    raw = (np.tile(black.reshape(2, 2), (3, 4)) + 20).astype(np.uint16)  # every pixel 20 DN above its black
    rs = 20.0 / (1100.0 - black.astype(np.float64))
    ws = np.array([10.0 ** (-5.0 * _bin(r) / 126) for r in rs])
    want = 0.01 * ws.sum() / (ws * rs).sum()
    assert estimate_gain(raw, black, 1100.0, lo=1e-3) == pytest.approx(want, rel=1e-12)


def test_clamps_and_degenerate_frames() -> None:
    bright = np.full((4, 4), 500, dtype=np.uint16)  # r = 0.5 -> 0.02 -> clamped to lo
    assert estimate_gain(bright, ZERO_BLACK, 1000.0) == 1.0
    assert estimate_gain(bright, ZERO_BLACK, 1000.0, lo=0.001) == pytest.approx(0.02)
    dark = np.full((4, 4), 1, dtype=np.uint16)  # r = 1e-5 -> 1000 -> clamped to hi
    assert estimate_gain(dark, ZERO_BLACK, 100000.0) == 300.0
    all_black = np.full((4, 4), 50, dtype=np.uint16)
    assert estimate_gain(all_black, np.full(4, 64, np.float32), 1000.0) == 300.0
    assert estimate_gain(all_black, np.full(4, 64, np.float32), 1000.0, hi=77.0) == 77.0
    all_saturated = np.full((4, 4), 1000, dtype=np.uint16)
    assert estimate_gain(all_saturated, ZERO_BLACK, 1000.0) == 1.0  # nothing to amplify: lo


def test_rejects_bad_arguments() -> None:
    raw = np.zeros((4, 4), dtype=np.uint16)
    with pytest.raises(ValueError, match="exceed"):
        estimate_gain(raw, np.full(4, 10, np.float32), 10.0)
    with pytest.raises(ValueError, match="lo"):
        estimate_gain(raw, ZERO_BLACK, 100.0, lo=5.0, hi=2.0)
    with pytest.raises(ValueError, match="target"):
        estimate_gain(raw, ZERO_BLACK, 100.0, target=0.0)
    with pytest.raises(ValueError, match="uint16"):
        estimate_gain(raw.astype(np.int32), ZERO_BLACK, 100.0)


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize(("h", "w"), [(37, 53), (2, 2), (64, 31)])
def test_matches_reference(cfa: CFA, h: int, w: int) -> None:
    rng = np.random.default_rng(h + w)
    black = np.array([512.0, 509.5, 515.0, 520.25], dtype=np.float32)
    raw = np.clip(rng.normal(530, 12, size=(h, w)), 0, 65535).astype(np.uint16)
    raw.ravel()[: min(6, h * w)] = [0, 16383, 16384, 65535, 512, 520][: min(6, h * w)]
    # The stored phase does not enter Eq. 5 (levels are per position); `cfa` only varies the data layout.
    raw = np.roll(raw, cfa.offset, axis=(0, 1))
    for target in (0.01, 0.05):
        got = estimate_gain(raw, black, 16383.0, target=target)
        assert got == pytest.approx(reference.estimate_gain(raw, black, 16383.0, target=target), rel=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(2, 64),
    w=st.integers(2, 64),
    black=st.lists(st.floats(0, 4000, width=32), min_size=4, max_size=4),
    headroom=st.floats(1.0, 60000.0),
    spread=st.floats(0.0, 1.2),
    target=st.floats(1e-4, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(h, w, black, headroom, spread, target, seed) -> None:
    black = np.array(black, dtype=np.float32)
    white = float(black.max()) + headroom
    rng = np.random.default_rng(seed)
    # Mostly dark frames around the black level, some reaching past white.
    raw = black.max() + rng.exponential(spread * headroom + 1e-3, size=(h, w)) - rng.uniform(0, 20, size=(h, w))
    raw = np.clip(raw, 0, 65535).astype(np.uint16)
    got = estimate_gain(raw, black, white, target=target)
    want = reference.estimate_gain(raw, black, white, target=target)
    assert math.isfinite(got) and 1.0 <= got <= 300.0
    assert got == pytest.approx(want, rel=1e-6)


# --- GainSmoother ---------------------------------------------------------------------------------------------------


def test_smoother_first_update_and_reset() -> None:
    s = GainSmoother()
    assert s.value is None
    assert s.update(42.0) == 42.0
    s.update(50.0)
    s.reset()
    assert s.value is None and s.update(7.0) == 7.0


def test_smoother_is_an_ema_in_log_space() -> None:
    s = GainSmoother(time_constant_frames=8.0)
    s.update(10.0)
    alpha = 1.0 - math.exp(-1.0 / 8.0)
    assert s.update(15.0) == pytest.approx(math.exp(math.log(10.0) + alpha * math.log(1.5)), rel=1e-12)


def test_smoother_converges() -> None:
    s = GainSmoother(time_constant_frames=8.0)
    s.update(10.0)
    outs = [s.update(15.0) for _ in range(80)]
    assert all(a <= b for a, b in zip(outs, outs[1:]))
    assert outs[-1] == pytest.approx(15.0, rel=1e-3)


def test_smoother_resets_on_scene_cut() -> None:
    s = GainSmoother(time_constant_frames=8.0, cut_ratio=2.0)
    for _ in range(20):
        s.update(10.0)
    first = s.update(100.0)
    assert 10.0 < first < 20.0  # one off frame is not yet a cut
    assert s.update(100.0) == 100.0  # the second agreeing one is
    assert s.update(100.0) == pytest.approx(100.0)


def test_smoother_with_look_ahead_cuts_on_the_cuts_own_frame() -> None:
    s = GainSmoother(time_constant_frames=8.0, cut_ratio=2.0)
    for _ in range(20):
        s.update(10.0, 10.0)
    assert s.update(100.0, 100.0) == 100.0  # the next frame agrees: a cut, from this frame on
    assert s.update(100.0, 100.0) == pytest.approx(100.0)


def test_smoother_with_look_ahead_still_ignores_a_single_flash() -> None:
    s = GainSmoother(time_constant_frames=8.0)
    for _ in range(20):
        s.update(100.0, 100.0)
    flash = s.update(5.0, 100.0)  # the frame after the flash is back to normal: no cut
    assert 70.0 < flash <= 100.0
    assert all(70.0 < s.update(100.0, 100.0) <= 100.0 for _ in range(3))


def test_smoother_ignores_a_single_flash() -> None:
    s = GainSmoother(time_constant_frames=8.0)
    for _ in range(20):
        s.update(100.0)
    s.update(5.0)  # e.g. a flash: one bright frame
    outs = [s.update(100.0) for _ in range(3)]
    assert all(70.0 < o <= 100.0 for o in outs)


@pytest.mark.parametrize("look_ahead", [False, True])
@pytest.mark.parametrize(("a", "b"), [(10.0, 12.0), (5.0, 50.0)])
def test_smoother_no_flicker_on_alternating_noise(a: float, b: float, look_ahead: bool) -> None:
    """Alternating estimates (within or beyond the cut ratio) are averaged, never treated as cuts."""
    s = GainSmoother(time_constant_frames=8.0, cut_ratio=2.0)
    est = [a if i % 2 else b for i in range(201)]
    outs = [s.update(est[i], est[i + 1] if look_ahead else None) for i in range(200)]
    tail = np.array(outs[100:])
    ripple = tail.max() / tail.min()
    # An EMA of +-d in log space ripples by about alpha * 2d.
    assert ripple < math.exp(0.13 * math.log(b / a)) * 1.01
    assert math.sqrt(a * b) / 1.3 < float(np.exp(np.log(tail).mean())) < math.sqrt(a * b) * 1.3


def test_smoother_zero_time_constant_is_a_pass_through() -> None:
    s = GainSmoother(time_constant_frames=0.0)
    assert [s.update(g) for g in (3.0, 30.0, 4.0)] == [3.0, 30.0, 4.0]


def test_smoother_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        GainSmoother(time_constant_frames=-1.0)
    with pytest.raises(ValueError):
        GainSmoother(cut_ratio=1.0)
    with pytest.raises(ValueError):
        GainSmoother(cut_frames=0)
    with pytest.raises(ValueError):
        GainSmoother().update(0.0)
    with pytest.raises(ValueError):
        GainSmoother().update(float("nan"))
