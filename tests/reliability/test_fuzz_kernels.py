"""Fuzzing the numba kernels against their NumPy twins where tests/kernels has no property test yet: apply_isp,
float_to_uint, rgb_to_yuv420p, unpack_raw10/12 (random shapes, strides, views, extreme and non-finite values), and
pack_raw with almost no headroom between black and white (NaN-free, bounded output)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.frames import CFA
from redi_stream.kernels import (
    apply_isp,
    float_to_uint,
    pack_raw,
    padded_shape,
    reference,
    rgb_to_yuv420p,
    unpack_raw10,
    unpack_raw12,
)
from redi_stream.kernels.isp import srgb_encode

SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, 1e-40, 1e30, -1e30, 3e38, 0.5, 1.0000001, 0.0031308],
                   dtype=np.float32)
EPS32 = float(np.finfo(np.float32).eps)


def _image(rng: np.random.Generator, h: int, w: int, n_special: int, lo: float = -0.5, hi: float = 1.5) -> np.ndarray:
    img = rng.uniform(lo, hi, (h, w, 3)).astype(np.float32)
    if n_special:
        flat = img.reshape(-1)
        idx = rng.integers(0, flat.size, n_special)
        flat[idx] = SPECIAL[rng.integers(0, SPECIAL.size, n_special)]
    return img


def _maybe_view(rng: np.random.Generator, img: np.ndarray, view: bool) -> np.ndarray:
    """The same values as a strided view into a larger buffer (the kernels accept views, e.g. unpack_crop)."""
    if not view:
        return img
    h, w, c = img.shape
    big = np.full((h + 3, w + 5, c), np.nan, dtype=img.dtype)
    y0, x0 = int(rng.integers(0, 4)), int(rng.integers(0, 6))
    big[y0:y0 + h, x0:x0 + w] = img
    return big[y0:y0 + h, x0:x0 + w]


levels = st.floats(float(np.float32(1e-3)), 4.0, width=32) | st.just(0.0)
matrix_entries = st.floats(-2.0, 2.0, width=32).filter(lambda v: v == 0 or abs(v) >= 1e-3)


@settings(max_examples=150, deadline=None)
@given(
    h=st.integers(1, 24), w=st.integers(1, 24), n_special=st.integers(0, 30), view=st.booleans(),
    dtype=st.sampled_from([np.uint8, np.uint16]), seed=st.integers(0, 2**32 - 1),
    wb=st.lists(levels, min_size=3, max_size=3), m=st.lists(matrix_entries, min_size=9, max_size=9),
)
def test_apply_isp_within_one_code_of_the_twin_for_any_input(h, w, n_special, view, dtype, seed, wb, m):
    rng = np.random.default_rng(seed)
    img = _image(rng, h, w, n_special)
    lin = _maybe_view(rng, img, view)
    wb = np.array(wb, np.float32)
    m = np.array(m, np.float32).reshape(3, 3)
    out = np.full((h, w, 3), 7, dtype=dtype)
    apply_isp(lin, wb, m, out)
    got = out.astype(np.int64)
    maxval = np.iinfo(dtype).max

    def q(x):  # the exact quantised curve; monotone in x
        return np.floor(srgb_encode(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0)) * maxval + 0.5).astype(np.int64)

    # The kernel computes M @ min(wb * lin, 1) in float32: bound its rounding error, then compare against the exact
    # curve at both ends of that interval (plus the documented 1 code value of the LUT).
    with np.errstate(invalid="ignore", over="ignore"):  # inf * 0 and inf - inf are part of the input space
        c = img.astype(np.float64) * wb.astype(np.float64)
        c = np.where(c > 1.0, 1.0, c)  # the highlight clip after the white balance (NaN stays NaN)
        v = np.einsum("...j,ij->...i", c, m.astype(np.float64))
        err = 4 * EPS32 * np.einsum("...j,ij->...i", np.abs(c), np.abs(m.astype(np.float64))) + 1e-30
        lo, hi = q(v - err), q(v + err)
    # Where the terms approach float32's range, a float32 product or sum may overflow on the way (e.g. 3 * 3e38 = inf,
    # then inf - 2 * 3e38 = inf - inf = NaN -> 0) where float64 stays finite: float32 semantics, not an error. Such
    # inputs are far outside [0, 1] anyway, so those entries are not held to the float64 value.
    with np.errstate(invalid="ignore", over="ignore"):
        finite_mag = np.einsum("...j,ij->...i", np.abs(np.where(np.isfinite(c), c, 0.0)), np.abs(m.astype(np.float64)))
    in_range32 = finite_mag < 0.25 * float(np.finfo(np.float32).max)
    nan = np.isnan(v)
    fin = np.isfinite(v) & np.isfinite(err) & in_range32
    assert np.all(got[nan] == 0)  # a NaN after the matrix renders as 0
    assert np.all((got[fin] >= lo[fin] - 1) & (got[fin] <= hi[fin] + 1))
    # +-inf after the matrix saturates -- with the same exception for float32 overflow on the way.
    inf = np.isinf(v) & in_range32
    assert np.all(got[inf] == q(v[inf]))
    assert 0 <= got.min() and got.max() <= maxval


@settings(max_examples=150, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 20), st.integers(1, 20)), batched=st.booleans(),
    n_special=st.integers(0, 40), view=st.booleans(), dtype=st.sampled_from([np.uint8, np.uint16]),
    seed=st.integers(0, 2**32 - 1),
)
def test_float_to_uint_equals_the_twin_for_any_float32(shape, batched, n_special, view, dtype, seed):
    rng = np.random.default_rng(seed)
    n, h, w = shape
    imgs = [_maybe_view(rng, _image(rng, h, w, n_special, -2.0, 3.0), view) for _ in range(n)]
    img = np.stack(imgs) if batched else imgs[0]
    out = np.full(img.shape, 3, dtype=dtype)
    float_to_uint(img, out)
    np.testing.assert_array_equal(out, reference.float_to_uint(img, dtype))


@settings(max_examples=150, deadline=None)
@given(
    h2=st.integers(1, 20), w2=st.integers(1, 20), view=st.booleans(), seed=st.integers(0, 2**32 - 1),
    flat=st.sampled_from([None, 0, 255, 16, 235]),
)
def test_rgb_to_yuv420p_within_one_of_the_twin_and_only_its_planes(h2, w2, view, seed, flat):
    h, w = 2 * h2, 2 * w2
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if flat is None else np.full((h, w, 3), flat, np.uint8)
    if view:
        big = np.zeros((h, 2 * w, 3), np.uint8)
        big[:, ::2] = rgb
        rgb = big[:, ::2]  # a strided view
    # Planes with padded rows (like an AVFrame's line size): bytes past each row's width must stay untouched.
    ybuf, ubuf, vbuf = (np.full(s, 77, np.uint8) for s in ((h, w + 7), (h2, w2 + 5), (h2, w2 + 5)))
    y, u, v = ybuf[:, :w], ubuf[:, :w2], vbuf[:, :w2]
    rgb_to_yuv420p(rgb, y, u, v)
    for got, want in zip((y, u, v), reference.rgb_to_yuv420p(np.ascontiguousarray(rgb))):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.all(ybuf[:, w:] == 77) and np.all(ubuf[:, w2:] == 77) and np.all(vbuf[:, w2:] == 77)
    assert y.min() >= 16 and y.max() <= 235 and u.min() >= 16 and u.max() <= 240 and v.min() >= 16 and v.max() <= 240


@settings(max_examples=150, deadline=None)
@given(
    bits=st.sampled_from([10, 12]), h=st.integers(1, 8), width=st.integers(1, 70), extra=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_unpack_equals_the_twin_for_any_bytes(bits, h, width, extra, seed):
    group_px, group_bytes = (4, 5) if bits == 10 else (2, 3)
    stride = -(-width // group_px) * group_bytes + extra
    packed = np.random.default_rng(seed).integers(0, 256, (h, stride), dtype=np.uint8)
    out = np.full((h, width), 0xFFFF, dtype=np.uint16)  # must be fully overwritten
    kernel, twin = (unpack_raw10, reference.unpack_raw10) if bits == 10 else (unpack_raw12, reference.unpack_raw12)
    kernel(packed, width, out)
    np.testing.assert_array_equal(out, twin(packed, width))
    assert out.max() < 2**bits


@settings(max_examples=100, deadline=None)
@given(
    h=st.integers(2, 40), w=st.integers(2, 40), cfa=st.sampled_from(list(CFA)),
    black=st.floats(0, 65534, width=32), headroom=st.floats(1e-3, 1.0), gain=st.floats(0, 1e4),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_raw_with_almost_no_headroom_is_nan_free_and_bounded(h, w, cfa, black, headroom, gain, seed):
    """White barely above black (a broken or hand-typed level): every pixel lands on 0 or the gain, never NaN."""
    black4 = np.full(4, black, np.float32)
    white = float(black4.max()) + headroom
    raw = np.random.default_rng(seed).integers(0, 65536, (h, w)).astype(np.uint16)
    raw.flat[0], raw.flat[-1] = 0, 65535
    hp, wp = padded_shape(h, w, cfa)
    out = np.full((hp, wp), np.nan, np.float32)
    pack_raw(raw, black4, white, cfa, gain, out)
    assert np.all(np.isfinite(out)) and out.min() >= 0 and out.max() <= np.float32(gain)
    want = reference.pack_raw(raw, black4, white, cfa, gain, hp, wp)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5 * max(gain, 1.0))
