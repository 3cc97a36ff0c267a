"""redi_stream.Enhancer and open_raw: the command line's enhancement, called from Python one frame at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

import redi_stream
from redi_stream import app
from redi_stream.capture import make_dng
from redi_stream.config import ModelKind, RunConfig
from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA


def _read_png16(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """Four dark DNG frames of a photo, each with its own noise (so each frame's gain estimate differs)."""
    root = tmp_path_factory.mktemp("api")
    make_dng(None, root / "clip", n_frames=4, size=(64, 96), fps=24.0, ratio=100)
    return root / "clip"


def test_import_is_light() -> None:
    code = ("import sys, redi_stream\n"
            "assert callable(redi_stream.__getattr__)\n"
            "print(','.join(m for m in ('torch', 'cv2', 'av', 'numba') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == ""
    assert {"Enhancer", "open_raw"} <= set(dir(redi_stream))
    with pytest.raises(AttributeError, match="no attribute 'Enhancr'"):
        redi_stream.Enhancr  # noqa: B018


@pytest.mark.parametrize("bits", [16, 8])
def test_classic_frames_equal_the_command_lines(tmp_path: Path, clip: Path, bits: int) -> None:
    out = tmp_path / "frames"
    cfg = RunConfig(source=str(clip), out=f"{out}/", model=ModelKind.CLASSIC, progress=False, bits=bits)
    assert app.run(cfg) == 0
    cli_frames = sorted(out.glob("*.png"))
    assert len(cli_frames) == 4
    with redi_stream.Enhancer(model="classic", bits=bits) as enhance, redi_stream.open_raw(clip) as src:
        gains = []
        for frame, png in zip(src, cli_frames, strict=True):
            rgb = enhance(frame)
            assert rgb.dtype == (np.uint16 if bits == 16 else np.uint8) and rgb.shape == (64, 96, 3)
            np.testing.assert_array_equal(rgb, _read_png16(png))
            gains.append(enhance.last_gain)
            assert {"gain", "pack", "isp"} <= set(enhance.last_timings_ms)
        assert enhance.frames == 4 and len(set(gains)) > 1


def test_network_array_equals_the_raw_frame(clip: Path) -> None:
    """A bare mosaic with the file's levels and colour gives what the file's RawFrame gives."""
    frame = redi_stream.open_raw(clip).read(0)
    m = frame.meta
    with redi_stream.Enhancer(gain_smoothing=0, device="cpu") as enhance:
        from_file = enhance(frame)
        from_array = enhance(frame.data, cfa=m.cfa.value.lower(), black=m.black_level, white=m.white_level,
                             wb_gains=m.wb_gains, cam_to_srgb=m.cam_to_srgb)
        np.testing.assert_array_equal(from_array, from_file)
        assert 20 < from_file.mean() < 235  # an exposed picture, neither black nor white
        # Normalised floats are scaled to 16 bits with their levels: the same picture within rounding.
        white = m.white_level
        norm = frame.data.astype(np.float64) / white
        from_floats = enhance(norm, cfa=m.cfa, black=tuple(b / white for b in m.black_level), white=1.0,
                              wb_gains=m.wb_gains, cam_to_srgb=m.cam_to_srgb)
        assert np.abs(from_floats.astype(int) - from_file).mean() < 1.0


def test_colour_arguments_take_effect() -> None:
    grey = np.full((64, 64), 400, np.uint16)
    with redi_stream.Enhancer(model="classic", gain=2.0) as enhance:
        plain = enhance(grey, cfa="RGGB", black=0, white=1023).reshape(-1, 3).mean(0)
        warm = enhance(grey, cfa="RGGB", black=0, white=1023, wb_gains=(2.0, 1.0, 1.0)).reshape(-1, 3).mean(0)
        swap = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.float32)
        swapped = enhance(grey, cfa="RGGB", black=0, white=1023, wb_gains=(2.0, 1.0, 1.0),
                          cam_to_srgb=swap).reshape(-1, 3).mean(0)
        eight_bit = enhance(np.full((64, 64), 100, np.uint8), cfa="RGGB").reshape(-1, 3).mean(0)
    assert abs(plain[0] - plain[1]) < 1 and abs(plain[2] - plain[1]) < 1
    assert warm[0] > warm[1] + 20 and abs(warm[2] - warm[1]) < 1
    assert swapped[2] > swapped[1] + 20 and abs(swapped[0] - swapped[1]) < 1
    np.testing.assert_allclose(eight_bit, plain, atol=2)  # uint8: white 255 by default, 100/255 ~ 400/1023


def test_bad_frames_and_arguments_are_named() -> None:
    with redi_stream.Enhancer(model="classic") as enhance:
        mosaic = np.zeros((32, 32), np.uint16)
        with pytest.raises(ConfigError, match="cfa is required with an array.*RGGB, BGGR, GRBG, GBRG"):
            enhance(mosaic)
        with pytest.raises(ConfigError, match="unknown CFA 'xyzw'; valid: RGGB, BGGR, GRBG, GBRG"):
            enhance(mosaic, cfa="xyzw")
        with pytest.raises(ConfigError, match=r"frame 0: expected a \(H, W\) Bayer mosaic, got an array of shape "
                                              r"\(32, 32, 3\)"):
            enhance(np.zeros((32, 32, 3), np.uint16), cfa="RGGB")
        with pytest.raises(ConfigError, match="frame 0: a Bayer mosaic needs at least 2x2 pixels, got 1x5"):
            enhance(np.zeros((1, 5), np.uint16), cfa="RGGB")
        with pytest.raises(ConfigError, match="white level 10 must be finite and exceed the black level 20.0"):
            enhance(mosaic, cfa="RGGB", black=20, white=10)
        with pytest.raises(ConfigError, match="wb_gains must be finite and > 0"):
            enhance(mosaic, cfa="RGGB", wb_gains=(1, 0, 1))
        with pytest.raises(ConfigError, match="cam_to_srgb must be a finite 3x3 matrix"):
            enhance(mosaic, cfa="RGGB", cam_to_srgb=np.eye(4))
        with pytest.raises(ConfigError, match="must be a RawFrame or an .* numpy array, got list"):
            enhance([[0, 1], [2, 3]], cfa="RGGB")
        assert enhance.frames == 0  # nothing was enhanced
        enhance(mosaic, cfa="RGGB")
        # One frame at a time: a call while another runs is refused, not interleaved.
        enhance._busy.acquire()
        try:
            errors = []
            t = threading.Thread(target=lambda: errors.append(_raises(enhance, mosaic)))
            t.start()
            t.join(10)
            assert errors == ["Enhancer called from two threads at once: it enhances one frame at a time"]
        finally:
            enhance._busy.release()
    enhance.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        enhance(mosaic, cfa="RGGB")
    with pytest.raises(ConfigError, match="invalid model 'foo'; valid: redi, classic"):
        redi_stream.Enhancer(model="foo")
    with pytest.raises(ConfigError, match="output bits must be 8 or 16, got 12"):
        redi_stream.Enhancer(model="classic", bits=12)
    with pytest.raises(ConfigError, match="--gain must be in"):
        redi_stream.Enhancer(model="classic", gain=-1)


def _raises(enhance, mosaic) -> str:
    try:
        enhance(mosaic, cfa="RGGB")
    except RuntimeError as exc:
        return str(exc)
    return "no error"


def test_raw_frame_levels_cannot_be_overridden(clip: Path) -> None:
    frame = redi_stream.open_raw(clip).read(1)
    with redi_stream.Enhancer(model="classic") as enhance:
        with pytest.raises(ConfigError, match="a RawFrame carries its own levels"):
            enhance(frame, black=0)
        rgb = enhance(frame)
    assert rgb.shape == (*frame.shape, 3)


def test_open_raw_reads_headerless_frames_with_a_layout(tmp_path: Path) -> None:
    mosaic = np.arange(16 * 24, dtype="<u2").reshape(16, 24) % 1024
    mosaic.tofile(tmp_path / "f0.raw")
    with redi_stream.open_raw(tmp_path, width=24, height=16, cfa="bggr", black=64, white=1023) as src:
        frame = src.read(0)
    np.testing.assert_array_equal(frame.data, mosaic)
    assert frame.meta.cfa is CFA.BGGR and frame.meta.black_level == (64.0,) * 4 and frame.meta.white_level == 1023
    with pytest.raises(CaptureError, match="nothing"):
        redi_stream.open_raw(tmp_path / "nothing")
    with pytest.raises(ConfigError, match="invalid cfa 'rgb'"):
        redi_stream.open_raw(tmp_path, cfa="rgb")


def test_network_frames_match_the_command_lines_within_a_code(tmp_path: Path, clip: Path) -> None:
    """The network's float rounding follows its thread count (the CLI gives a short run every core, the Enhancer
    picks its own): 16-bit frames agree within one code."""
    out = tmp_path / "frames"
    assert app.run(RunConfig(source=str(clip), out=f"{out}/", progress=False)) == 0
    with redi_stream.Enhancer(bits=16) as enhance, redi_stream.open_raw(clip) as src:
        for frame, png in zip(src, sorted(out.glob("*.png")), strict=True):
            diff = np.abs(enhance(frame).astype(np.int32) - _read_png16(png).astype(np.int32))
            assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_bf16_enhancement_is_within_the_8_bit_output_of_fp32() -> None:
    """What ``--precision auto`` runs on an AMX CPU for 8-bit output: the shipped network in bf16 gives the fp32
    picture to within a code value or so (on this machine 55 dB apart at 1080p; a frame's noise is ~25 dB)."""
    from redi_stream.capture import SyntheticSource
    from redi_stream.model import default_weights_path

    if default_weights_path() is None:
        pytest.skip("no default weights in this build")
    frame = SyntheticSource(n_frames=1, size=(192, 256), motion="static", ratio=100).read(0)
    outs = {}
    for precision in ("fp32", "bf16"):
        with redi_stream.Enhancer(precision=precision, device="cpu", gain_smoothing=0) as enhance:
            outs[precision] = enhance(frame).astype(np.float64)
    mse = np.mean((outs["fp32"] - outs["bf16"]) ** 2)
    assert 10 * np.log10(255**2 / mse) > 45
    assert np.mean(np.abs(outs["fp32"] - outs["bf16"]) > 2) < 0.01  # few pixels more than 2 codes apart


def test_a_light_in_the_frame_stays_where_it_is() -> None:
    """A street lamp (or a hot pixel) amplified x110 would be a network input of ~50; the network's coarse-scale
    branch spread that over the whole frame until the packers clipped amplified values at ``INPUT_CEILING``."""
    from redi_stream.capture import SyntheticSource
    from redi_stream.model import default_weights_path

    if default_weights_path() is None:
        pytest.skip("no default weights in this build")
    frame = SyntheticSource(n_frames=1, size=(256, 384), motion="static", ratio=100, seed=0).read(0)
    lamp = frame.data.copy()
    lamp[60:68, 60:68] = 8000  # half of white (16383), ~50x the amplified range
    kw = dict(cfa=frame.meta.cfa.name, black=frame.meta.black_level[0], white=frame.meta.white_level,
              wb_gains=frame.meta.wb_gains)
    with redi_stream.Enhancer(device="cpu", precision="fp32", gain=110.0) as enhance:
        before, after = enhance(frame.data, **kw).astype(int), enhance(lamp, **kw).astype(int)
    changed = np.abs(before - after).max(axis=2) > 8
    changed[:130, :130] = False  # the lamp and its glow
    assert changed.mean() < 0.01  # without the ceiling: 66 % of the frame


def test_hot_pixels_option_replaces_them_before_enhancing() -> None:
    from redi_stream.capture import SyntheticSource

    frame = SyntheticSource(n_frames=1, size=(64, 96), motion="static", ratio=100, seed=1).read(0)
    hot = frame.data.copy()
    hot[30, 41] = 12000
    kw = dict(cfa=frame.meta.cfa.name, black=frame.meta.black_level[0], white=frame.meta.white_level)
    outs = {}
    for on in (False, True):
        with redi_stream.Enhancer(model="classic", gain=100.0, hot_pixels=on) as enhance:
            outs[on] = (enhance(frame.data, **kw).astype(int), enhance(hot, **kw).astype(int))
    clean, blotted = outs[False]
    assert np.abs(blotted - clean).max() > 150  # a bright dot after demosaicing (218 codes here)
    assert np.array_equal(outs[True][0], clean)  # nothing hot in the clean frame: untouched
    # The hot sample becomes its colour's local mean, not the noisy value it would have had: a difference of the
    # noise amplified x100 (50 codes here), well below the dot's.
    assert np.abs(outs[True][1] - clean).max() < np.abs(blotted - clean).max() / 3


ENHANCER_BUILD_PROBE = """
import json, os, time, torch
import redi_stream

def settled_threads():  # a thread just joined (serial_thread's helper) can be listed for a moment after join()
    n = len(os.listdir("/proc/self/task"))
    for _ in range(100):
        time.sleep(0.01)
        m = len(os.listdir("/proc/self/task"))
        if m == n:
            return n
        n = m
    return n

torch.get_num_threads()
before = settled_threads()
enh = redi_stream.Enhancer(precision="fp32")
print(json.dumps({"new_os_threads": settled_threads() - before, "threads": torch.get_num_threads()}))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2 or not os.path.isdir("/proc/self/task"),
                    reason="needs 2+ cores and Linux's /proc to see OpenMP's worker threads")
def test_building_an_enhancer_starts_no_openmp_team_on_the_building_thread() -> None:
    # Calls may come from another thread; an idle team on this one would slow their forwards (serial_thread).
    def probe(prefix: str) -> dict:
        done = subprocess.run([sys.executable, "-c", prefix + ENHANCER_BUILD_PROBE], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    built = probe("")
    unguarded = probe("import contextlib, redi_stream.model.runner as r; r.serial_thread = contextlib.nullcontext\n")
    assert built["new_os_threads"] < unguarded["new_os_threads"]  # without the guard: an OpenMP worker more
    assert built["threads"] == unguarded["threads"]  # the caller's count is back
