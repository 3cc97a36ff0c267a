"""DNG OpcodeList2 gain maps (lens shading): parsed from the DNG byte layout and multiplied into the decoded mosaic
at the positions the DNG convention gives (pixel centres over the active area, bilinear, held beyond the ends)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from redi_stream.capture import RawFileSource
from redi_stream.capture.opcodes import parse_opcode_list
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


def write_dng(path: Path, raw: np.ndarray, ops: bytes | None, **tags) -> Path:
    """An uncompressed RGGB DNG (tifffile) with BlackLevel 100, ``ops`` as OpcodeList2, and ActiveArea /
    DefaultCropOrigin / DefaultCropSize from ``tags``."""
    extra = [*TIFFFILE_DNG_TAGS, (33421, 3, 2, (2, 2), True), (33422, 1, 4, bytes([0, 1, 1, 2]), True),
             (50717, 4, 1, 4095, True), (50714, 3, 1, (BLACK,), True)]  # fmt: skip
    if ops is not None:
        extra.append((51009, 7, len(ops), ops, True))
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
    data = opcode_list(other_op(4), gain_map_op([[1.0, 2.0], [3.0, 4.0]], area=(1, 2, 30, 40), pitch=(2, 2),
                                                spacing=(0.5, 0.25), origin=(0.125, 0.0)), other_op(77))
    maps, others = parse_opcode_list(data)
    assert others == ["FixBadPixelsConstant", "opcode 77"]
    (m,) = maps
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
