"""Synthetic pair generator: determinism, shapes, colour round trip, ELD noise statistics, Eq. 5 twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from redi_stream.errors import ConfigError
from redi_stream.model.synth import (
    GAIN_BIN_EDGES,
    GAIN_BIN_WEIGHTS,
    LogLinearFit,
    NoiseProfile,
    PairSynthesizer,
    SynthConfig,
    estimate_gain_torch,
    gain_statistic,
    inverse_smoothstep,
    linear_to_srgb,
    load_noise_profiles,
    mosaic_rggb,
    render_srgb,
    rgb_to_camera_matrices,
    smoothstep,
    srgb_to_linear,
    synth_video_frames,
    tukey_lambda_icdf,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]

# A small made-up profile in the ELD format (tests must not need ../shared).
PROFILE = NoiseProfile(
    name="TestCam",
    k_min=0.5,
    k_max=2.0,
    g_shape=(0.1, 0.0, -0.1),
    g_scale=LogLinearFit(slope=0.5, bias=0.5, sigma=0.1),
    r_scale=LogLinearFit(slope=0.5, bias=-0.5, sigma=0.1),
    color_bias=((1.0, 2.0, 3.0, 4.0), (-1.0, -2.0, -3.0, -4.0), (0.5, 0.5, 0.5, 0.5)),
)


def make_synth(device: str = "cpu", **kw) -> PairSynthesizer:
    return PairSynthesizer(SynthConfig(noise_params="unused.json", **kw), device, profiles={"TestCam": PROFILE})


def photos(n: int = 2, h: int = 32, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, h, w), generator=g)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_tensors_and_shapes(device):
    s = make_synth(device)
    x = photos()
    a = s.synthesize(x, torch.Generator(device).manual_seed(3))
    b = s.synthesize(x, torch.Generator(device).manual_seed(3))
    c = s.synthesize(x, torch.Generator(device).manual_seed(4))
    for name in ("input", "target", "dark", "raw_dn"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.input, c.input)
    assert a.input.shape == (2, 1, 32, 64) and a.dark.shape == (2, 1, 32, 64)
    assert a.target.shape == (2, 3, 32, 64) and a.ratio.shape == (2,)
    assert a.input.dtype == torch.float32 and a.input.device.type == device
    assert torch.allclose(a.input, (a.dark * a.ratio.view(-1, 1, 1, 1)).clamp(max=1.0))  # the packers' ceiling
    assert 0 <= float(a.target.min()) and float(a.target.max()) <= 1
    assert 0 <= float(a.dark.min()) and float(a.dark.max()) <= 1
    assert 0 <= float(a.raw_dn.min()) and float(a.raw_dn.max()) <= a.white_level


def test_ratio_and_gain_ranges():
    s = make_synth(ratio_range=(120.0, 130.0), red_gain_range=(2.0, 2.1), blue_gain_range=(1.6, 1.7))
    p = s.sample_params(256, torch.Generator().manual_seed(0))
    assert 120 <= float(p.ratio.min()) and float(p.ratio.max()) <= 130
    assert 2.0 <= float(p.wb[:, 0].min()) and float(p.wb[:, 0].max()) <= 2.1
    assert torch.all(p.wb[:, 1] == 1)
    assert 1.6 <= float(p.wb[:, 2].min()) and float(p.wb[:, 2].max()) <= 1.7
    assert 0.5 <= float(p.k.min()) and float(p.k.max()) <= 2.0
    assert {round(v, 6) for v in p.tl_shape.tolist()} <= set(PROFILE.g_shape)


def test_config_validation_and_unknown_camera():
    with pytest.raises(ConfigError, match="ratio_range"):
        SynthConfig(noise_params="x", ratio_range=(300, 100))
    with pytest.raises(ConfigError, match="TestCam"):
        PairSynthesizer(SynthConfig(noise_params="x", cameras=("Nope",)), profiles={"TestCam": PROFILE})
    with pytest.raises(ConfigError, match="not found"):
        load_noise_profiles("/nonexistent/eld.json")


def test_colour_matrices_map_white_to_white():
    m = rgb_to_camera_matrices(torch.rand(5, 5))
    assert torch.allclose(m.sum(-1), torch.ones(5, 3), atol=1e-6)
    inv = torch.linalg.inv(m)
    assert torch.allclose(inv.sum(-1), torch.ones(5, 3), atol=1e-5)


def test_transfer_curves_invert():
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(smoothstep(inverse_smoothstep(x)), x, atol=1e-5)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)


def test_isp_inverts_unprocessing():
    """render_srgb(target) with the same WB and matrix gives the photo back, less its tone curve."""
    s = make_synth()
    x = 0.2 + 0.6 * photos(seed=1)  # mid-tones: in gamut for every camera matrix
    p = s.sample_params(2, torch.Generator().manual_seed(0))
    target = s.unprocess(x, p)
    back = smoothstep(render_srgb(target, p.wb, p.cam_to_srgb))
    assert torch.allclose(back, x, atol=2e-4)


def test_mosaic_is_rggb():
    rgb = torch.zeros(1, 3, 4, 4)
    rgb[:, 0], rgb[:, 1], rgb[:, 2] = 1.0, 2.0, 3.0
    m = mosaic_rggb(rgb)[0, 0]
    assert m[0, 0] == 1 and m[0, 1] == 2 and m[1, 0] == 2 and m[1, 1] == 3


def test_zero_signal_mean_is_the_colour_bias():
    s = make_synth()
    black = torch.zeros(1, 3, 256, 256)
    g = torch.Generator().manual_seed(5)
    p = s.sample_params(1, g)
    b = s.synthesize(black, g, p)
    planes = torch.nn.functional.pixel_unshuffle(b.raw_dn - b.black_level, 2)[0]  # R, G1, G2, B
    rows = planes.shape[1]
    tol = 4 * float(p.row_scale) / math.sqrt(rows) + 0.2
    for c in range(4):
        assert abs(float(planes[c].mean()) - float(p.color_bias[0, c])) < tol


def test_shot_noise_variance_grows_with_signal_as_k():
    """var(low) and var(high) flat patches with the same parameters differ by K * (signal difference)."""
    s = make_synth(tone_curve=False)
    g = torch.Generator().manual_seed(7)
    p = s.sample_params(1, g)
    out = {}
    for level in (0.05, 0.6):
        flat = torch.full((1, 3, 256, 256), level)
        b = s.synthesize(flat, g, p)
        r_plane = b.raw_dn[0, 0, 0::2, 0::2]
        signal = float(b.target[0, 0, 0, 0]) * (b.white_level - b.black_level) / float(p.ratio)
        # remove the row noise (common to both) by subtracting each row's mean
        out[level] = (float((r_plane - r_plane.mean(1, keepdim=True)).var()), signal)
    (v_lo, s_lo), (v_hi, s_hi) = out[0.05], out[0.6]
    assert v_hi > v_lo
    assert (v_hi - v_lo) == pytest.approx(float(p.k) * (s_hi - s_lo), rel=0.2)


def test_tukey_lambda_quantiles():
    scipy_stats = pytest.importorskip("scipy.stats")
    u = torch.tensor([0.01, 0.2, 0.5, 0.9, 0.999], dtype=torch.float64)
    for lam in (0.14, 0.0, -0.14):
        got = tukey_lambda_icdf(u, torch.tensor(lam, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(got, scipy_stats.tukeylambda.ppf(u.numpy(), lam), rtol=1e-6, atol=1e-9)


def test_video_clip_shares_parameters_with_fresh_noise():
    s = make_synth()
    frames = photos(1).expand(4, -1, -1, -1)
    a = synth_video_frames(frames, seed=11, synthesizer=s)
    b = synth_video_frames(frames, seed=11, synthesizer=s)
    assert torch.equal(a.input, b.input)
    assert torch.all(a.ratio == a.ratio[0]) and torch.all(a.params.k == a.params.k[0])
    assert torch.equal(a.target[0], a.target[3])
    assert not torch.equal(a.input[0], a.input[1])


def _gain_reference(r: np.ndarray, target: float) -> float:
    r = np.clip(r.astype(np.float64).ravel(), 0, 1)
    j = np.searchsorted(np.asarray(GAIN_BIN_EDGES), r, side="right") - 1
    w = np.where(j < 127, np.asarray(GAIN_BIN_WEIGHTS + (0.0,))[np.minimum(j, 127)], 0.0)
    return float(np.clip(target * w.sum() / (w * r).sum(), 1, 300))


def test_gain_twin_matches_numpy_reference_and_edge_cases():
    rng = np.random.default_rng(0)
    r = (rng.random((2, 1, 16, 16)) ** 4) * 0.05
    r[1, 0, 0, :4] = 1.0  # saturated pixels weigh 0
    got = estimate_gain_torch(torch.from_numpy(r).float(), target=0.05)
    for i in range(2):
        assert float(got[i]) == pytest.approx(_gain_reference(r[i].astype(np.float32), 0.05), rel=1e-6)
    # constant frame: w cancels, S = 1 / v exactly
    assert float(gain_statistic(torch.full((1, 8, 8), 0.004))[0]) == pytest.approx(250.0, rel=1e-6)
    assert float(estimate_gain_torch(torch.zeros(1, 8, 8))[0]) == 300.0  # all black -> hi
    assert float(estimate_gain_torch(torch.ones(1, 8, 8))[0]) == 1.0  # all saturated -> lo


def test_real_eld_parameters_load(shared_data):
    profiles = load_noise_profiles(shared_data / "noise" / "eld_camera_noise_params.json")
    assert "SonyA7S2" in profiles
    s = PairSynthesizer(SynthConfig(shared_data / "noise" / "eld_camera_noise_params.json", cameras=("SonyA7S2",)))
    b = s.synthesize(photos(), torch.Generator().manual_seed(0))
    assert torch.isfinite(b.input).all()
