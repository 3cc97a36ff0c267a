"""Sinks: playable video with the right frame count, rate, colour tags and colours; image sequences; errors."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from redi_stream.errors import ConfigError, SinkError
from redi_stream.frames import EnhancedFrame
from redi_stream.stream.sinks import (ImageSequenceSink, NullSink, SegmentedVideoSink, VideoSink, fps_to_fraction,
                                      open_sink)

REPO = Path(__file__).resolve().parents[2]


def _frames(n, shape=(64, 96), dtype=np.uint8, fps=24.0, colour=(255, 0, 0)):
    maxv = np.iinfo(dtype).max
    for i in range(n):
        rgb = np.zeros((*shape, 3), dtype)
        for c in range(3):
            rgb[..., c] = colour[c] * maxv // 255
        rgb[0, 0] = i  # distinguishable frames
        yield EnhancedFrame(rgb=rgb, index=i, t_ns=round(i * 1e9 / fps), name=f"f{i}")


def _decode(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc = s.codec_context
        info = dict(rate=s.average_rate, primaries=cc.color_primaries, trc=cc.color_trc, space=cc.colorspace,
                    range=cc.color_range)
        frames = list(c.decode(s))
        info["pts_s"] = [float(f.pts * f.time_base) for f in frames]
        info["rgb"] = [f.to_ndarray(format="rgb24") for f in frames]
    return info


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_video_sink_frames_rate_tags_and_colour(tmp_path, suffix):
    path = tmp_path / f"v{suffix}"
    with VideoSink(path, fps="24000/1001", preset="ultrafast") as sink:
        for f in _frames(10, fps=24000 / 1001):
            sink.write(f)
    info = _decode(path)
    assert len(info["rgb"]) == 10 and sink.frames_written == 10
    assert info["rate"] == Fraction(24000, 1001)
    assert info["pts_s"] == pytest.approx([i * 1001 / 24000 for i in range(10)], abs=1e-3)
    assert (info["primaries"], info["trc"], info["space"], info["range"]) == (1, 1, 1, 1)  # BT.709, tv range
    centre = info["rgb"][3][16:48, 16:80].reshape(-1, 3).mean(0)
    assert centre[0] > 240 and centre[1] < 10 and centre[2] < 10  # red stays red through BT.709 YUV


@pytest.mark.parametrize("yuv", ["kernel", "sws"])
def test_both_yuv_paths_give_the_same_colours(tmp_path, yuv):
    path = tmp_path / f"{yuv}.mkv"
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    rgb = np.repeat(np.repeat(blocks, 16, axis=0), 16, axis=1)  # flat 16x16 patches: no chroma-subsampling loss
    with VideoSink(path, fps=24, crf=0, preset="ultrafast", yuv=yuv) as sink:
        sink.write(EnhancedFrame(rgb=rgb, index=0, t_ns=0))
    got = _decode(path)["rgb"][0].astype(int)
    inner = got.reshape(4, 16, 6, 16, 3)[:, 4:12, :, 4:12].mean(axis=(1, 3))
    assert np.abs(inner - blocks).max() <= 3  # BT.709 limited range round trip


def test_video_sink_encodes_the_frames_yuv420p_planes(tmp_path):
    """A frame carrying yuv420p planes is encoded from them (not from rgb); the sink asks for them."""
    path = tmp_path / "planes.mkv"
    h, w = 32, 48
    rgb = np.zeros((h, w, 3), np.uint8)  # black: what the sink would encode if it ignored the planes
    planes = (np.full((h, w), 180, np.uint8), np.full((h // 2, w // 2), 90, np.uint8),
              np.full((h // 2, w // 2), 200, np.uint8))
    with VideoSink(path, fps=24, crf=0, preset="ultrafast") as sink:
        assert sink.wants_yuv420p
        sink.write(EnhancedFrame(rgb=rgb, index=0, t_ns=0, yuv420p=planes))
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        got = frame.to_ndarray(format="yuv420p")
    np.testing.assert_array_equal(got[:h], planes[0])
    assert np.all(got[h:h + h // 4] == 90) and np.all(got[h + h // 4:] == 200)
    with VideoSink(tmp_path / "x.mkv", fps=24, pix_fmt="yuv444p") as other:
        assert not other.wants_yuv420p


def test_video_sink_odd_size_is_padded_and_uint16_accepted(tmp_path):
    path = tmp_path / "odd.mp4"
    sink = VideoSink(path, fps=25, preset="ultrafast")
    for f in _frames(4, shape=(63, 95), dtype=np.uint16, colour=(0, 0, 255)):
        sink.write(f)
    sink.close()
    sink.close()  # idempotent
    info = _decode(path)
    assert len(info["rgb"]) == 4 and info["rgb"][0].shape == (64, 96, 3)
    edge = info["rgb"][1][:, 94:96].reshape(-1, 3).mean(0)
    assert edge[2] > 230 and edge[0] < 20  # the repeated column carries the image, not black


def test_pts_strictly_increase_even_with_equal_timestamps(tmp_path):
    path = tmp_path / "pts.mp4"
    with VideoSink(path, fps=30, preset="ultrafast") as sink:
        for f in _frames(6):
            f.t_ns = 1_000_000 * (f.index // 2)  # pairs of equal timestamps
            sink.write(f)
    assert len(_decode(path)["rgb"]) == 6


def test_with_block_closes_on_exception_and_file_plays(tmp_path):
    path = tmp_path / "exc.mp4"
    with pytest.raises(RuntimeError):
        with VideoSink(path, fps=24, preset="ultrafast") as sink:
            for f in _frames(5):
                sink.write(f)
            raise RuntimeError("boom")
    assert len(_decode(path)["rgb"]) == 5
    with pytest.raises(SinkError, match="after close"):
        sink.write(next(_frames(1)))


def test_size_change_is_a_sink_error(tmp_path):
    with VideoSink(tmp_path / "s.mp4", preset="ultrafast") as sink:
        sink.write(next(_frames(1, shape=(32, 32))))
        with pytest.raises(SinkError, match="32x32"):
            sink.write(next(_frames(1, shape=(64, 64))))


def test_unwritable_outputs_fail_at_construction(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        VideoSink(tmp_path / "missing" / "out.mp4")
    (tmp_path / "d.mp4").mkdir()
    with pytest.raises(SinkError, match="is a directory"):
        VideoSink(tmp_path / "d.mp4")
    (tmp_path / "file").write_text("x")
    with pytest.raises(SinkError, match="not a directory"):
        ImageSequenceSink(tmp_path / "file")
    with pytest.raises(ConfigError, match=".mp4"):
        VideoSink(tmp_path / "out.avi")
    with pytest.raises(ConfigError, match="libx264"):
        VideoSink(tmp_path / "out.mp4", codec="no-such-codec")
    assert not (tmp_path / "out.mp4").exists()  # the writability probe leaves nothing behind


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root ignores permissions")
def test_permission_denied_at_construction(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(SinkError, match="ermission"):
            VideoSink(ro / "out.mp4")
    finally:
        ro.chmod(0o700)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_disk_full_mid_run_is_a_sink_error_naming_the_file(tmp_path):
    path = tmp_path / "full.mp4"
    path.symlink_to("/dev/full")
    sink = VideoSink(path, fps=24, preset="ultrafast")
    rng = np.random.default_rng(0)
    with pytest.raises(SinkError, match="full.mp4"):
        for i in range(200):  # noise: fragments fill quickly and reach the device
            rgb = rng.integers(0, 255, (128, 192, 3), dtype=np.uint8)
            sink.write(EnhancedFrame(rgb=rgb, index=i, t_ns=round(i * 1e9 / 24)))
    sink.close()  # safe after the failure, and does not raise a second error
    sink.close()


@pytest.mark.parametrize("timecode", [None, "01:00:00:00"])
def test_hard_killed_fragmented_mp4_still_plays(tmp_path, timecode):
    """A run killed without close (os._exit) keeps every complete 1-s fragment (also beside a time-code track)."""
    path = tmp_path / "killed.mp4"
    code = f"""
import os, numpy as np
from redi_stream.frames import EnhancedFrame
from redi_stream.stream.sinks import VideoSink
s = VideoSink({str(path)!r}, fps=24, preset="ultrafast", timecode={timecode!r})
for i in range(70):
    s.write(EnhancedFrame(rgb=np.full((64, 96, 3), i, np.uint8), index=i, t_ns=round(i * 1e9 / 24)))
os._exit(9)
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert r.returncode == 9, r.stderr.decode()
    n = len(_decode(path)["rgb"])
    assert 24 <= n < 70


def test_timecode_reaches_each_file_kind_an_editor_reads(tmp_path):
    for name in ("t.mov", "t.mp4", "t.mkv"):
        with VideoSink(tmp_path / name, fps=Fraction(30000, 1001), timecode="10:59:59;28") as sink:
            for f in _frames(3):
                sink.write(f)
        with av.open(str(tmp_path / name)) as c:
            if name.endswith(".mkv"):
                assert c.metadata.get("TIMECODE") == "10:59:59;28"
            else:  # a QuickTime tmcd track, which editors conform by
                tmcd = [st for st in c.streams if st.type == "data"]
                assert [st.metadata.get("timecode") for st in tmcd] == ["10:59:59;28"]
            assert len(list(c.decode(video=0))) == 3
    with pytest.raises(ConfigError, match="invalid time code '25:00:00:00'; give HH:MM:SS:FF"):
        VideoSink(tmp_path / "bad.mov", timecode="25:00:00:00")


def test_segments_hold_every_frame_once_each_file_timed_from_zero(tmp_path, caplog):
    sink = open_sink(tmp_path / "rec.mp4", 24, segment_s=1.0, timecode="01:00:00:00")
    assert isinstance(sink, SegmentedVideoSink)
    with sink:
        for i in range(60):  # frame i is grey level 4 i, so the decoded files tell which frames they hold
            sink.write(EnhancedFrame(rgb=np.full((64, 96, 3), 4 * i, np.uint8), index=i, t_ns=round(i * 1e9 / 24)))
    assert [p.name for p in sink.paths] == ["rec_000.mp4", "rec_001.mp4", "rec_002.mp4"] and sink.frames_written == 60
    with caplog.at_level("WARNING"):
        SegmentedVideoSink(tmp_path / "rec.mp4", 1.0).close()  # a second recording under the same name
    assert "already holds 3 files of a recording named so (rec_000.mp4 ... rec_002.mp4)" in caplog.text
    seen = []
    for k, path in enumerate(sink.paths):
        info = _decode(path)
        assert info["pts_s"][0] == 0.0 and len(info["rgb"]) == (24, 24, 12)[k]
        seen += [round(rgb.mean() / 4) for rgb in info["rgb"]]
        with av.open(str(path)) as c:  # the time code belongs to the first file
            codes = [st.metadata.get("timecode") for st in c.streams if st.type == "data"]
        assert codes == (["01:00:00:00"] if k == 0 else [])
    assert seen == list(range(60))


def test_a_failed_segment_keeps_every_finished_file(tmp_path, monkeypatch):
    real_write = VideoSink.write

    def failing(self, frame):  # the disk fills up inside the second file, after 10 of its frames reached it
        if frame.index == 40:
            self.frames_kept = 10
            raise SinkError(f"cannot write {self.name}: [Errno 28] No space left on device")
        real_write(self, frame)

    monkeypatch.setattr(VideoSink, "write", failing)
    sink = SegmentedVideoSink(tmp_path / "rec.mp4", 1.0, fps=24)
    with pytest.raises(SinkError, match="rec_001.mp4: \\[Errno 28\\]"):
        for f in _frames(60):
            sink.write(f)
    sink.close()
    assert sink.frames_written == 40 and sink.frames_kept == 24 + 10
    assert len(_decode(sink.paths[0])["rgb"]) == 24  # the finished file is whole


def test_segment_names_from_the_clock_and_what_is_refused(tmp_path, monkeypatch):
    import time as time_module

    monkeypatch.setattr(time_module, "strftime", lambda fmt, *a: fmt.replace("%H%M%S", "120000"))
    with open_sink(tmp_path / "cam_%H%M%S.mkv", 24, segment_s=0.5) as sink:
        for f in _frames(30):
            sink.write(f)
    # All begun in the same (frozen) second: the later ones are told apart by their number.
    assert [p.name for p in sink.paths] == ["cam_120000.mkv", "cam_120000_001.mkv", "cam_120000_002.mkv"]
    stream = open_sink("udp://127.0.0.1:9", 24, segment_s=1.0)  # a stream is not cut (nothing sent before frame 0)
    assert isinstance(stream, VideoSink)
    stream.close()
    with pytest.raises(ConfigError, match="--segment cuts video files, not a stream such as udp://h:1"):
        SegmentedVideoSink("udp://h:1", 1.0)
    with pytest.raises(ConfigError, match="segment length must be a positive number of seconds"):
        SegmentedVideoSink(tmp_path / "x.mp4", 0)
    assert not (tmp_path / "x_000.mp4").exists()


def test_image_sequence_sink_16bit_png_rgb_order(tmp_path):
    out = tmp_path / "frames"
    sink = ImageSequenceSink(out)  # created
    for f in _frames(3, colour=(255, 128, 0)):
        sink.write(f)
    sink.close()
    sink.close()
    files = sorted(out.glob("*.png"))
    assert [p.name for p in files] == ["frame_000000.png", "frame_000001.png", "frame_000002.png"]
    img = cv2.imread(str(files[1]), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (64, 96, 3)
    rgb = img[..., ::-1]
    assert tuple(rgb[10, 10]) == (65535, 128 * 257, 0)


def test_image_sequence_keeps_source_names_for_stills(tmp_path):
    sink = open_sink(tmp_path / "out", keep_names=True, bits=8)
    rgb = np.zeros((4, 6, 3), np.uint8)
    for i, name in enumerate(["DSC01234.ARW", "stack.npy[3]", "dump.raw[12]", ""]):
        sink.write(EnhancedFrame(rgb=rgb, index=i, t_ns=0, name=name))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "DSC01234.png", "dump_000012.png", "frame_000003.png", "stack_000003.png"]  # no name: its number


def test_image_sequence_warns_of_a_previous_runs_frames(tmp_path, caplog):
    import logging

    frame = EnhancedFrame(rgb=np.zeros((4, 6, 3), np.uint8), index=0, t_ns=0)
    for i in range(3):
        (tmp_path / f"frame_{i:06d}.png").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING):
        ImageSequenceSink(tmp_path).write(frame)
    assert "already holds 3 frame files (frame_000000.png ... frame_000002.png)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        ImageSequenceSink(tmp_path / "fresh", fmt="tiff").write(frame)
        ImageSequenceSink(tmp_path, fmt="tiff")  # .tif frames: the .png ones are another sequence
    assert "already holds" not in caplog.text


def test_image_sequence_tiff_from_uint16_and_8bit_option(tmp_path):
    sink = open_sink(tmp_path / "t" / "shot_%04d.tif", bits=16)
    assert isinstance(sink, ImageSequenceSink) and sink.fmt == "tiff" and sink.prefix == "shot_"
    for f in _frames(2, dtype=np.uint16, colour=(0, 0, 255)):
        sink.write(f)
    img = cv2.imread(str(tmp_path / "t" / "shot_0001.tif"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and tuple(img[5, 5]) == (65535, 0, 0)  # BGR on disk = blue
    import tifffile

    with tifffile.TiffFile(tmp_path / "t" / "shot_0001.tif") as tf:  # stored: LZW was slower and larger on grain
        assert tf.pages.first.compression == 1
    s8 = ImageSequenceSink(tmp_path / "e", bits=8)
    s8.write(next(_frames(1, dtype=np.uint16)))
    assert cv2.imread(str(tmp_path / "e" / "frame_000000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8


def test_open_sink_dispatch(tmp_path):
    assert isinstance(open_sink(tmp_path / "a.mp4", 24, crf=20, bits=16, image_format="png"), VideoSink)
    assert isinstance(open_sink(tmp_path / "b.MKV", 24), VideoSink)
    assert isinstance(open_sink(str(tmp_path / "seq") + "/", 24, codec="libx264"), ImageSequenceSink)
    assert open_sink(tmp_path / "seq2", image_format="tiff").fmt == "tiff"
    assert isinstance(open_sink("null"), NullSink)
    with pytest.raises(ConfigError, match="valid"):
        open_sink(tmp_path / "x.gif")
    with pytest.raises(TypeError):
        open_sink(tmp_path / "x.mp4", quality=3)
    with pytest.raises(ConfigError, match="invalid preset 'turbo' for libx264; valid: ultrafast, superfast, "):
        open_sink(tmp_path / "x.mp4", 24, preset="turbo")  # before any frame, not from x264 at the first one
    assert not (tmp_path / "x.mp4").exists()
    assert open_sink(tmp_path / "m.mp4", 24, codec="mpeg4", preset="turbo").preset == "turbo"  # x26x only


def test_a_still_is_written_under_its_own_name(tmp_path):
    """One frame to ``shot.png`` is shot.png (not shot_000000.png); a second frame is refused."""
    frame = next(_frames(1))
    with open_sink(tmp_path / "shot.png", single=True) as sink:
        sink.write(frame)
        with pytest.raises(SinkError, match="shot.png holds one still; for a sequence give a folder"):
            sink.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]
    assert cv2.imread(str(tmp_path / "shot.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    with open_sink(tmp_path / "seq.png") as sink:  # not known to be one frame: a numbered sequence
        sink.write(frame)
    assert (tmp_path / "seq_000000.png").exists()


@pytest.mark.parametrize("target", ["still.jpg", "frames/"])
def test_jpeg_frames_are_8_bit_and_keep_their_colour(tmp_path, target):
    opts = {"single": True} if target.endswith(".jpg") else {"image_format": "jpeg"}
    with open_sink(f"{tmp_path}/{target}", bits=16, **opts) as sink:  # JPEG is 8-bit whatever --bits says
        for f in _frames(1, colour=(200, 40, 90)):
            sink.write(f)
    path = tmp_path / "still.jpg" if target.endswith(".jpg") else tmp_path / "frames" / "frame_000000.jpg"
    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    assert img.dtype == np.uint8
    np.testing.assert_allclose(img[8:, 8:].reshape(-1, 3).mean(0), (200, 40, 90), atol=2)


def test_fps_to_fraction():
    assert fps_to_fraction(23.976) == Fraction(24000, 1001)
    assert fps_to_fraction(29.97) == Fraction(30000, 1001)
    assert fps_to_fraction(59.94) == Fraction(60000, 1001)
    assert fps_to_fraction(25) == 25 and fps_to_fraction(12.5) == Fraction(25, 2)
    assert fps_to_fraction("24000/1001") == Fraction(24000, 1001)
    with pytest.raises(ConfigError):
        fps_to_fraction(0)
    with pytest.raises(ConfigError):
        fps_to_fraction("fast")


def test_x265_writes_no_banner_to_stderr(tmp_path, capfd):
    import av

    if "libx265" not in av.codecs_available:
        pytest.skip("this FFmpeg has no libx265")
    sink = VideoSink(tmp_path / "h.mp4", fps=24, codec="libx265", pix_fmt="yuv420p10le")
    for i in range(2):
        sink.write(EnhancedFrame(rgb=np.full((64, 96, 3), 1000 * (i + 1), np.uint16), index=i, t_ns=i * 41_666_667))
    sink.close()
    assert "x265 [info]" not in capfd.readouterr().err
    with av.open(str(tmp_path / "h.mp4")) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le" and len(list(c.decode(video=0))) == 2
    # Frames too narrow for it are refused before x265 sees them (it would abort the process).
    narrow = VideoSink(tmp_path / "n.mp4", fps=24, codec="libx265")
    with pytest.raises(SinkError, match="libx265 cannot encode frames narrower than 64 pixels \\(these are 48\\)"):
        narrow.write(EnhancedFrame(rgb=np.zeros((64, 48, 3), np.uint8), index=0, t_ns=0))
    narrow.close()


def _textured(n, shape=(128, 128), fps=24.0):
    """Grey frames (nothing for 4:2:0 to lose) with fine detail everywhere, so a starved bitrate shows."""
    rng = np.random.default_rng(3)
    grey = cv2.GaussianBlur(rng.integers(0, 256, shape).astype(np.float32), (0, 0), 1.5)
    grey = np.clip((grey - grey.mean()) * 4 + 128, 0, 255).astype(np.uint8)
    base = np.repeat(grey[:, :, None], 3, axis=2)
    for i in range(n):
        yield EnhancedFrame(rgb=np.roll(base, i, axis=1), index=i, t_ns=round(i * 1e9 / fps), name=f"f{i}")


@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".mkv"), ("libvpx-vp9", ".mkv"), ("libx264", ".mp4"),
                                          ("libsvtav1", ".webm")])
def test_crf_gives_every_mapped_encoder_constant_quality(tmp_path, codec, suffix):
    """crf 18 must mean high quality for each encoder it is mapped to, not FFmpeg's defaults (mpeg4: 200 kb/s)."""
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg")
    path = tmp_path / f"q{suffix}"
    frames = list(_textured(6, shape=(360, 480)))
    with VideoSink(path, codec=codec, crf=18) as sink:
        for f in frames:
            sink.write(f)
    decoded = _decode(path)["rgb"]
    assert len(decoded) == 6
    err = np.mean([(d.astype(np.float64) - f.rgb) ** 2 for d, f in zip(decoded, frames)])
    # 42.8-46.7 dB here; without the mapping mpeg4 33, libx264 35, libsvtav1 (its default crf 35) 42.8
    assert 10 * np.log10(255**2 / err) > (45 if codec == "libsvtav1" else 40)


def test_webm_holds_vp9_by_default_and_refuses_h264(tmp_path):
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this FFmpeg has no libvpx-vp9")
    path = tmp_path / "w.webm"
    with open_sink(path, 24) as sink:
        for f in _frames(5):
            sink.write(f)
    with av.open(str(path)) as c:
        assert c.format.name.endswith("webm") and c.streams.video[0].codec_context.name == "vp9"
        assert len(list(c.decode(video=0))) == 5
    with pytest.raises(ConfigError, match="a WebM file holds VP8, VP9 or AV1 video, not libx264"):
        open_sink(tmp_path / "h.webm", 24, codec="libx264")
    assert not (tmp_path / "h.webm").exists()


@pytest.mark.parametrize("codec, profile", [("prores", "HQ"), ("prores_ks", "HQ"), ("dnxhd", "DNXHR HQX")])
def test_editing_codecs_get_10_bit_422_and_a_profile_without_being_told(tmp_path, codec, profile):
    """ProRes and DNxHR take no 4:2:0: unasked they get 10-bit 4:2:2 (DNxHR its HQX profile, which takes any frame
    size), and the 16-bit frames' extra bits reach the file."""
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg")
    path = tmp_path / "edit.mov"
    ramp = np.linspace(0, 65535, 270 * 480, dtype=np.float64).reshape(270, 480)
    rgb = np.repeat(ramp[:, :, None], 3, axis=2).astype(np.uint16)
    with VideoSink(path, codec=codec) as sink:
        for i in range(3):
            sink.write(EnhancedFrame(rgb=rgb, index=i, t_ns=round(i * 1e9 / 24), name=f"f{i}"))
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.pix_fmt, cc.profile, cc.width, cc.height) == ("yuv422p10le", profile, 480, 270)
        frames = [f.to_ndarray(format="gray16le") for f in c.decode(video=0)]
    assert len(frames) == 3
    # A smooth 16-bit ramp keeps more than 8 bits of levels (an 8-bit path would leave at most 220).
    assert len(np.unique(frames[0] >> 6)) > 400


def test_a_container_that_cannot_hold_the_encoder_is_refused_with_the_ones_that_can(tmp_path):
    for name, codec, says in [
        ("p.mp4", "prores_ks", "a .mp4 file cannot hold prores_ks video; write .mov or .mkv$"),
        ("d.mkv", "dnxhd", "a .mkv file cannot hold dnxhd video; write .mov$"),
        ("v.mov", "libvpx-vp9", "a .mov file cannot hold libvpx-vp9 video; write .mp4 or .mkv or .webm$"),
        ("p.ts", "prores_ks", "MPEG-TS carries H.264 or HEVC video, not prores_ks; use --codec libx264 or libx265, "
                              "or write .mov or .mkv$"),
    ]:
        if codec not in av.codecs_available:
            continue
        with pytest.raises(ConfigError, match=says):
            VideoSink(tmp_path / name, codec=codec)
        assert not (tmp_path / name).exists()


def test_a_pixel_format_the_encoder_lacks_is_refused_before_any_frame(tmp_path):
    with pytest.raises(ConfigError, match="mpeg4 in this FFmpeg cannot encode yuv444p; it can: yuv420p$"):
        VideoSink(tmp_path / "m.mp4", codec="mpeg4", pix_fmt="yuv444p")
    assert not (tmp_path / "m.mp4").exists()


def test_svt_av1_writes_no_banner_to_stderr(tmp_path, capfd):
    if "libsvtav1" not in av.codecs_available:
        pytest.skip("this FFmpeg has no libsvtav1")
    with VideoSink(tmp_path / "a.mkv", codec="libsvtav1") as sink:
        for f in _frames(2, shape=(64, 96)):
            sink.write(f)
    assert "Svt[" not in capfd.readouterr().err


def test_a_hardware_encoder_without_its_device_fails_before_any_frame(tmp_path):
    if "h264_nvenc" not in av.codecs_available:
        pytest.skip("this FFmpeg has no h264_nvenc")
    cc = av.CodecContext.create("h264_nvenc", "w")
    cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 256, "yuv420p", Fraction(1, 25)
    try:
        cc.open()
        pytest.skip("NVENC works on this machine")
    except (av.FFmpegError, OSError):
        pass
    with pytest.raises(SinkError, match="encoder h264_nvenc cannot start on this machine"):
        VideoSink(tmp_path / "n.mp4", codec="h264_nvenc")
    assert not (tmp_path / "n.mp4").exists()


X265_CHILD = """
import sys
import numpy as np
import redi_stream.stream  # every library a run loads: the abort depended on the memory layout they give
from redi_stream.frames import EnhancedFrame
from redi_stream.stream.sinks import VideoSink
with VideoSink(sys.argv[1], fps=24, codec="libx265", pix_fmt="yuv420p10le") as sink:
    for i in range(2):
        sink.write(EnhancedFrame(rgb=np.full((64, 96, 3), 1000 * (i + 1), np.uint16), index=i, t_ns=i * 41_666_667))
"""


def test_x265_clips_never_abort_the_process_at_the_trailer(tmp_path):
    """With B-frames, libx265 packets came out with garbage timestamps now and then and FFmpeg's MP4 muxer aborted
    the process in av_write_trailer (6 runs in 16). Each run is a child process, so an abort fails the test only."""
    if "libx265" not in av.codecs_available:
        pytest.skip("this FFmpeg has no libx265")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for k in range(8):
        out = tmp_path / f"h{k}.mp4"
        proc = subprocess.run([sys.executable, "-c", X265_CHILD, str(out)], env=env, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, (k, proc.returncode, proc.stderr[-2000:])
        with av.open(str(out)) as c:
            pts = [f.pts for f in c.decode(video=0)]
        assert len(pts) == 2 and pts[0] < pts[1], pts


def test_an_earlier_file_is_left_alone_by_an_empty_run_and_replaced_with_a_notice(tmp_path, caplog):
    old = tmp_path / "v.mp4"
    old.write_bytes(b"an earlier run's video")
    VideoSink(old).close()  # e.g. the run failed at frame 0
    assert old.read_bytes() == b"an earlier run's video"
    assert "no frames were written; the existing file is left as it was" in caplog.text
    with caplog.at_level("INFO"), VideoSink(old) as sink:
        sink.write(next(_frames(1)))
    assert "v.mp4: replacing the existing file" in caplog.text and _decode(old)["rgb"]
    VideoSink(tmp_path / "new.mp4").close()
    assert not (tmp_path / "new.mp4").exists() and "new.mp4: no frames were written; no file created" in caplog.text


def test_an_encoder_that_fails_on_the_first_frame_leaves_an_earlier_file_intact(tmp_path, caplog):
    """PyAV writes the file from its first packet: a run whose encoder would not open touched nothing, so the
    earlier file at the path must stay whole (the torn-fragment cut truncated a classic MP4 of 2,347 bytes to 888)."""
    path = tmp_path / "keep.mp4"
    with VideoSink(path, fragmented=False) as sink:
        for f in _frames(10):
            sink.write(f)
    before = path.read_bytes()
    bad = VideoSink(path, options={"x264-params": "bogus=1:nonsense"})  # x264 refuses to open
    with pytest.raises(SinkError, match="cannot write"):
        bad.write(next(_frames(1)))
    bad.close()
    assert path.read_bytes() == before and bad.frames_kept is None
    assert "no frame reached the file; the existing file is left as it was" in caplog.text


def test_qp_is_a_constant_quantiser_for_x264_only_where_it_applies(tmp_path):
    sink = VideoSink(tmp_path / "q.mp4", qp=22)
    assert sink._codec_options() == {"qp": "22", "preset": "ultrafast"}  # no crf: no per-frame analysis
    frames = list(_textured(4, shape=(96, 128)))
    with sink:
        for f in frames:
            sink.write(f)
    assert len(_decode(tmp_path / "q.mp4")["rgb"]) == 4
    with pytest.raises(ConfigError, match="applies to libx264 and libx265, not libvpx-vp9"):
        VideoSink(tmp_path / "v.webm", qp=22)
    with pytest.raises(ConfigError, match="qp must be in 0..51"):
        VideoSink(tmp_path / "q.mp4", qp=52)
