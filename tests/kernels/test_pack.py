"""pack_raw / padded_shape / unpack_crop / mosaic_rgb against their NumPy twins and the CFA-unification contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redi_stream.amplifier import INPUT_CEILING
from redi_stream.frames import CFA
from redi_stream.kernels import mosaic_rgb, pack_raw, padded_shape, reference, unpack_crop

BLACK = np.array([60.0, 64.5, 70.0, 81.25], dtype=np.float32)  # a different level at every 2x2 position
WHITE = 1023.0


def _raw_with_extremes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    raw = rng.integers(0, 1100, size=(h, w)).astype(np.uint16)
    flat = raw.ravel()
    flat[:8] = [0, 60, 81, 1023, 1024, 65535, 65534, 1022]  # below black, at black, white, above white, max code
    rng.shuffle(flat)
    return raw


@pytest.mark.parametrize(
    ("h", "w", "cfa", "expected"),
    [
        (1080, 1920, CFA.RGGB, (1088, 1952)),
        (1080, 1920, CFA.BGGR, (1088, 1952)),
        (1088, 1920, CFA.GBRG, (1120, 1952)),
        (1086, 1918, CFA.RGGB, (1088, 1920)),
        (37, 53, CFA.GRBG, (64, 64)),
        (2, 2, CFA.RGGB, (32, 32)),
    ],
)
def test_padded_shape(h: int, w: int, cfa: CFA, expected: tuple[int, int]) -> None:
    assert padded_shape(h, w, cfa) == expected


@pytest.mark.parametrize(("h", "w"), [(512, 768), (1080, 1920), (37, 53), (2, 2)])
def test_padded_shape_is_the_same_for_every_bayer_phase(h: int, w: int) -> None:
    """One scene in any phase gets the same canvas, so the network sees the same context (isp_rose acceptance)."""
    shapes = {padded_shape(h, w, cfa) for cfa in CFA}
    assert len(shapes) == 1
    (hp, wp), = shapes
    assert hp >= h + 1 and wp >= w + 1 and hp % 32 == 0 and wp % 32 == 0


def test_padded_shape_other_multiple_and_errors() -> None:
    assert padded_shape(5, 7, CFA.BGGR, multiple=2) == (6, 8)
    assert padded_shape(6, 8, CFA.RGGB, multiple=2) == (8, 10)
    with pytest.raises(ValueError, match="2x2"):
        padded_shape(1, 8, CFA.RGGB)
    with pytest.raises(ValueError, match="multiple"):
        padded_shape(8, 8, CFA.RGGB, multiple=0)


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize(("h", "w"), [(37, 53), (2, 2), (3, 2), (2, 5), (64, 64), (33, 31)])
def test_pack_raw_matches_reference(cfa: CFA, h: int, w: int) -> None:
    rng = np.random.default_rng(h * 1000 + w)
    raw = _raw_with_extremes(rng, h, w) if h * w >= 8 else rng.integers(0, 1100, (h, w)).astype(np.uint16)
    hp, wp = padded_shape(h, w, cfa)
    out = np.full((hp, wp), np.nan, dtype=np.float32)
    got = pack_raw(raw, BLACK, WHITE, cfa, 37.5, out)
    assert got is out
    want = reference.pack_raw(raw, BLACK, WHITE, cfa, 37.5, hp, wp)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6 * 37.5)
    assert np.all(np.isfinite(got)) and got.min() >= 0 and got.max() <= 37.5


def test_pack_raw_extreme_values_clip() -> None:
    raw = np.array([[0, 65535], [1023, 70]], dtype=np.uint16)
    out = np.empty((32, 32), dtype=np.float32)
    pack_raw(raw, BLACK, WHITE, CFA.RGGB, 2.0, out)
    assert out[0, 0] == 0.0  # below black
    assert out[0, 1] == 1.0  # max code, far above white: clipped, then amplified, then clipped at INPUT_CEILING
    assert out[1, 0] == 1.0  # exactly white
    assert out[1, 1] == 0.0  # below its own position's black (81.25)


def test_pack_raw_clips_the_amplified_value_at_the_input_ceiling() -> None:
    assert INPUT_CEILING == 1.0
    raw = np.array([[64 + 240, 64 + 480], [64 + 960, 64 + 120]], dtype=np.uint16)  # 1/4, 1/2, 1, 1/8 of 960
    black, white = np.full(4, 64, np.float32), 1024.0
    out = np.empty((32, 32), dtype=np.float32)
    pack_raw(raw, black, white, CFA.RGGB, 3.0, out)
    np.testing.assert_allclose(out[:2, :2], [[0.75, 1.0], [1.0, 0.375]], rtol=1e-6)
    pack_raw(raw, black, white, CFA.RGGB, 0.5, out)  # a gain below 1 keeps its range
    np.testing.assert_allclose(out[:2, :2], [[0.125, 0.25], [0.5, 0.0625]], rtol=1e-6)
    np.testing.assert_allclose(reference.pack_raw(raw, black, white, CFA.RGGB, 3.0, 32, 32)[:2, :2],
                               [[0.75, 1.0], [1.0, 0.375]], rtol=1e-6)


def _channel_separated_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Raw-DN RGB whose channels live in disjoint ranges, so a value tells which colour it came from."""
    rgb = np.empty((h, w, 3), dtype=np.float32)
    for c, base in enumerate((1000, 3000, 5000)):
        rgb[..., c] = rng.integers(base, base + 1000, size=(h, w))
    return rgb


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize(("h", "w"), [(37, 53), (6, 4)])
def test_pack_raw_unifies_to_rggb(cfa: CFA, h: int, w: int) -> None:
    """A scene mosaicked in any phase packs to the RGGB mosaic of the same scene; padding keeps the phase."""
    rng = np.random.default_rng(7)
    dy, dx = cfa.offset
    scene = _channel_separated_rgb(rng, h + 1, w + 1)
    black_by_colour = np.array([100.0, 200.0, 300.0], dtype=np.float32)
    white = 6500.0

    rggb = reference.mosaic_rgb(scene, CFA.RGGB).astype(np.uint16)  # (h+1, w+1) scene seen through RGGB
    want = np.empty(padded_shape(h + 1, w + 1, CFA.RGGB), dtype=np.float32)
    pack_raw(rggb, black_by_colour[list(CFA.RGGB.colors)], white, CFA.RGGB, 0.9, want)

    # The same scene shifted by the CFA offset is stored in phase `cfa`.
    raw = reference.mosaic_rgb(scene[dy : dy + h, dx : dx + w], cfa).astype(np.uint16)
    out = np.empty(padded_shape(h, w, cfa), dtype=np.float32)
    pack_raw(raw, black_by_colour[list(cfa.colors)], white, cfa, 0.9, out)

    np.testing.assert_array_equal(out[dy : dy + h, dx : dx + w], want[dy : dy + h, dx : dx + w])
    # Every pixel of the padded mosaic, padding included, holds a value of its RGGB colour.
    lo = (np.array([1000, 3000, 5000]) - black_by_colour) / (white - black_by_colour) * 0.9
    hi = (np.array([1999, 3999, 5999]) - black_by_colour) / (white - black_by_colour) * 0.9
    colour = reference._per_position(np.array(CFA.RGGB.colors), out.shape)
    assert np.all(out >= lo[colour] - 1e-5) and np.all(out <= hi[colour] + 1e-5)
    assert out[0, 0] >= lo[0] - 1e-5 and out[0, 0] <= hi[0] + 1e-5  # R at (0, 0)


def test_pack_raw_padding_larger_than_frame_matches_numpy_reflect() -> None:
    raw = np.array([[10, 20], [30, 40]], dtype=np.uint16)
    out = np.empty((32, 64), dtype=np.float32)
    pack_raw(raw, np.zeros(4, np.float32), 100.0, CFA.BGGR, 1.0, out)
    want = np.pad(raw / 100.0, ((1, 29), (1, 61)), mode="reflect")
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_pack_raw_rejects_bad_input() -> None:
    out = np.empty((32, 32), dtype=np.float32)
    raw = np.zeros((4, 4), dtype=np.uint16)
    with pytest.raises(ValueError, match="2x2"):
        pack_raw(np.zeros((1, 4), np.uint16), BLACK, WHITE, CFA.RGGB, 1.0, out)
    with pytest.raises(ValueError, match="uint16"):
        pack_raw(raw.astype(np.float32), BLACK, WHITE, CFA.RGGB, 1.0, out)
    with pytest.raises(ValueError, match="out must be"):
        pack_raw(np.zeros((32, 32), np.uint16), BLACK, WHITE, CFA.BGGR, 1.0, out)
    with pytest.raises(ValueError, match="out must be"):
        pack_raw(raw, BLACK, WHITE, CFA.RGGB, 1.0, out.astype(np.float64))
    with pytest.raises(ValueError, match="exceed"):
        pack_raw(raw, BLACK, 70.0, CFA.RGGB, 1.0, out)
    with pytest.raises(ValueError, match="4 values"):
        pack_raw(raw, BLACK[:3], WHITE, CFA.RGGB, 1.0, out)
    with pytest.raises(ValueError, match="gain"):
        pack_raw(raw, BLACK, WHITE, CFA.RGGB, float("nan"), out)
    with pytest.raises(ValueError, match="gain"):
        pack_raw(raw, BLACK, WHITE, CFA.RGGB, -1.0, out)


@settings(max_examples=50, deadline=None)
@given(
    h=st.integers(2, 64),
    w=st.integers(2, 64),
    cfa=st.sampled_from(list(CFA)),
    black=st.lists(st.floats(0, 4000, width=32), min_size=4, max_size=4),
    headroom=st.floats(1.0, 60000.0),
    gain=st.floats(0.0, 300.0),
    multiple=st.sampled_from([1, 2, 8, 32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_pack_raw_property(h, w, cfa, black, headroom, gain, multiple, seed) -> None:
    black = np.array(black, dtype=np.float32)
    white = float(black.max()) + headroom
    raw = np.random.default_rng(seed).integers(0, 65536, size=(h, w)).astype(np.uint16)
    hp, wp = padded_shape(h, w, cfa, multiple)
    out = np.empty((hp, wp), dtype=np.float32)
    pack_raw(raw, black, white, cfa, gain, out)
    assert not np.any(np.isnan(out))
    want = reference.pack_raw(raw, black, white, cfa, gain, hp, wp)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6 * max(gain, 1.0))


@pytest.mark.parametrize("cfa", list(CFA))
def test_unpack_crop_is_a_view_of_the_frame_region(cfa: CFA) -> None:
    h, w = 37, 53
    hp, wp = padded_shape(h, w, cfa)
    dy, dx = cfa.offset
    batch = np.arange(2 * hp * wp * 3, dtype=np.float32).reshape(2, hp, wp, 3)
    crop = unpack_crop(batch, cfa, h, w)
    assert crop.shape == (2, h, w, 3) and np.shares_memory(crop, batch)
    np.testing.assert_array_equal(crop[1, 0, 0], batch[1, dy, dx])
    single = unpack_crop(batch[0], cfa, h, w)
    assert single.shape == (h, w, 3)
    np.testing.assert_array_equal(single[-1, -1], batch[0, dy + h - 1, dx + w - 1])
    with pytest.raises(ValueError):
        unpack_crop(batch[0], cfa, hp, wp + 1)
    with pytest.raises(ValueError):
        unpack_crop(batch[0, :, :, 0], cfa, h, w)


@pytest.mark.parametrize("cfa", list(CFA))
def test_mosaic_rgb_matches_reference(cfa: CFA) -> None:
    rgb = np.random.default_rng(3).random((37, 53, 3), dtype=np.float32)
    out = np.empty((37, 53), dtype=np.float32)
    mosaic_rgb(rgb, cfa, out)
    np.testing.assert_array_equal(out, reference.mosaic_rgb(rgb, cfa))
    r, g, b = cfa.colors[0], cfa.colors[1], cfa.colors[3]
    assert out[0, 0] == rgb[0, 0, r] and out[0, 1] == rgb[0, 1, g] and out[1, 1] == rgb[1, 1, b]
