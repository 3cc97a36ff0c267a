"""Camera device layer: spec parsing, V4L2 format choice and queries, buffer shaping, OpenCV devices on real video
files, the fake sensor's rate limit and formats, and fast one-line errors."""

from __future__ import annotations

import os
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from redi_stream.capture.camera import (
    CameraDevice,
    FakeBayerDevice,
    PixelFormat,
    PixelLayout,
    SpecKind,
    fourcc_to_int,
    fourcc_to_str,
    normalize_fourcc,
    open_device,
    pack_raw10,
    pack_raw12,
    parse_camera_spec,
    pick_raw_fourcc,
    query_v4l2,
    shape_frame,
)
from redi_stream.errors import CaptureError, ConfigError
from redi_stream.frames import CFA
from redi_stream.kernels import reference


def write_video(path: Path, n: int = 12, size=(96, 64), fps: float = 100.0) -> Path:
    """A small MJPG AVI whose frame i is a flat BGR colour with i in the blue channel (written on the fly)."""
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened()
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:] = (10 * i % 256, 120, 200)
        vw.write(img)
    vw.release()
    return path


# -- specs ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, value",
    [("0", SpecKind.INDEX, 0), ("12", SpecKind.INDEX, 12), ("/dev/video3", SpecKind.DEVICE, "/dev/video3"),
     ("rtsp://cam/stream", SpecKind.URL, "rtsp://cam/stream"), ("clip.mp4", SpecKind.FILE, "clip.mp4")],
)
def test_parse_camera_spec(text, kind, value):
    spec = parse_camera_spec(text)
    assert (spec.kind, spec.value) == (kind, value)
    assert spec.label == f"camera {text}"


@pytest.mark.parametrize(
    "text, size, fps, fourcc",
    [("fake", (720, 1280), 30.0, None), ("fake:720p30", (720, 1280), 30.0, None),
     ("fake:1080p60:pRAA", (1080, 1920), 60.0, "pRAA"), ("fake:640x480@15:bgr", (480, 640), 15.0, "bgr"),
     ("fake:96x64@200:rg10", (64, 96), 200.0, "RG10")],
)
def test_parse_fake_spec(text, size, fps, fourcc):
    spec = parse_camera_spec(text)
    assert spec.kind is SpecKind.FAKE
    assert (spec.fake_size, spec.fake_fps, spec.fake_fourcc) == (size, fps, fourcc)


@pytest.mark.parametrize("text", ["", "fake:720p30:XXXX", "fake:720q", "fake:99x64@30", "fake:720p30:Y16"])
def test_bad_specs_are_config_errors(text):
    with pytest.raises(ConfigError):
        parse_camera_spec(text)


def test_fourcc_helpers():
    assert normalize_fourcc("y16") == "Y16 "
    assert normalize_fourcc("rg12") == "RG12"
    assert normalize_fourcc("mjpg") == "MJPG"
    assert normalize_fourcc("pgAA") == "pgAA" and normalize_fourcc("pGAA") == "pGAA"  # differ only in case
    assert fourcc_to_str(fourcc_to_int("pRAA")) == "pRAA"
    assert fourcc_to_str(0) == "" and fourcc_to_str(-1.0) == ""
    with pytest.raises(ConfigError):
        normalize_fourcc("TOOLONG")


def test_pick_raw_fourcc_prefers_bits_then_unpacked_and_skips_mono_unless_asked():
    assert pick_raw_fourcc(["YUYV", "MJPG"]) is None
    assert pick_raw_fourcc(["YUYV", "BA81", "pRAA"]) == "pRAA"  # 10 > 8 bits
    assert pick_raw_fourcc(["pRAA", "RG10"]) == "RG10"  # same bits: no CPU unpacking
    assert pick_raw_fourcc(["pRCC", "RG10"]) == "pRCC"  # 12 bits packed beat 10 bits unpacked
    assert pick_raw_fourcc(["Y16 ", "GREY"]) is None
    assert pick_raw_fourcc(["Y16 ", "GREY"], mono_is_bayer=True) == "Y16 "


# -- V4L2 query (ioctl injected) -----------------------------------------------------------------------------------


def test_query_v4l2_parses_capability_and_formats(tmp_path):
    node = tmp_path / "video9"
    node.write_bytes(b"")
    offered = ["YUYV", "pRAA", "RG10"]

    def ioctl(fd, request, arg):
        if request == 0x80685600:  # VIDIOC_QUERYCAP
            buf = bytearray(104)
            buf[0:6] = b"uvcvid"
            buf[16:26] = b"Test Cam 9"
            struct.pack_into("<II", buf, 84, 0x80000001, 0x00000001)  # DEVICE_CAPS | capture
            return bytes(buf)
        assert request == 0xC0405602 and len(arg) == 64  # VIDIOC_ENUM_FMT, struct v4l2_fmtdesc
        index, typ = struct.unpack_from("<II", arg, 0)
        assert typ == 1
        if index >= len(offered):
            raise OSError(22, "Invalid argument")
        out = bytearray(arg)
        struct.pack_into("<I", out, 44, fourcc_to_int(offered[index]))
        return bytes(out)

    info = query_v4l2(str(node), ioctl=ioctl)
    assert info is not None
    assert (info.card, info.driver, info.can_capture, info.formats) == ("Test Cam 9", "uvcvid", True, tuple(offered))
    assert query_v4l2(str(tmp_path / "missing"), ioctl=ioctl) is None


# -- buffer shaping ---------------------------------------------------------------------------------------------


def test_shape_frame_views_opencv_rows_with_stride_padding():
    h, w = 4, 6
    px = np.arange(h * w, dtype=np.uint16).reshape(h, w) * 7
    # 8-bit Bayer, lines padded to 8 bytes, delivered as one (1, bytesused) row.
    padded = np.zeros((h, 8), np.uint8)
    padded[:, :w] = px.astype(np.uint8)
    out = shape_frame(padded.reshape(1, -1), PixelLayout(PixelFormat.BAYER8, w, h, 8, CFA.BGGR, "BA81"))
    np.testing.assert_array_equal(out, px.astype(np.uint8))
    # 16-bit container (RG12) as bytes.
    out16 = shape_frame(px.astype("<u2").view(np.uint8).reshape(1, -1),
                        PixelLayout(PixelFormat.BAYER16, w, h, 12, CFA.RGGB, "RG12"))
    np.testing.assert_array_equal(out16, px)
    # Y16 comes as (H, W) uint16 already: returned as is.
    assert shape_frame(px, PixelLayout(PixelFormat.BAYER16, w, h, 16, None, "Y16 ")) is px
    # MIPI RAW10: (H, stride) bytes for the unpacker.
    packed = pack_raw10(px & 1023)
    lines = shape_frame(packed.reshape(1, -1), PixelLayout(PixelFormat.RAW10, w, h, 10, CFA.RGGB, "pRAA"))
    np.testing.assert_array_equal(reference.unpack_raw10(lines, w), px & 1023)


def test_shape_frame_rejects_wrong_sizes():
    lay = PixelLayout(PixelFormat.BAYER16, 6, 4, 12, CFA.RGGB, "RG12")
    with pytest.raises(CaptureError, match="whole lines"):
        shape_frame(np.zeros((1, 47), np.uint8), lay, "camera 7")
    with pytest.raises(CaptureError, match="camera 7"):
        shape_frame(np.zeros((1, 40), np.uint8), lay, "camera 7")  # 10 bytes per line < 12


@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 8, 13])
def test_mipi_packers_round_trip_with_the_reference_unpackers(w):
    rng = np.random.default_rng(w)
    px10 = rng.integers(0, 1024, (3, w), dtype=np.uint16)
    px12 = rng.integers(0, 4096, (3, w), dtype=np.uint16)
    np.testing.assert_array_equal(reference.unpack_raw10(pack_raw10(px10), w), px10)
    np.testing.assert_array_equal(reference.unpack_raw12(pack_raw12(px12), w), px12)


# -- the fake sensor ------------------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_000_000_000

    def __call__(self) -> int:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += round(s * 1e9)


def test_fake_device_is_rate_limited_and_counts_missed_frames():
    clock = FakeClock()
    dev = FakeBayerDevice(32, 16, 100.0, patterns=2, clock=clock, sleep=clock.sleep)
    times = [dev.read()[1] for _ in range(5)]
    assert np.diff(times).tolist() == [10_000_000] * 4  # one frame per 10 ms
    clock.t += 55_000_000  # the reader comes 5.5 frame periods late: a sensor does not wait
    arr, t = dev.read()  # frames 5..8 were missed; frame 9 (captured at +90 ms) is the newest
    assert dev.frames_missed == 4 and dev.last_seq == 9
    assert t == times[0] + 90_000_000 and clock.t == times[0] + 95_000_000  # its capture time, not the read's
    assert dev.read()[1] - t == 10_000_000  # back on the frame grid
    dev.close()
    dev.close()
    with pytest.raises(CaptureError, match="closed"):
        dev.read()


@pytest.mark.parametrize(
    "fourcc, fmt, shape, dtype, maxval",
    [("RG12", PixelFormat.BAYER16, (16, 32), np.uint16, 4095), ("BA81", PixelFormat.BAYER8, (16, 32), np.uint8, 255),
     ("pRAA", PixelFormat.RAW10, (16, 40), np.uint8, 255), ("pRCC", PixelFormat.RAW12, (16, 48), np.uint8, 255),
     ("bgr", PixelFormat.BGR, (16, 32, 3), np.uint8, 255)],
)
def test_fake_device_formats(fourcc, fmt, shape, dtype, maxval):
    dev = FakeBayerDevice(32, 16, 1000.0, fourcc=fourcc, patterns=2)
    arr, t_ns = dev.read()
    assert dev.layout.format is fmt and arr.shape == shape and arr.dtype == dtype and arr.max() <= maxval
    assert abs(t_ns - time.monotonic_ns()) < 1e9
    arr[...] = 0  # the caller owns the copy: the device's frames are untouched
    assert dev.read()[0].any()
    if fmt.is_raw:
        assert dev.layout.black_level is not None and dev.layout.white_level == 2**dev.layout.bits - 1


def test_fake_device_unplug_after():
    dev = FakeBayerDevice(8, 8, 1000.0, patterns=1, unplug_after=3)
    for _ in range(3):
        dev.read()
    with pytest.raises(CaptureError, match="unplugged"):
        dev.read()


def test_open_device_fake_spec_overrides():
    dev = open_device("fake:96x64@500:RG10", fps=250)
    assert dev.layout.describe() == "96x64 'RG10' 10-bit Bayer RGGB" and dev.fps == 250
    assert dev.name == "fake camera 96x64@500:RG10"


# -- OpenCV devices ------------------------------------------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux") or os.path.exists("/dev/video0"),
                    reason="needs a Linux machine without /dev/video0")
def test_missing_camera_index_is_one_fast_line():
    t0 = time.monotonic()
    with pytest.raises(CaptureError) as ei:
        CameraDevice(0)
    assert time.monotonic() - t0 < 0.5
    assert str(ei.value) == "camera 0: no such device (/dev/video0 does not exist)"
    assert isinstance(ei.value, OSError)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(CaptureError, match="no such device or file"):
        CameraDevice(str(tmp_path / "none.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_text("not a video")
    with pytest.raises(CaptureError, match="junk.mp4: cannot open"):
        CameraDevice(str(junk), quiet_stderr=True)


def test_video_file_as_a_camera(tmp_path):
    path = write_video(tmp_path / "clip.avi", n=12, fps=100.0)
    t0 = time.monotonic()
    with CameraDevice(str(path), width=1920, height=1080, fps=5) as dev:  # requests do not apply to a file
        assert dev.finite and dev.fps == 100.0
        assert dev.layout.format is PixelFormat.BGR and (dev.layout.width, dev.layout.height) == (96, 64)
        frames = []
        while (got := dev.read()) is not None:
            frames.append(got)
        assert dev.read() is None
    elapsed = time.monotonic() - t0
    assert len(frames) == 12 and elapsed >= 0.1  # paced at the file's 100 fps, like a camera
    arr, _ = frames[3]
    assert arr.shape == (64, 96, 3) and arr.dtype == np.uint8
    assert abs(int(arr[10, 10, 0]) - 30) <= 6  # blue channel carries the frame number (MJPG is lossy)
    ts = [t for _, t in frames]
    assert all(b > a for a, b in zip(ts, ts[1:]))
    with pytest.raises(CaptureError, match="closed"):
        dev.read()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_device_users_names_the_process_holding_the_node(tmp_path):
    import subprocess

    from redi_stream.capture.camera import device_users

    node = tmp_path / "video7"
    node.write_bytes(b"")
    code = f"f = open({str(node)!r}); import sys; print('ready', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        users = device_users(str(node))
        assert any(u.startswith(f"pid {holder.pid} (") for u in users)
    finally:
        holder.stdin.close()
        holder.wait(10)
    assert device_users(str(node)) == []
