"""Real sensor files from ../shared/data/raw (skipped when absent); expected values from its README and rawpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from redi_stream.capture import HeaderlessParams, RawFileSource
from redi_stream.capture.colour import xyz_to_cam_to_cam_to_srgb
from redi_stream.errors import FrameError
from redi_stream.frames import CFA

ML_DNG = "raw/colorchart_canon550d_magiclantern.dng"


def test_magic_lantern_dng(shared_data: Path) -> None:
    src = RawFileSource(shared_data / ML_DNG)
    frame = src.read(0)
    assert frame.shape == (1156, 1734)  # visible area, rows x columns
    assert frame.data.dtype == np.uint16 and frame.data.flags.c_contiguous and frame.data.flags.writeable
    meta = frame.meta
    assert meta.cfa is CFA.RGGB
    assert meta.black_level == (2056.0,) * 4 and meta.white_level == 15000.0
    assert meta.camera == "Canon EOS Kiss X4"
    # camera WB = 1 / AsShotNeutral (1, 2.477, 1.462) normalised to G = 1
    np.testing.assert_allclose(meta.wb_gains, (2.477, 1.0, 2.477 / 1.462), rtol=1e-3)
    # The README says "no colour matrix" because rawpy's rgb_xyz_matrix is zero, but the file does carry
    # ColorMatrix1, which LibRaw converts into color_matrix: the reader must use that, with no warning.
    with tifffile.TiffFile(shared_data / ML_DNG) as tf:
        ratios = np.array(tf.pages.first.tags[50721].value, dtype=np.float64).reshape(-1, 2)
    expected = xyz_to_cam_to_cam_to_srgb((ratios[:, 0] / ratios[:, 1]).reshape(3, 3))
    np.testing.assert_allclose(meta.cam_to_srgb, expected, atol=1e-4)
    np.testing.assert_allclose(meta.cam_to_srgb.sum(axis=1), 1.0, atol=1e-5)
    assert meta.warnings == ()
    assert src.fps == 24.0  # no CinemaDNG FrameRate tag
    assert 1800 <= int(frame.data.min()) and int(frame.data.max()) <= 15000  # noise dips a little below black


def test_openisp_headerless_10bit(shared_data: Path) -> None:
    path = shared_data / "raw/openisp_chart_1920x1080_rggb_10bit.raw"
    params = HeaderlessParams(width=1920, height=1080, cfa=CFA.RGGB, black=0, white=1023)
    frame = RawFileSource(path, raw_params=params).read(0)
    assert frame.shape == (1080, 1920) and frame.meta.cfa is CFA.RGGB
    assert frame.meta.white_level == 1023 and int(frame.data.max()) <= 1023
    np.testing.assert_array_equal(frame.data, np.fromfile(path, "<u2").reshape(1080, 1920))
    # 1920x1080 is the wrong way round: the size check catches it (same bytes), the shape does not lie
    wrong = HeaderlessParams(width=1080, height=1921, white=1023)
    with pytest.raises(FrameError, match="expected 4149360"):
        RawFileSource(path, raw_params=wrong).read(0)


@pytest.mark.parametrize("phase", ["rggb", "bggr", "gbrg", "grbg"])
def test_isp_rose_phases(shared_data: Path, phase: str) -> None:
    cfa = CFA(phase.upper())
    params = HeaderlessParams(width=768, height=512, cfa=cfa, black=600, bits=14)
    frame = RawFileSource(shared_data / f"raw/isp_rose_768x512_{phase}_14bit.raw", raw_params=params).read(0)
    assert frame.shape == (512, 768) and frame.meta.cfa is cfa
    assert frame.meta.black_level == (600.0,) * 4 and frame.meta.white_level == 16383
    # The documented phase is the real one: in this (reddish) rose photo the position the CFA calls R is the
    # brightest on average and B the darkest, in every one of the four files.
    means = [frame.data[dy::2, dx::2].mean() for dy in (0, 1) for dx in (0, 1)]
    colours = cfa.colors
    assert int(np.argmax(means)) == colours.index(0)
    assert int(np.argmin(means)) == colours.index(2)
