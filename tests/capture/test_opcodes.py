"""DNG opcodes: OpcodeList2 gain maps (lens shading), parsed from the DNG byte layout and multiplied into the decoded
mosaic at the positions the DNG convention gives (pixel centres over the active area, bilinear, held beyond the
ends); FixBadPixelsConstant and FixBadPixelsList (OpcodeList1 and 2), interpolated from same-colour neighbours."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from redi_stream.capture import RawFileSource
from redi_stream.capture.opcodes import BadPixelsConstant, BadPixelsList, fix_bad_pixels, parse_opcode_list
from redi_stream.frames import CFA
from tests.capture.conftest import TIFFFILE_DNG_TAGS

BLACK = 100


def gain_map_op(gains, *, area=(0, 0, 10**6, 10**6), plane=0, pitch=(1, 1), spacing=(1.0, 1.0), origin=(0.0, 0.0)):
    """One GainMap opcode as the DNG specification lays it out (big-endian); ``gains`` is (points_v, points_h)."""
    g = np.asarray(gains, np.float32)
    pv, ph = g.shape
    params = struct.pack(">10I4dI", *area, plane, 1, *pitch, pv, ph, *spacing, *origin, 1) + g.astype(">f4").tobytes()
    return struct.pack(">4I", 9, 0x01030000, 0, len(params)) + params


def other_op(opcode: int, size: int = 8) -> bytes:
    return struct.pack(">4I", opcode, 0x01030000, 1, size) + bytes(size)


def opcode_list(*ops: bytes) -> bytes:
    return struct.pack(">I", len(ops)) + b"".join(ops)


def bad_constant_op(constant: int, phase: int = 0) -> bytes:
    return struct.pack(">4I", 4, 0x01030000, 0, 8) + struct.pack(">2I", constant, phase)


def bad_list_op(points=(), rects=(), phase: int = 0) -> bytes:
    params = struct.pack(">3I", phase, len(points), len(rects))
    params += b"".join(struct.pack(">2I", *p) for p in points) + b"".join(struct.pack(">4I", *r) for r in rects)
    return struct.pack(">4I", 5, 0x01030000, 0, len(params)) + params


def write_dng(path: Path, raw: np.ndarray, ops: bytes | None, *, ops1: bytes | None = None, black=(BLACK,),
              **tags) -> Path:
    """An uncompressed RGGB DNG (tifffile) with BlackLevel ``black`` (one value, or four for a 2x2 repeat), ``ops``
    as OpcodeList2, ``ops1`` as OpcodeList1, and ActiveArea / DefaultCropOrigin / DefaultCropSize /
    LinearizationTable from ``tags``."""
    extra = [*TIFFFILE_DNG_TAGS, (33421, 3, 2, (2, 2), True), (33422, 1, 4, bytes([0, 1, 1, 2]), True),
             (50717, 4, 1, 4095, True), (50714, 3, len(black), tuple(black), True)]  # fmt: skip
    if len(black) == 4:
        extra.append((50713, 3, 2, (2, 2), True))
    if ops is not None:
        extra.append((51009, 7, len(ops), ops, True))
    if ops1 is not None:
        extra.append((51008, 7, len(ops1), ops1, True))
    if "table" in tags:
        extra.append((50712, 3, len(tags["table"]), tuple(int(v) for v in tags["table"]), True))
    if "area" in tags:
        extra.append((50829, 4, 4, tags["area"], True))
    if "crop_origin" in tags:
        extra += [(50719, 4, 2, tags["crop_origin"], True), (50720, 4, 2, tags["crop_size"], True)]
    with tifffile.TiffWriter(path) as tw:
        tw.write(raw, photometric=32803, subfiletype=0, extratags=extra)
    return path


def decode(path: Path) -> np.ndarray:
    frame = RawFileSource(path).read(0)
    assert frame.meta.warnings == ()
    return frame.data.astype(np.float64)


def flat(shape=(40, 60), value=1000) -> np.ndarray:
    return np.full(shape, value, np.uint16)


def test_parse_reads_every_field_and_names_the_other_opcodes():
    data = opcode_list(other_op(1), gain_map_op([[1.0, 2.0], [3.0, 4.0]], area=(1, 2, 30, 40), pitch=(2, 2),
                                                spacing=(0.5, 0.25), origin=(0.125, 0.0)), other_op(77),
                       bad_constant_op(0, 3), bad_list_op([(5, 6), (7, 8)], [(1, 2, 3, 4)], phase=1))
    ops = parse_opcode_list(data)
    assert ops.others == ("WarpRectilinear", "opcode 77")
    constant, listed = ops.bad_pixels
    assert constant == BadPixelsConstant(0, 3)
    assert listed.bayer_phase == 1 and listed.points.tolist() == [[5, 6], [7, 8]]
    assert listed.rects.tolist() == [[1, 2, 3, 4]]
    short = bytes(struct.pack(">3I", 0, 3, 1) + struct.pack(">6I", 5, 6, 7, 8, 1, 2))  # says 3 points, holds 1.5
    with pytest.raises(ValueError, match="3 points and 1 rectangles in 36 bytes"):
        parse_opcode_list(opcode_list(struct.pack(">4I", 5, 0x01030000, 0, len(short)) + short))
    with pytest.raises(ValueError, match="FixBadPixelsConstant with 4 bytes"):
        parse_opcode_list(opcode_list(other_op(4, 4)))
    (m,) = ops.gain_maps
    assert (m.top, m.left, m.bottom, m.right, m.row_pitch, m.col_pitch) == (1, 2, 30, 40, 2, 2)
    assert (m.spacing_v, m.spacing_h, m.origin_v, m.origin_h) == (0.5, 0.25, 0.125, 0.0)
    np.testing.assert_array_equal(m.gains[:, :, 0], [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="cut short"):
        parse_opcode_list(data[:-3])
    with pytest.raises(ValueError, match="not finite"):
        parse_opcode_list(opcode_list(gain_map_op([[1.0, float("nan")]])))


def test_a_uniform_map_scales_the_signal_above_black(tmp_path):
    path = write_dng(tmp_path / "u.dng", flat(), opcode_list(gain_map_op([[2.0]])))
    np.testing.assert_array_equal(decode(path), (1000 - BLACK) * 2 + BLACK)


def test_one_map_per_bayer_phase(tmp_path):
    ops = [gain_map_op([[g]], area=(dy, dx, 40, 60), pitch=(2, 2))
           for (dy, dx), g in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [1.1, 1.2, 1.3, 1.4])]  # fmt: skip
    out = decode(write_dng(tmp_path / "p.dng", flat(), opcode_list(*ops)))
    for (dy, dx), g in zip([(0, 0), (0, 1), (1, 0), (1, 1)], [1.1, 1.2, 1.3, 1.4]):
        np.testing.assert_array_equal(out[dy::2, dx::2], np.rint((1000 - BLACK) * np.float32(g)) + BLACK)


def test_gains_are_interpolated_at_pixel_centres_and_held_beyond_the_ends(tmp_path):
    # Two points across: 1 at relative x 0.25, 3 at 0.75; pixel column c sits at (c + 0.5) / 60.
    ops = opcode_list(gain_map_op([[1.0, 3.0]], spacing=(1.0, 0.5), origin=(0.0, 0.25)))
    out = decode(write_dng(tmp_path / "r.dng", flat(), ops))
    x = (np.arange(60) + 0.5) / 60
    want_gain = 1.0 + 2.0 * np.clip((x - 0.25) / 0.5, 0.0, 1.0)
    np.testing.assert_allclose(out[7], (1000 - BLACK) * want_gain + BLACK, atol=0.5)
    assert np.all(out == out[0])  # one point down the frame: the same in every row


def test_maps_follow_the_active_area_and_the_default_crop(tmp_path):
    # ActiveArea rows 2..38, columns 4..58 (54 wide); DefaultCrop from (2, 2) in it: data column j is active-area
    # column j + 2, whose centre sits at (j + 2.5) / 54. A ramp from 1 to 3 over the whole active area.
    ops = opcode_list(gain_map_op([[1.0, 3.0]], spacing=(1.0, 1.0), origin=(0.0, 0.0)))
    path = write_dng(tmp_path / "c.dng", flat(), ops, area=(2, 4, 38, 58), crop_origin=(2, 2), crop_size=(50, 30))
    frame = RawFileSource(path).read(0)
    assert frame.data.shape == (30, 50) and frame.meta.cfa is CFA.RGGB
    want_gain = 1.0 + 2.0 * (np.arange(50) + 2.5) / 54
    np.testing.assert_allclose(frame.data[3].astype(float), (1000 - BLACK) * want_gain + BLACK, atol=0.5)


def test_files_without_maps_and_broken_lists(tmp_path):
    plain = write_dng(tmp_path / "n.dng", flat(), None)
    np.testing.assert_array_equal(decode(plain), 1000)
    only_others = write_dng(tmp_path / "o.dng", flat(), opcode_list(other_op(1, 16)))
    np.testing.assert_array_equal(decode(only_others), 1000)
    broken = write_dng(tmp_path / "b.dng", flat(), opcode_list(gain_map_op([[2.0]]))[:-2])
    frame = RawFileSource(broken).read(0)
    np.testing.assert_array_equal(frame.data, 1000)  # decoded as stored, and said so
    assert len(frame.meta.warnings) == 1 and "lens-shading gain maps not applied" in frame.meta.warnings[0]
    broken1 = write_dng(tmp_path / "b1.dng", flat(), None, ops1=opcode_list(bad_list_op([(3, 3)]))[:-2])
    frame = RawFileSource(broken1).read(0)
    np.testing.assert_array_equal(frame.data, 1000)
    assert len(frame.meta.warnings) == 1 and "OpcodeList1 could not be read" in frame.meta.warnings[0]


# ---- bad pixels ----

RAMP_BLACK = (100, 110, 120, 130)  # per 2x2 position: the greens of the two rows differ in black level


def ramp(shape=(40, 60)) -> np.ndarray:
    """Raw DN whose signal (above each position's black) is one plane, 400 + 3 row + 5 column for every colour: a
    symmetric neighbour stencil interpolates it exactly, whatever colour it takes its neighbours from."""
    r, c = np.mgrid[: shape[0], : shape[1]]
    blk = np.tile(np.reshape(RAMP_BLACK, (2, 2)), (shape[0] // 2, shape[1] // 2))
    return (400 + 3 * r + 5 * c + blk).astype(np.uint16)


def test_samples_equal_to_the_constant_are_interpolated_from_their_own_colour(tmp_path):
    raw = ramp()
    want = raw.copy()
    for y, x in [(10, 20), (10, 21), (11, 20), (11, 21), (0, 0), (39, 59)]:  # R, G, G, B; two corners
        raw[y, x] = 0
    path = write_dng(tmp_path / "c.dng", raw, None, ops1=opcode_list(bad_constant_op(0)), black=RAMP_BLACK)
    out = RawFileSource(path).read(0).data
    # Inside, the stencil is symmetric: exact. At a corner it is one-sided, so the ramp is only approached.
    np.testing.assert_array_equal(out[1:-1, 1:-1], want[1:-1, 1:-1])
    assert abs(int(out[0, 0]) - int(want[0, 0])) < 20 and abs(int(out[39, 59]) - int(want[39, 59])) < 40
    assert (out != want).sum() == 2


def test_the_bayer_phase_says_which_samples_take_their_diagonal_greens():
    data = np.full((12, 12), 1000, np.uint16)
    data[5, 5] = 1400  # diagonal to (6, 6): one of its neighbours only if (6, 6) is green
    bad_66 = BadPixelsList(0, np.array([[6, 6]]), np.zeros((0, 4), int))
    # Inverse-distance weights of the green stencil: 4 at distance 2, 4 at 2 sqrt 2, 4 diagonal at sqrt 2.
    green_want = 1000 + 400 * 2**-0.5 / (4 / 2 + 4 / 8**0.5 + 4 / 2**0.5)
    for phase, green in {0: False, 1: True, 2: True, 3: False}.items():  # what (0, 0), and so (6, 6), is
        fixed = fix_bad_pixels(data, (0.0,) * 4, (dataclasses.replace(bad_66, bayer_phase=phase),), (0, 0))
        assert fixed[6, 6] == (round(green_want) if green else 1000), phase
    # The phase is that of the list's own stage: seen from an origin one column over, (6, 6) is green in phase 0.
    fixed = fix_bad_pixels(data, (0.0,) * 4, (BadPixelsList(0, np.array([[6, 7]]), np.zeros((0, 4), int)),), (0, 1))
    assert fixed[6, 6] == round(green_want)


def test_listed_points_and_rectangles_are_placed_in_their_lists_stage(tmp_path):
    # ActiveArea rows 2..38, columns 4..58; DefaultCrop from (2, 2) in it: data (0, 0) is stored (4, 6), active (2, 2).
    raw = ramp()
    want = raw[4:34, 6:56].copy()
    raw[14, 16] = raw[20, 30] = 4000          # hot pixels, stored coordinates
    raw[24:27, 40:43] = 3000                  # a 3x3 cluster: its centre has bad same-colour neighbours
    raw[2 + 7, 4 + 9] = 4000                  # a hot pixel listed in active-area coordinates (OpcodeList2)
    list1 = opcode_list(bad_list_op([(14, 16), (20, 30), (1, 1)], [(24, 40, 27, 43)]))  # (1, 1): outside the data
    list2 = opcode_list(bad_list_op([(7, 9)]))
    path = write_dng(tmp_path / "l.dng", raw, list2, ops1=list1, black=RAMP_BLACK, area=(2, 4, 38, 58),
                     crop_origin=(2, 2), crop_size=(50, 30))
    out = RawFileSource(path).read(0).data.astype(int)
    assert out.shape == want.shape
    cluster = np.zeros(want.shape, bool)
    cluster[20:23, 34:37] = True  # stored rows 24..26, columns 40..42
    np.testing.assert_array_equal(out[~cluster], want[~cluster])  # single bad samples: a symmetric stencil, exact
    assert np.abs(out[cluster] - want[cluster]).max() <= 10  # one-sided stencils inside the cluster


def test_a_bad_sample_without_a_good_neighbour_is_left_as_stored():
    data = np.full((20, 20), 1000, np.uint16)
    data[5:16, 5:16] = 3000
    fixed = fix_bad_pixels(data, (0.0,) * 4, (BadPixelsList(0, np.zeros((0, 2), int), np.array([[5, 5, 16, 16]])),),
                           (0, 0))
    assert fixed[10, 10] == 3000  # every same-colour sample within two is in the rectangle
    assert fixed[5, 5] == 1000 and fixed[15, 15] == 1000  # the edge takes the good samples outside
    assert fix_bad_pixels(data, (0.0,) * 4, (BadPixelsConstant(77, 0),), (0, 0)) is data  # nothing bad: untouched


def test_the_constant_is_a_stored_value_looked_up_in_the_linearization_table(tmp_path):
    raw = flat()
    raw[10, 20] = 7
    table = np.arange(4096) + 50  # LibRaw applies it: 1000 -> 1050, 7 -> 57
    path = write_dng(tmp_path / "t.dng", raw, None, ops1=opcode_list(bad_constant_op(7)), table=table)
    np.testing.assert_array_equal(RawFileSource(path).read(0).data, 1050)
