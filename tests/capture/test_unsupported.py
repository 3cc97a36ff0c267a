"""Non-Bayer raws get UnsupportedSensorError naming the file: real linear and X-Trans DNGs, plus stubs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rawpy

from redi_stream.capture import RawFileSource, bayer_cfa
from redi_stream.errors import CaptureError, UnsupportedSensorError
from redi_stream.frames import CFA


def test_linear_dng_is_unsupported(tmp_path: Path, write_plain_dng) -> None:
    path = write_plain_dng(tmp_path / "linear.dng", np.full((32, 48, 3), 1000, np.uint16),
                           PhotometricInterpretation=34892)
    with pytest.raises(UnsupportedSensorError, match=r"linear\.dng: not a colour-filter-array mosaic") as info:
        RawFileSource(path).read(0)
    assert isinstance(info.value, CaptureError)


def test_xtrans_dng_is_unsupported(tmp_path: Path, write_plain_dng) -> None:
    xtrans = [1, 1, 0, 1, 1, 2, 1, 1, 2, 1, 1, 0, 2, 0, 1, 0, 2, 1,
              1, 1, 2, 1, 1, 0, 1, 1, 0, 1, 1, 2, 0, 2, 1, 2, 0, 1]  # fmt: skip
    path = write_plain_dng(tmp_path / "xt.dng", np.full((36, 48), 1000, np.uint16), PhotometricInterpretation=32803,
                        CFARepeatPatternDim=[6, 6], CFAPattern=xtrans)  # fmt: skip
    with pytest.raises(UnsupportedSensorError, match=r"xt\.dng: Fujifilm X-Trans"):
        RawFileSource(path).read(0)


def test_four_colour_cfa_is_unsupported(tmp_path: Path, write_plain_dng) -> None:
    path = write_plain_dng(tmp_path / "cmy.dng", np.full((32, 48), 1000, np.uint16), PhotometricInterpretation=32803,
                        CFARepeatPatternDim=[2, 2], CFAPattern=[0, 1, 2, 3], CFAPlaneColor=[3, 4, 5, 1])  # fmt: skip
    with pytest.raises(UnsupportedSensorError, match=r"cmy\.dng: colour pattern .* not an RGB 2x2 Bayer"):
        RawFileSource(path).read(0)


def test_x3f_suffix_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "a.x3f").write_bytes(b"FOVb" + bytes(100))
    with pytest.raises(UnsupportedSensorError, match="Foveon"):
        RawFileSource(tmp_path).read(0)


def _stub(raw_type: object = rawpy.RawType.Flat, pattern: object = ((0, 1), (3, 2)), desc: bytes = b"RGBG"):
    return SimpleNamespace(raw_type=raw_type, raw_pattern=None if pattern is None else np.array(pattern),
                           color_desc=desc, num_colors=3)  # fmt: skip


def test_bayer_cfa_on_stubs() -> None:
    assert bayer_cfa(_stub(), "x") is CFA.RGGB
    assert bayer_cfa(_stub(pattern=((1, 2), (0, 1))), "x") is CFA.GBRG  # both greens with index 1
    assert bayer_cfa(_stub(pattern=((3, 2), (0, 1))), "x") is CFA.GBRG
    with pytest.raises(UnsupportedSensorError, match="foveon.x3f: not a colour-filter-array"):
        bayer_cfa(_stub(raw_type=rawpy.RawType.Stack, pattern=None), "foveon.x3f")
    with pytest.raises(UnsupportedSensorError, match="X-Trans"):
        bayer_cfa(_stub(pattern=np.zeros((6, 6), int)), "x.raf")
    with pytest.raises(UnsupportedSensorError, match="not an RGB 2x2 Bayer"):
        bayer_cfa(_stub(pattern=((0, 0), (1, 2))), "odd.nef")
