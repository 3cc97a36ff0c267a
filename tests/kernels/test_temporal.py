"""Motion-adaptive temporal denoising (kernels.temporal) against its NumPy twins, and what it must do to still
scenes, moving ones and bad values."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream.kernels import TemporalDenoiser, noise_scale, reference, temporal_denoise, temporal_noise_scale
from redi_stream.kernels.temporal import HI, LEVEL_EPS, LO, SPATIAL_CAP, combined_noise_scale


def _scene(rng: np.random.Generator, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth linear-RGB test image in (0.05, 0.6)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.05 + 0.5 * (0.5 + 0.5 * np.sin(6 * xx + 3 * yy))
    return np.stack([base, 0.8 * base, 0.6 * base + 0.05 * rng.random((h, w))], axis=2).astype(np.float32)


def _noisy(clean: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Noise whose std grows as sqrt(level), the model the filter normalises by."""
    return (clean + sigma * np.sqrt(clean) * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_kernel_matches_the_twin(layout: str) -> None:
    rng = np.random.default_rng(0)
    big = rng.random((40, 70, 3), dtype=np.float32) * 0.5
    big[3, 4, 1] = np.nan
    big[5, 6] = -0.2
    lin = big[:, 3:-2] if layout == "strided" else np.ascontiguousarray(big[:, 3:-2])
    assert lin.flags.c_contiguous == (layout == "contiguous")
    state = np.ascontiguousarray(lin + 0.02 * rng.standard_normal(lin.shape).astype(np.float32))
    state[7, 8, 0] = np.nan
    sigma = noise_scale(lin)
    assert sigma == pytest.approx(reference.noise_scale(lin), rel=1e-5)
    assert temporal_noise_scale(lin, state) == pytest.approx(reference.temporal_noise_scale(lin, state), rel=1e-5)
    want = reference.temporal_denoise(lin, state, 3.0, sigma)
    got = temporal_denoise(lin, state.copy(), 3.0, sigma)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    # big[3, 4] is lin[3, 1]: a NaN in the frame passes through; a NaN in the state is replaced by the frame.
    assert np.isnan(got[3, 1, 1]) and np.isfinite(got[7, 8]).all()
    np.testing.assert_array_equal(got[7, 8], lin[7, 8])


def test_still_scene_is_averaged_and_motion_is_followed() -> None:
    rng = np.random.default_rng(1)
    clean = _scene(rng)
    den = TemporalDenoiser(4.0)
    outs, ins = [], []
    for _ in range(40):
        x = _noisy(clean, rng, 0.02)
        ins.append(x)
        outs.append(den(x).copy())
    std_in = np.stack(ins[10:]).std(axis=0).mean()
    std_out = np.stack(outs[10:]).std(axis=0).mean()
    assert std_out < 0.6 * std_in, (std_in, std_out)  # an EMA with k = 1/4 keeps ~38% of the std
    assert abs(float(np.mean(outs[-1] - clean))) < 0.01  # no bias

    # A moving edge: the right half jumps to another brightness, far above the noise: taken at once.
    moved = clean.copy()
    moved[:, 32:] += 0.3
    out = den(_noisy(moved, rng, 0.02))
    assert np.abs(out[:, 34:] - moved[:, 34:]).mean() < 0.02  # no ghost of the old values
    assert np.abs(out[:, :30] - clean[:, :30]).mean() < 0.02


def _smoothed_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float, radius: int = 3) -> np.ndarray:
    """Noise blurred by a (2r+1)^2 box, rescaled to std ``sigma``: neighbours nearly equal, frames independent
    (how the network's residual noise looks)."""
    n = rng.standard_normal((shape[0] + 2 * radius, shape[1] + 2 * radius, 1))
    c = np.cumsum(np.cumsum(np.pad(n, ((1, 0), (1, 0), (0, 0))), axis=0), axis=1)
    k = 2 * radius + 1
    box = c[k:, k:] - c[:-k, k:] - c[k:, :-k] + c[:-k, :-k]
    return (sigma * box / box.std()).astype(np.float32)


def test_spatially_smooth_noise_is_averaged_too() -> None:
    """Noise with little neighbour-to-neighbour difference but full frame-to-frame change is still noise: the
    temporal noise scale finds it where the spatial one alone would call it motion."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:96, 0:128] / 128.0
    base = 0.3 + 0.1 * np.sin(2 * xx + yy)  # slow shading: the spatial scale sees (almost) only the noise
    clean = np.stack([base, 0.8 * base, 0.6 * base], axis=2).astype(np.float32)
    den = TemporalDenoiser(4.0)
    ins, outs = [], []
    for _ in range(40):
        x = (clean + np.sqrt(clean) * _smoothed_noise(rng, clean.shape, 0.02)).astype(np.float32)
        ins.append(x)
        outs.append(den(x).copy())
    spatial = noise_scale(ins[-1])
    assert combined_noise_scale(temporal_noise_scale(ins[-1], outs[-2]), spatial) > 2.0 * spatial
    std_in = np.stack(ins[10:]).std(axis=0).mean()
    std_out = np.stack(outs[10:]).std(axis=0).mean()
    assert std_out < 0.6 * std_in, (std_in, std_out)
    # A cut to another picture: the typical pixel changes by far more than the noise, so the spatial scale is used
    # and the new picture is taken (only pixels that happen to match the old one within the ramp are blended).
    cut = (_scene(rng, 96, 128)[::-1] * 1.5 + 0.1).astype(np.float32)
    spatial = noise_scale(cut)
    assert combined_noise_scale(temporal_noise_scale(cut, outs[-1]), spatial) == spatial
    out = den(cut)
    assert (out == cut).all(axis=2).mean() > 0.9 and np.abs(out - cut).mean() < 0.002


def test_combined_noise_scale_is_the_temporal_one_within_bounds_of_the_spatial_one() -> None:
    assert combined_noise_scale(0.03, 0.01) == pytest.approx(0.03)
    assert combined_noise_scale(0.005, 0.01) == pytest.approx(0.01)  # never below the spatial scale
    assert combined_noise_scale(SPATIAL_CAP * 0.01, 0.01) == pytest.approx(SPATIAL_CAP * 0.01)
    assert combined_noise_scale(1.0, 0.01) == pytest.approx(0.01)  # the typical pixel moved: a pan or a cut
    assert combined_noise_scale(0.5, 0.0) == 0.0  # a flat frame: no filtering


def test_the_blend_ramps_from_k_min_to_one_between_lo_and_hi_sigmas() -> None:
    level = 0.25
    sigma = 0.01
    state = np.full((1, 3, 3), level, np.float32)
    # Changes of 1, 3 and 5 sigma (in the filter's normalised units: |dx| / sqrt(level + eps) / sigma).
    steps = np.array([1.0, 3.0, 5.0]) * sigma * np.sqrt(level + LEVEL_EPS)
    lin = (state + steps[None, :, None]).astype(np.float32)
    out = temporal_denoise(lin, state.copy(), 4.0, sigma)
    k = (out[0, :, 0] - level) / steps
    expected = [0.25, 0.25 + 0.75 * (3.0 - LO) / (HI - LO), 1.0]
    np.testing.assert_allclose(k, expected, rtol=1e-4)


def test_denoiser_first_frame_size_change_and_no_noise_scale() -> None:
    rng = np.random.default_rng(2)
    den = TemporalDenoiser(2.0)
    a = _scene(rng)
    out = den(a)
    np.testing.assert_array_equal(out, a)
    assert out is not a and not np.shares_memory(out, a)  # the runner reuses its output buffer
    b = _scene(rng, 32, 40)
    np.testing.assert_array_equal(den(b), b)  # a new size starts over
    # No noise scale (a flat frame): every change counts as motion, the frame passes through.
    np.testing.assert_array_equal(temporal_denoise(a, a[::-1].copy(), 2.0, 0.0), a)


@pytest.mark.parametrize("bad", [0.5, 0.0, float("nan"), float("inf")])
def test_frames_must_be_at_least_one(bad: float) -> None:
    with pytest.raises(ValueError, match="frames"):
        TemporalDenoiser(bad)
    with pytest.raises(ValueError, match="frames"):
        temporal_denoise(np.zeros((2, 2, 3), np.float32), np.zeros((2, 2, 3), np.float32), bad, 0.1)


def test_rejects_bad_arrays() -> None:
    lin = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="float32"):
        temporal_denoise(lin.astype(np.float64), lin, 2.0, 0.1)
    with pytest.raises(ValueError, match="state"):
        temporal_denoise(lin, np.zeros((4, 5, 3), np.float32), 2.0, 0.1)
    with pytest.raises(ValueError, match="state"):
        temporal_denoise(lin, np.zeros((4, 8, 3), np.float32)[:, ::2], 2.0, 0.1)
    with pytest.raises(ValueError, match="float32"):
        noise_scale(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="shape"):
        temporal_noise_scale(lin, np.zeros((4, 5, 3), np.float32))
