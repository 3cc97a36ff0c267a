"""apply_isp / float_to_uint / rgb_to_yuv420p against the exact formulas (NumPy twins)."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream.frames import CFA
from redi_stream.kernels import apply_isp, apply_isp_yuv420p, float_to_uint, reference, rgb_to_yuv420p, unpack_crop
from redi_stream.kernels.isp import srgb_encode

DTYPES = [np.uint8, np.uint16]
EYE = np.eye(3, dtype=np.float32)
ONES = np.ones(3, dtype=np.float32)


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def test_srgb_curve_reference_points() -> None:
    x = np.array([0.0, 0.0031308, 0.5, 1.0])
    np.testing.assert_allclose(srgb_encode(x), [0.0, 0.0031308 * 12.92, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_gives_the_srgb_curve(dtype: type) -> None:
    maxval = np.iinfo(dtype).max
    ramp = np.linspace(0.0, 1.0, 7 * 3 * 10_001, dtype=np.float32)  # dense in the steep toe too
    ramp[:200] = np.linspace(0.0, 0.004, 200, dtype=np.float32)
    lin = ramp.reshape(-1, 7, 3)
    out = np.empty(lin.shape, dtype=dtype)
    apply_isp(lin, ONES, EYE, out)
    exact = np.floor(srgb_encode(lin.astype(np.float64)) * maxval + 0.5)
    assert _max_abs_diff(out, exact) <= 1
    # uint8: the polynomial is within 0.005 code, so only values that close to a rounding edge may differ.
    assert np.mean(out != exact) < (0.002 if dtype == np.uint8 else 0.01)


@pytest.mark.parametrize("dtype", DTYPES)
def test_clipping_and_nan(dtype: type) -> None:
    maxval = np.iinfo(dtype).max
    lin = np.array([[[0.0, 1.0, 2.0], [-1.0, 1e30, -0.0], [np.nan, np.nan, np.nan]]], dtype=np.float32)
    out = np.empty(lin.shape, dtype=dtype)
    apply_isp(lin, ONES, EYE, out)
    np.testing.assert_array_equal(out, [[[0, maxval, maxval], [0, maxval, 0], [0, 0, 0]]])
    np.testing.assert_array_equal(out, reference.apply_isp(lin, ONES, EYE, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["contiguous", "crop"])
def test_apply_isp_matches_reference(dtype: type, layout: str) -> None:
    rng = np.random.default_rng(11)
    h, w = 37, 53
    net_out = rng.random((2, 64, 64, 3), dtype=np.float32) ** 2.2  # linear-ish, dark-heavy
    lin = unpack_crop(net_out, CFA.GBRG, h, w)[1] if layout == "crop" else np.ascontiguousarray(net_out[1, :h, :w])
    assert lin.flags.c_contiguous == (layout == "contiguous")
    wb = np.array([2.1, 1.0, 1.7], dtype=np.float32)
    m = np.array([[1.7, -0.6, -0.1], [-0.2, 1.5, -0.3], [0.05, -0.55, 1.5]], dtype=np.float32)
    out = np.empty((h, w, 3), dtype=dtype)
    assert apply_isp(lin, wb, m, out) is out
    want = reference.apply_isp(lin, wb, m, dtype)
    assert _max_abs_diff(out, want) <= 1
    assert np.mean(out != want) < 0.01


def test_apply_isp_rejects_bad_input() -> None:
    lin = np.zeros((4, 4, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="uint8 or uint16"):
        apply_isp(lin, ONES, EYE, np.empty((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="same shape"):
        apply_isp(lin, ONES, EYE, np.empty((4, 5, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="float32"):
        apply_isp(lin.astype(np.float64), ONES, EYE, np.empty((4, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="cam_to_srgb"):
        apply_isp(lin, ONES, np.eye(4, dtype=np.float32), np.empty((4, 4, 3), dtype=np.uint8))


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_to_uint_matches_reference(dtype: type) -> None:
    rng = np.random.default_rng(5)
    img = rng.uniform(-0.2, 1.2, size=(2, 37, 53, 3)).astype(np.float32)
    img[0, 0, 0] = [np.nan, 0.5, 1.0]
    out = np.empty(img.shape, dtype=dtype)
    float_to_uint(img, out)  # (N, H, W, 3)
    np.testing.assert_array_equal(out, reference.float_to_uint(img, dtype))
    maxval = np.iinfo(dtype).max
    assert out[0, 0, 0].tolist() == [0, (maxval + 1) // 2, maxval]
    view = img[1, 3:20, 5:40]
    out3 = np.empty(view.shape, dtype=dtype)
    np.testing.assert_array_equal(float_to_uint(view, out3), reference.float_to_uint(view, dtype))


def _yuv_planes(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty((h, w), np.uint8), np.empty((h // 2, w // 2), np.uint8), np.empty((h // 2, w // 2), np.uint8)


def test_yuv_grey_ramp_is_neutral_limited_range() -> None:
    grey = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16)[:, :, None], 3, axis=2)
    y, u, v = rgb_to_yuv420p(np.repeat(np.repeat(grey, 2, 0), 2, 1), *_yuv_planes(32, 32))
    np.testing.assert_array_equal(u, 128)
    np.testing.assert_array_equal(v, 128)
    want = np.floor(16 + 219 * np.arange(256) / 255 + 0.5).reshape(16, 16)
    np.testing.assert_array_equal(y[::2, ::2], want)
    assert y.min() == 16 and y.max() == 235


@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [((255, 0, 0), (63, 102, 240)), ((0, 255, 0), (173, 42, 26)), ((0, 0, 255), (32, 240, 118))],
)
def test_yuv_primaries_bt709(rgb: tuple[int, int, int], yuv: tuple[int, int, int]) -> None:
    img = np.broadcast_to(np.array(rgb, dtype=np.uint8), (2, 2, 3)).copy()
    y, u, v = rgb_to_yuv420p(img, *_yuv_planes(2, 2))
    assert (int(y[0, 0]), int(u[0, 0]), int(v[0, 0])) == yuv


def test_yuv_matches_reference() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, size=(38, 54, 3), dtype=np.uint8)
    got = rgb_to_yuv420p(rgb, *_yuv_planes(38, 54))
    for g, w in zip(got, reference.rgb_to_yuv420p(rgb)):
        assert _max_abs_diff(g, w) <= 1


def test_yuv_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420p(np.zeros((3, 4, 3), np.uint8), *_yuv_planes(3, 4))
    with pytest.raises(ValueError, match="u must be"):
        rgb_to_yuv420p(np.zeros((4, 4, 3), np.uint8), np.empty((4, 4), np.uint8), np.empty((4, 4), np.uint8),
                       np.empty((2, 2), np.uint8))


@pytest.mark.parametrize("layout", ["contiguous", "crop"])
def test_fused_isp_yuv_equals_the_two_passes(layout: str) -> None:
    """One pass gives exactly apply_isp's RGB and rgb_to_yuv420p of that RGB, NaN and out-of-range values too."""
    rng = np.random.default_rng(5)
    h, w = 38, 54
    net_out = rng.random((64, 64, 3), dtype=np.float32) ** 2.2
    net_out[3, 5] = np.nan
    net_out[7, 9] = (2.0, -1.0, 1e30)
    lin = unpack_crop(net_out, CFA.BGGR, h, w) if layout == "crop" else np.ascontiguousarray(net_out[:h, :w])
    wb = np.array([2.1, 1.0, 1.7], dtype=np.float32)
    m = np.array([[1.7, -0.6, -0.1], [-0.2, 1.5, -0.3], [0.05, -0.55, 1.5]], dtype=np.float32)
    rgb = np.empty((h, w, 3), np.uint8)
    planes = _yuv_planes(h, w)
    got = apply_isp_yuv420p(lin, wb, m, rgb, *planes)
    assert got[0] is rgb and all(a is b for a, b in zip(got[1:], planes))
    want_rgb = apply_isp(lin, wb, m, np.empty((h, w, 3), np.uint8))
    np.testing.assert_array_equal(rgb, want_rgb)
    for g, want in zip(planes, rgb_to_yuv420p(want_rgb, *_yuv_planes(h, w))):
        np.testing.assert_array_equal(g, want)
    only = _yuv_planes(h, w)
    got = apply_isp_yuv420p(lin, wb, m, None, *only)  # planes only: the same planes, no RGB image
    assert got[0] is None
    for g, want in zip(only, planes):
        np.testing.assert_array_equal(g, want)


def test_fused_isp_yuv_rejects_odd_sizes_and_uint16() -> None:
    lin = np.zeros((3, 4, 3), np.float32)
    with pytest.raises(ValueError, match="even"):
        apply_isp_yuv420p(lin, ONES, EYE, np.empty((3, 4, 3), np.uint8), *_yuv_planes(4, 4))
    lin = np.zeros((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        apply_isp_yuv420p(lin, ONES, EYE, np.empty((4, 4, 3), np.uint16), *_yuv_planes(4, 4))


@pytest.mark.parametrize("with_rgb", [True, False])
def test_fused_isp_yuv_writes_only_inside_padded_rows(with_rgb: bool) -> None:
    """Planes and RGB whose rows are padded (an AVFrame's line size, a crop of a wider buffer) get exactly the values
    of unpadded outputs, and the bytes past each row's width stay as they were."""
    rng = np.random.default_rng(8)
    h, w = 6, 10
    lin = unpack_crop(rng.random((16, 16, 3), dtype=np.float32), CFA.GRBG, h, w)
    wb = np.array([1.9, 1.0, 1.4], dtype=np.float32)
    want_rgb = np.empty((h, w, 3), np.uint8)
    want = apply_isp_yuv420p(lin, wb, EYE, want_rgb, *_yuv_planes(h, w))
    bufs = [np.full((h, w + 5), 77, np.uint8), np.full((h // 2, w // 2 + 3), 77, np.uint8),
            np.full((h // 2, w // 2 + 3), 77, np.uint8)]
    rgb_buf = np.full((h, w + 2, 3), 77, np.uint8)
    planes = [b[:, : p.shape[1]] for b, p in zip(bufs, want[1:])]
    apply_isp_yuv420p(lin, wb, EYE, rgb_buf[:, :w] if with_rgb else None, *planes)
    for got, ref in zip(planes, want[1:]):
        np.testing.assert_array_equal(got, ref)
    for b, p in zip(bufs, planes):
        assert np.all(b[:, p.shape[1]:] == 77)
    if with_rgb:
        np.testing.assert_array_equal(rgb_buf[:, :w], want_rgb)
    assert np.all(rgb_buf[:, w:] == 77) and (with_rgb or np.all(rgb_buf == 77))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_clipped_highlight_stays_white_through_white_balance_and_matrix(dtype: type) -> None:
    """The sensor's white in every channel (a street lamp) times daylight gains (2, 1, 1.7) is (2, 1, 1.7): through
    a matrix with negative off-diagonal terms that was (255, 197, 255), magenta. Clipped at 1 after the gains first,
    it is white; a colour the gains keep inside 1 renders as without the clip."""
    m = np.array([[1.7, -0.5, -0.2], [-0.3, 1.5, -0.2], [0.05, -0.45, 1.4]], np.float32)  # rows sum to 1
    wb = np.array([2.0, 1.0, 1.7], np.float32)
    lin = np.array([[[1.0, 1.0, 1.0], [0.8, 1.0, 0.9], [0.3, 0.6, 0.4]]], np.float32)
    out = apply_isp(lin, wb, m, np.empty(lin.shape, dtype))
    top = np.iinfo(dtype).max
    assert out[0, 0].tolist() == [top] * 3 and out[0, 1].tolist() == [top] * 3
    inside = lin[0, 2] * wb  # (0.6, 0.6, 0.68): untouched by the clip
    want = np.floor(srgb_encode(np.clip(m.astype(np.float64) @ inside, 0, 1)) * top + 0.5)
    assert np.abs(out[0, 2].astype(int) - want).max() <= 1
    lin2 = np.repeat(np.repeat(lin[:, :2], 2, axis=0), 1, axis=1)  # (2, 2, 3) for yuv420p
    if dtype == np.uint8:
        y, u, v = (np.empty((2, 2), np.uint8), np.empty((1, 1), np.uint8), np.empty((1, 1), np.uint8))
        apply_isp_yuv420p(lin2, wb, m, None, y, u, v)
        assert y.tolist() == [[235, 235], [235, 235]] and u.tolist() == v.tolist() == [[128]]
