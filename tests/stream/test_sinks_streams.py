"""Video to a stream: MPEG-TS files, standard output and network URLs (udp, tcp), and the refusals around them."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest

from redi_stream.capture import make_dng
from redi_stream.errors import ConfigError, SinkError
from redi_stream.frames import EnhancedFrame
from redi_stream.stream.sinks import (STREAM_SCHEMES, VideoSink, check_container_codec, container_format,
                                      is_video_target, open_sink)


def _frames(n: int, shape=(64, 96), fps: float = 25.0):
    for i in range(n):
        rgb = np.zeros((*shape, 3), np.uint8)
        rgb[..., 0] = 200
        rgb[: 4 + 4 * i, :8] = 255  # a bar that grows: frames differ
        yield EnhancedFrame(rgb=rgb, index=i, t_ns=round(i * 1e9 / fps), name=f"f{i}")


def _decoded(data: bytes) -> tuple[str, str, list[np.ndarray]]:
    with av.open(io.BytesIO(data), format="mpegts") as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return c.format.name, s.codec_context.name, frames


def test_targets_and_their_containers() -> None:
    assert all(is_video_target(t) for t in ("-", "a.ts", "udp://239.0.0.1:5000", "rtmp://h/live/k", "srt://h:1"))
    assert not is_video_target("frames/") and not is_video_target("a.ts/")
    assert container_format("-") == container_format("a.TS") == container_format("udp://h:1") == "mpegts"
    assert container_format("rtmp://h/app/key") == "flv"
    assert container_format("a.mp4") is None
    with pytest.raises(ConfigError, match="cannot stream to srt://h:1: unsupported scheme 'srt'; valid: "
                                          + ", ".join(STREAM_SCHEMES)):
        container_format("srt://h:1")
    with pytest.raises(ConfigError, match="MPEG-TS carries H.264 or HEVC video, not libvpx-vp9"):
        check_container_codec("-", "libvpx-vp9")
    with pytest.raises(ConfigError, match="RTMP \\(FLV\\) carries H.264 video, not libx265"):
        check_container_codec("rtmp://h/app/key", "libx265")
    with pytest.raises(ConfigError, match="a WebM file holds VP8, VP9 or AV1 video, not libx264"):
        check_container_codec("a.webm", "libx264")
    check_container_codec("udp://h:1", "libx265")
    assert container_format("rtsp://h:8554/enhanced") == "rtsp"
    with pytest.raises(ConfigError, match="RTSP here carries H.264 or HEVC video, not libvpx-vp9"):
        check_container_codec("rtsp://h:8554/enhanced", "libvpx-vp9")
    for url in ("http://h/x", "srt://h:9000"):
        with pytest.raises(ConfigError, match=f"unsupported scheme '{url.split(':')[0]}'"):
            open_sink(url)


def test_ts_file_holds_every_frame_even_when_cut(tmp_path: Path) -> None:
    path = tmp_path / "v.ts"
    with VideoSink(path, fps=25) as sink:
        for f in _frames(12):
            sink.write(f)
    data = path.read_bytes()
    fmt, codec, frames = _decoded(data)
    assert (fmt, codec, len(frames)) == ("mpegts", "h264", 12)
    assert frames[0][:, :8, 0].mean() < frames[11][:, :8, 0].mean() + 1  # the bar grew
    # MPEG-TS needs no index: a file cut anywhere decodes up to the cut.
    assert 3 <= len(_decoded(data[: len(data) * 2 // 3 // 188 * 188])[2]) < 12


def test_stdout_carries_mpegts_and_logs_stay_on_stderr(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=5, size=(64, 96), fps=25.0, ratio=100)
    run = subprocess.run([sys.executable, "-m", "redi_stream", str(clip), "--out", "-", "--model", "classic",
                          "--no-progress"], capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    fmt, codec, frames = _decoded(run.stdout)
    assert (fmt, codec, len(frames)) == ("mpegts", "h264", 5)
    assert "wrote standard output (5 frames)" in run.stderr.decode()


def test_stdout_reader_that_leaves_is_one_line(tmp_path: Path) -> None:
    clip = tmp_path / "clip"
    make_dng(None, clip, n_frames=40, size=(256, 384), fps=25.0, ratio=100)
    proc = subprocess.Popen([sys.executable, "-m", "redi_stream", str(clip), "--out", "-", "--model", "classic",
                             "--no-progress", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(2000)
    proc.stdout.close()  # the player quit
    _, err = proc.communicate(timeout=120)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1
    assert len(lines) == 1 and "cannot write standard output: the reader closed it (Broken pipe)" in lines[0], lines


def test_stdout_terminal_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(os, "isatty", lambda fd: fd == 1)
    with pytest.raises(SinkError, match="standard output is a terminal"):
        VideoSink("-", fps=25)


def test_tcp_stream_reaches_the_listener() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = bytearray()

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(65536):
                received.extend(chunk)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with VideoSink(f"tcp://127.0.0.1:{port}", fps=25) as sink:
        assert sink.path is None and sink.name == f"tcp://127.0.0.1:{port}"
        for f in _frames(8):
            sink.write(f)
    t.join(10)
    server.close()
    fmt, codec, frames = _decoded(bytes(received))
    assert (fmt, len(frames)) == ("mpegts", 8)


def test_udp_stream_reaches_the_listener() -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(2.0)
    port = rx.getsockname()[1]
    with VideoSink(f"udp://127.0.0.1:{port}?pkt_size=1316", fps=25) as sink:
        for f in _frames(6):
            sink.write(f)
    data = bytearray()
    try:
        while True:
            data.extend(rx.recv(65536))
    except TimeoutError:
        pass
    rx.close()
    assert len(_decoded(bytes(data))[2]) == 6


def _publish_to_listener(scheme: str, path: str, listen: dict[str, str], **sink_options) -> list[np.ndarray]:
    """Publish 10 frames to a local listener that FFmpeg itself runs (``listen`` options), retrying until it is up;
    returns the frames it received."""
    import time

    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]
    url = f"{scheme}://127.0.0.1:{port}/{path}"
    got: list = []

    def serve() -> None:
        try:
            with av.open(url, options=listen) as c:
                for f in c.decode(video=0):
                    got.append(f.to_ndarray(format="rgb24"))
        except av.FFmpegError:
            pass  # the publisher hung up: the stream is over

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for attempt in range(50):  # until the listener is up
        sink = VideoSink(url, fps=25, **sink_options)
        try:
            for f in _frames(10):
                sink.write(f)
            break
        except SinkError as exc:
            assert "Connection refused" in str(exc) and sink.frames_written == 0
            time.sleep(0.1)
        finally:
            sink.close()
    t.join(20)
    return got


def test_rtmp_push_reaches_a_listening_server() -> None:
    """FFmpeg's own RTMP listener (``listen=1``) stands in for nginx-rtmp or MediaMTX."""
    got = _publish_to_listener("rtmp", "live/key", {"listen": "1"})
    assert len(got) == 10 and got[9][:40, :8, 0].mean() > 240


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_rtsp_publish_reaches_a_listening_server(codec: str) -> None:
    """FFmpeg's own RTSP listener (``rtsp_flags=listen``: it takes ANNOUNCE/RECORD) stands in for MediaMTX or an
    NVR's ingest; the frames arrive whole over the RTSP connection (TCP)."""
    if codec not in av.codecs_available:
        pytest.skip(f"{codec} not in this FFmpeg")
    got = _publish_to_listener("rtsp", "enhanced", {"rtsp_flags": "listen", "listen_timeout": "20"}, codec=codec)
    assert len(got) == 10 and got[9][:40, :8, 0].mean() > 240


def test_unreachable_address_names_it_at_the_first_frame() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # closed again: nothing listens there
    sink = VideoSink(f"tcp://127.0.0.1:{port}", fps=25)
    with pytest.raises(SinkError, match=f"cannot write tcp://127.0.0.1:{port}: .*Connection refused"):
        sink.write(next(_frames(1)))
    sink.close()
    assert sink.frames_written == 0
