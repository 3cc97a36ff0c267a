"""write_dng round trips through RawFileSource; sequences; make_dng from demo, image and video inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from redi_stream.capture import RawFileSource, SyntheticSource, make_dng, write_dark_dng_sequence, write_dng
from redi_stream.capture.colour import cam_to_srgb_to_xyz_to_cam, xyz_to_cam_to_cam_to_srgb
from redi_stream.errors import ConfigError, SinkError
from redi_stream.frames import CFA, IDENTITY_3x3


@pytest.mark.parametrize("cfa", list(CFA))
def test_round_trip_every_phase(tmp_path: Path, tiny, cfa: CFA) -> None:
    data = tiny.bayer(3, (26, 38))
    meta = tiny.meta(cfa)
    write_dng(tmp_path / "x.dng", data, meta, fps=29.97)
    src = RawFileSource(tmp_path / "x.dng")
    frame = src.read(0)
    np.testing.assert_array_equal(frame.data, data)
    assert frame.meta.cfa is cfa
    assert frame.meta.black_level == meta.black_level  # per position, all four different
    assert frame.meta.white_level == meta.white_level
    np.testing.assert_allclose(frame.meta.wb_gains, meta.wb_gains, rtol=1e-5)
    np.testing.assert_allclose(frame.meta.cam_to_srgb, meta.cam_to_srgb, atol=1e-3)
    assert frame.meta.warnings == ()
    assert src.fps == pytest.approx(29.97, rel=1e-6)


def test_identity_matrix_and_fractional_black_round_trip(tmp_path: Path, tiny) -> None:
    meta = tiny.meta(CFA.RGGB, cam_to_srgb=IDENTITY_3x3, black_level=(64.6, 64.25, 64.0, 63.75))
    write_dng(tmp_path / "x.dng", tiny.bayer(0), meta)
    frame = RawFileSource(tmp_path / "x.dng").read(0)
    np.testing.assert_allclose(frame.meta.cam_to_srgb, np.eye(3), atol=1e-5)
    assert frame.meta.black_level == (65.0, 64.0, 64.0, 64.0)  # LibRaw holds whole-DN black levels


def test_colour_matrix_conversions_invert_each_other(tiny) -> None:
    xyz_to_cam = cam_to_srgb_to_xyz_to_cam(tiny.cam_to_srgb)
    rescaled = xyz_to_cam * [[2.0], [0.5], [3.0]]  # per-row scale is normalised away
    np.testing.assert_allclose(xyz_to_cam_to_cam_to_srgb(rescaled), tiny.cam_to_srgb, atol=1e-6)
    assert xyz_to_cam_to_cam_to_srgb(np.zeros((4, 3))) is None


def test_write_dng_rejects_bad_input(tmp_path: Path, tiny) -> None:
    with pytest.raises(ConfigError, match="uint16"):
        write_dng(tmp_path / "x.dng", tiny.bayer(0).astype(np.int32), tiny.meta())
    with pytest.raises(ConfigError, match="too small"):
        write_dng(tmp_path / "x.dng", tiny.bayer(0, (8, 8)), tiny.meta())
    with pytest.raises(SinkError, match="cannot write .*nowhere"):
        write_dng(tmp_path / "nowhere" / "x.dng", tiny.bayer(0), tiny.meta())
    assert not list(tmp_path.iterdir())  # no temporary file left behind


def test_sequence_from_synthetic_source_reads_back_identically(tmp_path: Path) -> None:
    src = SyntheticSource(n_frames=3, size=(32, 48), cfa="GBRG", fps=25.0, seed=4)
    paths = write_dark_dng_sequence(src, tmp_path / "seq")
    assert [p.name for p in paths] == ["frame_000000.dng", "frame_000001.dng", "frame_000002.dng"]
    files = RawFileSource(tmp_path / "seq")
    assert files.fps == 25.0 and len(files) == 3
    for a, b in zip(src, files, strict=True):
        np.testing.assert_array_equal(a.data, b.data)
        assert b.meta.cfa is CFA.GBRG and b.meta.black_level == (512.0,) * 4 and b.meta.white_level == 16383
        np.testing.assert_allclose(b.meta.wb_gains, (2.0, 1.0, 1.7), rtol=1e-5)
        assert a.t_ns == b.t_ns
    with pytest.raises(ConfigError, match="ratio are fixed by the SyntheticSource"):
        write_dark_dng_sequence(src, tmp_path / "other", ratio=50)


def test_sequence_refuses_old_frames_unless_overwrite(tmp_path: Path) -> None:
    write_dark_dng_sequence(SyntheticSource(n_frames=3, size=(24, 24)), tmp_path)
    with pytest.raises(SinkError, match="already holds 3 frame_"):
        write_dark_dng_sequence(SyntheticSource(n_frames=2, size=(24, 24)), tmp_path)
    paths = write_dark_dng_sequence(SyntheticSource(n_frames=2, size=(24, 24)), tmp_path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]  # the stale third frame is gone


def test_sequence_from_srgb_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = (rng.integers(0, 256, (30, 40, 3), dtype=np.uint8) for _ in range(2))
    paths = write_dark_dng_sequence(images, tmp_path, ratio=10, seed=1, cfa=CFA.BGGR, fps=30, size=(24, 28))
    src = RawFileSource(tmp_path)
    assert len(paths) == 2 and src.fps == 30.0
    frame = src.read(1)
    assert frame.shape == (24, 28) and frame.meta.cfa is CFA.BGGR
    assert frame.data.mean() > 512 + 5  # ratio 10 leaves real signal above black


def test_make_dng_demo_image_and_video(tmp_path: Path) -> None:
    import cv2

    from tests.conftest import write_grey_ramp_video

    demo = make_dng(None, tmp_path / "demo", n_frames=2, size=(32, 48), ratio=50, cfa="GRBG")
    assert len(demo) == 2 and RawFileSource(tmp_path / "demo").read(0).meta.cfa is CFA.GRBG

    picture = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "pic.png"), picture)
    from_image = make_dng(tmp_path / "pic.png", tmp_path / "img", n_frames=3, fps=12)
    src = RawFileSource(tmp_path / "img")
    assert len(from_image) == 3 and src.read(2).shape == (40, 60) and src.fps == 12.0

    write_grey_ramp_video(tmp_path / "clip.mp4", 4, (48, 64), codec="mpeg4", rate=25)
    from_video = make_dng(tmp_path / "clip.mp4", tmp_path / "vid", n_frames=3, ratio=5)
    vid = RawFileSource(tmp_path / "vid")
    assert len(from_video) == 3 and vid.fps == 25.0 and vid.read(0).shape == (48, 64)
    assert vid.read(2).data.mean() > vid.read(0).data.mean()  # the clip brightens frame by frame
