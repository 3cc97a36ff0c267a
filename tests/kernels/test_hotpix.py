"""Hot-pixel filter: the numba kernel equals its NumPy twin, and it replaces isolated spikes only."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream.frames import CFA
from redi_stream.kernels import fix_hot_pixels, reference
from redi_stream.kernels.hotpix import RATIO, hot_pixel_threshold, raw_noise_sigma

BLACK = np.array([600.0, 610.0, 620.0, 630.0], dtype=np.float32)  # per 2x2 position: the greens differ
WHITE = 16383.0


def noisy(shape=(64, 96), sigma=4.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.tile(BLACK.reshape(2, 2), (shape[0] // 2 + 1, shape[1] // 2 + 1))[: shape[0], : shape[1]] + 20
    return np.clip(np.rint(base + rng.normal(0, sigma, shape)), 0, 65535).astype(np.uint16)


def ramp(shape=(40, 60)) -> np.ndarray:
    """Signal 200 + 3 row + 5 column above each position's black: symmetric stencils interpolate it exactly."""
    r, c = np.mgrid[: shape[0], : shape[1]]
    return (200 + 3 * r + 5 * c + np.tile(BLACK.reshape(2, 2), (shape[0] // 2, shape[1] // 2))).astype(np.uint16)


def fix(raw: np.ndarray, cfa: CFA = CFA.RGGB) -> tuple[np.ndarray, int]:
    out = np.empty_like(raw)
    n = fix_hot_pixels(raw, BLACK, WHITE, cfa, out)
    return out, n


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_kernel_equals_its_twin(cfa: CFA, seed: int) -> None:
    rng = np.random.default_rng(seed)
    raw = noisy((50 + seed, 70 + 3 * seed), seed=seed)
    spots = rng.integers(0, raw.size, 60)
    raw.flat[spots] = rng.integers(600, 20000, 60)  # some far above everything, some barely, some in pairs
    raw[10:12, 20] = 9000
    out, n = fix(raw, cfa)
    want, m = reference.fix_hot_pixels(raw, BLACK, hot_pixel_threshold(raw, BLACK, WHITE), RATIO, cfa)
    np.testing.assert_array_equal(out, want)
    assert n == m > 20
    assert raw_noise_sigma(raw) == pytest.approx(reference.raw_noise_sigma(raw), abs=0)


def test_the_noise_deviation_is_that_of_the_noise() -> None:
    assert raw_noise_sigma(noisy((400, 400), sigma=6.0)) == pytest.approx(6.0, rel=0.05)
    assert raw_noise_sigma(noisy((400, 400), sigma=0.0)) == 0.0


def test_an_isolated_spike_takes_its_own_colours_value_and_nothing_else_changes() -> None:
    base = ramp()
    raw = base.copy()
    for y, x in [(10, 20), (10, 31), (21, 20), (21, 33)]:  # R, G (red row), G (blue row), B of RGGB
        raw[y, x] = 9000
    out, n = fix(raw)
    assert n == 4
    np.testing.assert_array_equal(out, base)  # a ramp: the symmetric stencil gives it back exactly


def test_what_is_not_a_lone_spike_is_left_alone() -> None:
    raw = noisy((64, 96), sigma=3.0)
    raw[10, 10:12] = 9000  # two side by side: each is the other's neighbour
    raw[20:23, 20:23] = 9000  # a small light
    raw[30, 5:60] = 9000  # a bright line
    raw[40, 40] = int(BLACK[0]) + 20 + 15  # a spike below the threshold (8 sigma)
    raw[1, 50] = 9000  # in the two-sample border
    raw[45, 70] = 9000
    raw[45, 71] = 3000  # a spike whose neighbour holds more than a quarter of its signal
    out, n = fix(raw)
    assert n == 0
    np.testing.assert_array_equal(out, raw)


def test_the_threshold_follows_the_noise_and_the_range() -> None:
    quiet, loud = noisy((200, 200), sigma=1.0), noisy((200, 200), sigma=20.0)
    floor = 0.002 * (WHITE - BLACK.max())
    assert hot_pixel_threshold(quiet, BLACK, WHITE) == pytest.approx(floor)
    assert hot_pixel_threshold(loud, BLACK, WHITE) == pytest.approx(8 * raw_noise_sigma(loud))


def test_bad_arguments() -> None:
    raw = noisy((8, 8))
    with pytest.raises(ValueError, match="share memory"):
        fix_hot_pixels(raw, BLACK, WHITE, CFA.RGGB, raw)
    with pytest.raises(ValueError, match="uint16"):
        fix_hot_pixels(raw.astype(np.float32), BLACK, WHITE, CFA.RGGB, np.empty_like(raw))
    with pytest.raises(ValueError, match="out must be"):
        fix_hot_pixels(raw, BLACK, WHITE, CFA.RGGB, np.empty((8, 9), np.uint16))
    tiny = noisy((4, 4))
    tiny[2, 2] = 9000  # within the border of so small a frame
    out, n = fix(tiny)
    assert n == 0 and np.array_equal(out, tiny)


@pytest.mark.parametrize("cfa", list(CFA))
def test_green_samples_take_the_diagonal_greens_and_red_and_blue_do_not(cfa: CFA) -> None:
    # Signals by colour: R 100, the greens of R rows 300, of B rows 200, B 50 (a coloured, uneven-green scene).
    signal = {"R": 100, "G_r": 300, "G_b": 200, "B": 50}
    layout = {CFA.RGGB: ("R", "G_r", "G_b", "B"), CFA.BGGR: ("B", "G_b", "G_r", "R"),
              CFA.GRBG: ("G_r", "R", "B", "G_b"), CFA.GBRG: ("G_b", "B", "R", "G_r")}[cfa]
    tile = np.array([signal[c] for c in layout], np.float64).reshape(2, 2) + BLACK.reshape(2, 2)
    ring, diag = 4 * 0.5 + 4 / 8**0.5, 4 / 2**0.5  # inverse-distance weights: the same-colour ring, the diagonals
    raw = np.tile(tile, (10, 12)).astype(np.uint16)
    spots = [(8, 8), (8, 13), (13, 8), (13, 13)]  # one of each 2x2 position, apart from each other
    want = raw.copy()
    for y, x in spots:
        raw[y, x] = 12000
        name = layout[2 * (y % 2) + x % 2]
        if name.startswith("G"):
            other = signal["G_b" if name == "G_r" else "G_r"]
            blk = BLACK[2 * (y % 2) + x % 2]
            want[y, x] = np.floor((ring * signal[name] + diag * other) / (ring + diag) + blk + 0.5)
    out, n = fix(raw, cfa)
    assert n == 4
    np.testing.assert_array_equal(out, want)


def test_on_the_real_frames_it_takes_only_lone_spikes(shared_data) -> None:
    """The Canon 550D frame (Magic Lantern DNG) has a few hot samples; the other real frames, normally exposed and
    full of detail, have none it would take."""
    import json
    from pathlib import Path

    from redi_stream.capture import HeaderlessParams, RawFileSource

    counts = {}
    frame = RawFileSource(shared_data / "raw" / "colorchart_canon550d_magiclantern.dng").read(0)
    out = np.empty_like(frame.data)
    counts["canon"] = fix_hot_pixels(frame.data, frame.meta.black_level_array, frame.meta.white_level,
                                     frame.meta.cfa, out)
    changed = np.argwhere(out != frame.data)
    for y, x in changed:  # each one far above all 8 adjacent samples
        around = np.delete(frame.data[y - 1 : y + 2, x - 1 : x + 2].ravel().astype(int), 4)
        assert int(frame.data[y, x]) - around.max() > 200
    params = json.loads((Path(__file__).parents[2] / "docs" / "shared_raw_params.json").read_text())
    for name, p in params.items():
        hp = HeaderlessParams(width=p["width"], height=p["height"], cfa=CFA(p["cfa"].upper()), black=p["black"],
                              white=p["white"])
        frame = RawFileSource(shared_data / "raw" / name, raw_params=hp).read(0)
        counts[name] = fix_hot_pixels(frame.data, frame.meta.black_level_array, frame.meta.white_level,
                                      frame.meta.cfa, np.empty_like(frame.data))
    assert counts.pop("canon") == 6
    assert set(counts.values()) == {0}, counts
