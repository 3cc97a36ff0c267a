"""A camera that stops delivering, through the whole pipeline into a real MP4: the read times out (as OpenCV's
V4L2/FFmpeg backends do) -> reconnect with backoff -> frames resume; or it never comes back -> a clean capture
failure with the recording finalised; or the driver wedges without ever timing out -> the pipeline's watchdog.
Built on what ``stream/camera.py`` provides (CameraSource, FakeBayerDevice); its unit tests are
tests/stream/test_camera.py."""

from __future__ import annotations

import threading
import time

import pytest
from rel_helpers import assert_accounted, decoded_indices
from stream_fakes import redi_threads

from redi_stream.capture.camera import FakeBayerDevice
from redi_stream.errors import CaptureError, PipelineError
from redi_stream.stream import ClassicEnhancer, Pipeline, PipelineConfig, VideoSink
from redi_stream.stream.camera import CameraSource

FPS = 100.0


class GoesSilent(FakeBayerDevice):
    """Delivers ``frames`` frames, then nothing: ``read`` waits ``timeout_s`` and fails as a backend's read
    timeout does (or, with ``timeout_s=None``, blocks until ``release`` is set: a wedged driver)."""

    def __init__(self, frames: int, timeout_s: float | None, release: threading.Event | None = None) -> None:
        super().__init__(32, 48, FPS, patterns=2, name="camera 7")
        self.frames, self.timeout_s = frames, timeout_s
        self.release = release or threading.Event()

    def read(self):
        if self.last_seq + 1 >= self.frames:
            self.release.wait(self.timeout_s if self.timeout_s is not None else 60)
            raise CaptureError(f"{self.name}: no frame within {self.timeout_s} s (select timeout)")
        return super().read()


class Opener:
    """First open: a camera that goes silent after ``first`` frames; reopens fail ``fails`` times (no device),
    then (if ``comes_back``) a healthy camera. Records when each open was tried."""

    def __init__(self, first: int, timeout_s: float | None, fails: int, comes_back: bool,
                 release: threading.Event | None = None) -> None:
        self.first, self.timeout_s, self.fails = first, timeout_s, fails
        self.comes_back, self.release = comes_back, release
        self.times: list[float] = []

    def __call__(self):
        self.times.append(time.monotonic())
        n = len(self.times)
        if n == 1:
            return GoesSilent(self.first, self.timeout_s, self.release)
        if n - 1 <= self.fails or not self.comes_back:
            raise CaptureError("camera 7: no such device (/dev/video7 does not exist)")
        return FakeBayerDevice(32, 48, FPS, patterns=2, name="camera 7")


def _run(src, out, **cfg):
    sink = VideoSink(out, fps=FPS, preset="ultrafast")
    p = Pipeline(src, ClassicEnhancer(), [sink], PipelineConfig(**cfg), progress=False)
    return p, sink


def test_silent_camera_times_out_reconnects_with_backoff_and_resumes(tmp_path):
    opener = Opener(first=15, timeout_s=0.3, fails=3, comes_back=True)
    src = CameraSource(opener, reconnect_s=5.0, backoff_s=(0.05, 0.2))
    out = tmp_path / "cam.mp4"
    p, sink = _run(src, out, max_frames=60, policy="block")  # block: count every frame across the outage
    t0 = time.monotonic()
    summary = p.run()
    src.close()
    assert summary.ended_by == "end" and summary.frames_out == 60 and time.monotonic() - t0 < 10
    assert_accounted(summary)
    assert src.reconnects == 1
    gaps = [b - a for a, b in zip(opener.times[1:], opener.times[2:])]  # between reopen attempts: backoff grows
    assert len(gaps) == 3 and gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.19, gaps
    slots = decoded_indices(out, FPS)  # pts from the device's capture time, in 1/100-s slots
    assert len(slots) == summary.frames_out == sink.frames_written
    assert slots == sorted(set(slots))
    jump = max(b - a for a, b in zip(slots, slots[1:]))
    assert jump >= 0.3 * FPS  # the outage is visible in the timing (not papered over), nothing reordered
    assert redi_threads() == []


def test_camera_that_never_comes_back_stops_cleanly_with_every_frame_kept(tmp_path):
    opener = Opener(first=20, timeout_s=0.3, fails=0, comes_back=False)
    src = CameraSource(opener, reconnect_s=0.6, backoff_s=(0.05, 0.2))
    out = tmp_path / "lost.mp4"
    p, sink = _run(src, out, policy="block")
    t0 = time.monotonic()
    with pytest.raises(PipelineError) as ei:
        p.run()
    elapsed = time.monotonic() - t0
    src.close()
    err = ei.value
    assert err.stage == "capture" and isinstance(err.__cause__, CaptureError)
    assert "camera 7: lost (camera 7: no frame within 0.3 s (select timeout)) and not back within 0.6 s" in str(err)
    assert elapsed < 0.3 + 0.6 + 3.0
    assert len(opener.times) >= 3  # it did try to reopen, with backoff, for the whole reconnect window
    s = err.summary
    assert_accounted(s)
    assert s.frames_out == 20 == len(decoded_indices(out, FPS))  # every frame delivered before the loss
    assert redi_threads() == []


def test_wedged_camera_driver_is_caught_by_the_watchdog(tmp_path):
    release = threading.Event()
    opener = Opener(first=10, timeout_s=None, fails=0, comes_back=False, release=release)
    src = CameraSource(opener, reconnect_s=0.0)
    out = tmp_path / "wedged.mp4"
    p, sink = _run(src, out, policy="block", stall_timeout_s=0.5, join_timeout_s=1.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(PipelineError) as ei:
            p.run()
        assert time.monotonic() - t0 < 5.0
        err = ei.value
        assert err.stage == "capture" and str(err).startswith("capture stalled: no progress for")
        s = err.summary
        assert_accounted(s)
        assert s.frames_out == 10 == len(decoded_indices(out, FPS))
        # The capture stage leaves once CameraSource gives up waiting for its reader (2 s), while the device read
        # itself is still stuck: only redi-camera is left, as a daemon, until the driver lets go.
        deadline = time.monotonic() + 3.0
        while "redi-capture" in redi_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert redi_threads() == ["redi-camera"]
    finally:
        release.set()
        src.close()
    deadline = time.monotonic() + 3
    while redi_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redi_threads() == []
