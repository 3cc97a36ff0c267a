"""Orientation: a file's Orientation tag turns the mosaic, its Bayer pattern and its black levels upright."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redi_stream import kernels
from redi_stream.capture import RawFileSource
from redi_stream.capture.libraw import read_libraw
from redi_stream.capture.orient import FLIP_OF_ORIENTATION, orient, shift_origin
from redi_stream.frames import CFA, RawMeta

# What each TIFF/EXIF Orientation value asks of the stored image to show it, written from the tag's definition
# (0th row / 0th column), independently of LibRaw's flip bits.
UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # half turn
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # 0th row is the left side, 0th column the top: transpose
    6: lambda a: np.rot90(a, -1),  # 0th row is the right side: a quarter turn clockwise
    7: lambda a: np.rot90(a.swapaxes(0, 1), 2),  # 0th row is the right side, 0th column the bottom
    8: lambda a: np.rot90(a, 1),  # 0th row is the left side, 0th column the bottom: anticlockwise
}
# CFAPattern tag values (0 R, 1 G, 2 B) of each pattern.
CFA_TAG = {CFA.RGGB: [0, 1, 1, 2], CFA.BGGR: [2, 1, 1, 0], CFA.GRBG: [1, 0, 2, 1], CFA.GBRG: [1, 2, 0, 1]}


def _scene(h: int, w: int) -> np.ndarray:
    """Linear RGB in [0, 1] where every pixel differs from its neighbours in every channel."""
    rng = np.random.default_rng(h * 1000 + w)
    return rng.uniform(0.05, 0.95, (h, w, 3)).astype(np.float32)


def _mosaic(rgb: np.ndarray, cfa: CFA) -> np.ndarray:
    m = kernels.mosaic_rgb(rgb, cfa, np.empty(rgb.shape[:2], np.float32))
    return np.round(m * 4000).astype(np.uint16)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("cfa", [CFA.RGGB, CFA.GBRG])
def test_dng_orientation_turns_pixels_and_pattern(tmp_path: Path, write_plain_dng, orientation: int, cfa: CFA):
    rgb = _scene(64, 96)
    dng = write_plain_dng(tmp_path / "a.dng", _mosaic(rgb, cfa), Orientation=orientation, CFAPattern=CFA_TAG[cfa])
    frame = RawFileSource(dng).read(0)
    upright = np.ascontiguousarray(UPRIGHT[orientation](rgb))
    assert frame.data.shape == upright.shape[:2] and frame.data.flags.c_contiguous
    # The turned mosaic is the mosaic of the turned scene under the pattern the frame now states: every pixel kept
    # its colour (no red/blue swap, no green moved onto red).
    np.testing.assert_array_equal(frame.data, _mosaic(upright, frame.meta.cfa))
    assert frame.meta.flip == 0
    stored = read_libraw(dng, 0)[1]
    assert stored.flip == FLIP_OF_ORIENTATION[orientation]  # LibRaw's code for the tag, applied by the source


@pytest.mark.parametrize("flip", range(8))
@pytest.mark.parametrize("shape", [(6, 8), (7, 8), (6, 9), (7, 9)])
def test_orient_moves_black_levels_with_their_pixels(flip: int, shape: tuple[int, int]):
    h, w = shape
    black = (10.0, 20.0, 30.0, 40.0)
    meta = RawMeta(cfa=CFA.GRBG, black_level=black, white_level=1000.0, flip=flip)
    pos = (np.arange(h)[:, None] % 2) * 2 + np.arange(w)[None, :] % 2  # each pixel's 2x2 position as stored
    data = (np.arange(h * w).reshape(h, w) * 4 + pos).astype(np.uint16)  # position recoverable from the value
    out, m = orient(data, meta)
    assert m.flip == 0 and out.flags.c_contiguous
    new_pos = (np.arange(out.shape[0])[:, None] % 2) * 2 + np.arange(out.shape[1])[None, :] % 2
    src_pos = out % 4
    for p in range(4):
        sel = new_pos == p
        assert np.all(src_pos[sel] == src_pos[sel][0])  # one stored position feeds each new one
        assert m.black_level[p] == black[src_pos[sel][0]]
        assert m.cfa.value[p] == CFA.GRBG.value[src_pos[sel][0]]
    assert sorted(out.ravel().tolist()) == sorted(data.ravel().tolist())


def test_upright_frames_pass_through_untouched():
    data = np.zeros((4, 6), np.uint16)
    meta = RawMeta(cfa=CFA.RGGB, black_level=(0.0,) * 4, white_level=1.0)
    out, m = orient(data, meta)
    assert out is data and m is meta
    with pytest.raises(ValueError, match="flip must be a LibRaw orientation code"):
        RawMeta(cfa=CFA.RGGB, black_level=(0.0,) * 4, white_level=1.0, flip=9)


def test_turned_dng_sequence_fast_path_equals_libraw(tmp_path: Path, write_plain_dng, monkeypatch):
    from redi_stream.capture import dngfast

    calls: list[str] = []
    real = dngfast.read_libraw_with_margins
    monkeypatch.setattr(dngfast, "read_libraw_with_margins", lambda path, i: calls.append(path.name) or real(path, i))
    rng = np.random.default_rng(5)
    folder = tmp_path / "clip"
    folder.mkdir()
    mosaics = [rng.integers(0, 4000, (64, 96), dtype=np.uint16) for _ in range(4)]
    for k, m in enumerate(mosaics):
        write_plain_dng(folder / f"f{k}.dng", m, Orientation=8)
    src = RawFileSource(folder)
    frames = [src.read(k) for k in range(4)]
    assert calls == ["f0.dng"]  # frames 1-3 came through tifffile alone, turned the same way
    for k, f in enumerate(frames):
        want = orient(*read_libraw(folder / f"f{k}.dng", k))
        np.testing.assert_array_equal(f.data, want[0])
        assert (f.meta.cfa, f.meta.black_level, f.meta.flip) == (want[1].cfa, want[1].black_level, 0)
        assert f.data.shape == (96, 64)


@pytest.mark.parametrize("cfa", list(CFA))
@pytest.mark.parametrize("top, left", [(0, 0), (0, 1), (1, 0), (1, 1), (2, 3), (5, 4)])
def test_a_cut_out_mosaic_keeps_each_pixels_colour_and_black_level(cfa: CFA, top: int, left: int):
    meta = RawMeta(cfa=cfa, black_level=(10.0, 20.0, 30.0, 40.0), white_level=4095.0)
    h, w = 12, 14
    colour = np.array(cfa.colors).reshape(2, 2)[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
    black = np.array(meta.black_level).reshape(2, 2)[np.arange(h)[:, None] % 2, np.arange(w)[None, :] % 2]
    cut = shift_origin(meta, top, left)
    want_colour, want_black = colour[top:top + 2, left:left + 2], black[top:top + 2, left:left + 2]
    assert list(cut.cfa.colors) == want_colour.ravel().tolist()
    assert cut.black_level == tuple(want_black.ravel().tolist())
