"""SyntheticSource: determinism, noise model, motion, protocol."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from redi_stream.capture import DEMO_SIZE, SyntheticSource
from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA


def test_same_seed_same_bytes_in_any_order_and_thread() -> None:
    a = SyntheticSource(n_frames=6, size=(32, 48), seed=3)
    b = SyntheticSource(n_frames=6, size=(32, 48), seed=3)
    with ThreadPoolExecutor(max_workers=3) as pool:
        backwards = list(pool.map(b.read, reversed(range(6))))[::-1]
    for fa, fb in zip(a, backwards, strict=True):
        assert fa.data.tobytes() == fb.data.tobytes()


def test_noise_differs_between_frames_and_seeds() -> None:
    src = SyntheticSource(n_frames=2, size=(32, 48), motion="static")
    np.testing.assert_array_equal(src.clean(0), src.clean(1))
    assert not np.array_equal(src.read(0).data, src.read(1).data)
    other = SyntheticSource(n_frames=2, size=(32, 48), motion="static", seed=1)
    assert not np.array_equal(src.read(0).data, other.read(0).data)


def test_frame_protocol_and_meta() -> None:
    src = SyntheticSource(n_frames=3, size=(30, 44), cfa="bggr", fps=30.0, white=4095, black=64)
    frame = src.read(2)
    assert len(src) == 3 and src.live is False and src.names[2] == "synthetic_000002" == frame.name
    assert frame.data.dtype == np.uint16 and frame.shape == (30, 44) and frame.data.flags.c_contiguous
    assert frame.index == 2 and frame.t_ns == round(2e9 / 30)
    assert frame.meta.cfa is CFA.BGGR and frame.meta.black_level == (64.0,) * 4 and frame.meta.white_level == 4095
    assert frame.meta.wb_gains == (2.0, 1.0, 1.7)
    np.testing.assert_array_equal(frame.meta.cam_to_srgb, np.eye(3))
    assert frame.data.min() >= 0 and frame.data.max() <= 4095
    with pytest.raises(IndexError):
        src.read(3)
    with src:
        pass
    src.close()
    with pytest.raises(CaptureError, match="closed"):
        src.read(0)


def test_noise_statistics_match_the_model() -> None:
    grey = np.full((64, 64, 3), 0.5, np.float32)  # sRGB 0.5 -> linear 0.214
    k, read, ratio, white, black = 2.0, 2.5, 20.0, 16383.0, 512.0
    src = SyntheticSource(grey, n_frames=1, size=(256, 256), ratio=ratio, motion="static",
                          gain_dn_per_e=k, read_noise_dn=read, white=white, black=black, cfa=CFA.RGGB)  # fmt: skip
    data = src.read(0).data.astype(np.float64)
    lin = ((0.5 + 0.055) / 1.055) ** 2.4
    for (dy, dx), wb in (((0, 0), 2.0), ((0, 1), 1.0), ((1, 1), 1.7)):
        plane = data[dy::2, dx::2]
        signal_dn = lin / wb * (white - black) / ratio
        assert plane.mean() == pytest.approx(black + signal_dn, abs=0.5)
        assert plane.var() == pytest.approx(k * signal_dn + read**2 + 1 / 12, rel=0.08)


def test_dark_signal_uses_exact_poisson_counts() -> None:
    # 1 electron on average: counts are 0, 1, 2 ... so with no read noise only multiples of K appear.
    grey = np.full((8, 8, 3), 1.0, np.float32)
    src = SyntheticSource(grey, n_frames=1, size=(64, 64), motion="static", ratio=(16383 - 512) / 2.0,
                          gain_dn_per_e=2.0, read_noise_dn=0.0)  # fmt: skip
    green = src.read(0).data[0::2, 1::2].astype(np.int64) - 512
    assert set(np.unique(green) % 2) == {0}
    assert green.mean() == pytest.approx(2.0, abs=0.4)


def test_pan_moves_and_static_does_not() -> None:
    pan = SyntheticSource(n_frames=10, size=(40, 60))
    assert pan.window_origin(0) == (0, 0)
    assert pan.window_origin(9)[1] == pan._planes.shape[2] - 60  # ends at the right edge
    assert not np.array_equal(pan.clean(0), pan.clean(5))
    assert pan.clean(5).shape == (40, 60, 3) and pan.clean(5).dtype == np.float32
    static = SyntheticSource(n_frames=10, size=(40, 60), motion="static")
    np.testing.assert_array_equal(static.clean(0), static.clean(9))


def test_default_image_and_demo_need_no_download() -> None:
    assert SyntheticSource(n_frames=1).read(0).shape == (512, 512)  # scikit-image's astronaut, from the wheel
    demo = SyntheticSource.demo()
    assert len(demo) == 48 and demo.fps == 24.0 and demo.read(47).shape == DEMO_SIZE
    assert demo.ratio == 150.0


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(motion="zoom"), "valid: pan, static"),
        (dict(cfa="RGBW"), "valid: RGGB, BGGR, GRBG, GBRG"),
        (dict(ratio=0), "ratio must be positive"),
        (dict(n_frames=0), "n_frames"),
        (dict(size=(1, 5)), "size"),
        (dict(white=100, black=200), "black < white"),
        (dict(image=np.zeros((4, 4))), r"\(H, W, 3\)"),
        (dict(image=np.full((4, 4, 3), np.nan)), "NaN"),
    ],
)
def test_invalid_parameters(kwargs: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        SyntheticSource(**{"n_frames": 2, "size": (8, 8), **kwargs})
