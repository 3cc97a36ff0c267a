"""Sink faults: the disk fills up or the output starts failing mid-run -> one clear error, no hang, and the file
keeps exactly the frames it says it keeps (every complete fragment; at most the last ~1 s is lost).

Three ways to fail the output for real, not by mocking the sink: RLIMIT_FSIZE in a CLI child (the kernel refuses
writes past a size: EFBIG), a small tmpfs (ENOSPC; needs mount privileges, else skipped), and the open output file
swapped for /dev/full under the running encoder (ENOSPC from a file system that "went bad" mid-run).
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rel_helpers import assert_accounted, cli, decoded_indices, mp4_fragments
from stream_fakes import FakeEnhancer, FakeFileSource, redi_threads

from redi_stream.capture import make_dng
from redi_stream.errors import PipelineError, SinkError
from redi_stream.stream import ImageSequenceSink, Pipeline, PipelineConfig, VideoSink

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="Linux file-system faults (rlimit, tmpfs, /proc)")

FPS = 24
N_CLIP = 160
FRAGMENT = FPS  # frames per 1-s fragment of the fragmented MP4
KEPT_RE = re.compile(r"(\d+) of (\d+) frames kept")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """160 noisy 128x192 DNG frames (~10 KB each once encoded): a few hundred KB of video fills a small limit."""
    d = tmp_path_factory.mktemp("clip")
    make_dng(None, d, n_frames=N_CLIP, size=(128, 192), fps=FPS, ratio=100)
    return d


def _one_error_line(stderr: str) -> str:
    errors = [ln for ln in stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, stderr
    return errors[0]


def _check_kept_video(out: Path, stderr: str) -> int:
    """The cut file: only complete fragments, decodes strictly to frames 0..k-1, k as the warning says."""
    m = KEPT_RE.search(stderr)
    assert m, stderr
    kept, written = int(m.group(1)), int(m.group(2))
    frags = mp4_fragments(out)
    assert all(complete for _, complete in frags), frags  # the torn fragment was cut off
    assert sum(n for n, _ in frags) == kept
    assert decoded_indices(out, FPS) == list(range(kept))  # strict decode: no error, no gap, no duplicate
    # Only the fragment in flight is lost (plus x264's frame-thread delay, up to 1.5 threads per core).
    assert 0 < kept <= written and written - kept <= FRAGMENT + 2 + int(1.5 * (os.cpu_count() or 1))
    assert f" keeps {kept} frames, from before the failure" in stderr  # the CLI's closing word agrees
    return kept


def _run_cli_until_full(clip: Path, out: Path, preexec=None, timeout_s: float = 120) -> tuple[int, str, float]:
    t0 = time.monotonic()
    p = cli(str(clip), "--out", str(out), "--model", "classic", "--no-progress", preexec_fn=preexec)
    _, err = p.communicate(timeout=timeout_s)  # no hang: a TimeoutExpired fails the test
    return p.returncode, err, time.monotonic() - t0


def test_disk_full_rlimit_cli_keeps_complete_fragments(clip, tmp_path):
    limit = 600_000  # bytes: a few fragments of this clip

    def limit_file_size():  # in the child, before exec
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG instead of killing

    out = tmp_path / "full.mp4"
    code, err, elapsed = _run_cli_until_full(clip, out, limit_file_size)
    assert code == 1, err
    line = _one_error_line(err)
    assert str(out) in line and "File too large" in line and line.startswith("redi-stream: error: encode failed: frame")
    _check_kept_video(out, err)
    assert out.stat().st_size <= limit


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")


@pytest.fixture
def small_fs(tmp_path):
    """A 640 KiB tmpfs (needs mount privileges; skipped otherwise), unmounted afterwards."""
    if not shutil.which("mount") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    _mount_tmpfs(mnt, "640k")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_tmpfs_cli_video(clip, small_fs):
    out = small_fs / "out.mp4"
    code, err, _ = _run_cli_until_full(clip, out)
    assert code == 1, err
    line = _one_error_line(err)
    assert str(out) in line and "No space left on device" in line
    _check_kept_video(out, err)


def test_disk_full_tmpfs_png_sequence_keeps_every_written_frame(small_fs):
    """16-bit PNGs: each frame is its own file, so the count is exact: files == frames reported written."""
    out_dir = small_fs / "frames"

    class Noise(FakeEnhancer):  # incompressible frames fill the disk in a few files
        def process(self, frame):
            ef = super().process(frame)
            ef.rgb = np.random.default_rng(frame.index).integers(0, 256, (128, 192, 3), dtype=np.uint8)
            return ef

    sink = ImageSequenceSink(out_dir)
    with pytest.raises(PipelineError) as ei:
        Pipeline(FakeFileSource(500, shape=(128, 192)), Noise(), [sink], PipelineConfig(), progress=False).run()
    err = ei.value
    assert err.stage == "encode" and "No space left on device" in str(err) and "frame_" in str(err)
    s = err.summary
    assert_accounted(s)
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == [f"frame_{i:06d}.png" for i in range(s.frames_out)]  # no torn file, no .part left behind
    assert s.frames_out > 0 and s.frames_failed == 1
    for i in range(s.frames_out):
        img = cv2.imread(str(out_dir / f"frame_{i:06d}.png"), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (128, 192, 3) and img.dtype == np.uint16
    assert redi_threads() == []


def _fd_of(path: Path) -> int:
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == str(path):
                return int(name)
        except OSError:
            continue
    raise AssertionError(f"{path} is not open")


class GoesBadAt(VideoSink):
    """A VideoSink whose file starts refusing writes (ENOSPC) after ``bad_at`` frames: its descriptor is pointed
    at /dev/full under the running muxer, as when a disk fills up or a network share fails."""

    def __init__(self, path, bad_at: int, **kw):
        super().__init__(path, **kw)
        self.bad_at = bad_at

    def write(self, frame):
        if frame.index == self.bad_at:
            full = os.open("/dev/full", os.O_WRONLY)
            try:
                os.dup2(full, _fd_of(self.path))
            finally:
                os.close(full)
        super().write(frame)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("bad_at", [30, 77])
def test_output_fails_mid_run_in_process(tmp_path, bad_at):
    out = tmp_path / "bad.mp4"
    sink = GoesBadAt(out, bad_at, fps=FPS, preset="ultrafast", threads=1)  # no frame delay: exact fragment edges

    class Noise(FakeEnhancer):
        def process(self, frame):
            ef = super().process(frame)
            ef.rgb = np.random.default_rng(frame.index).integers(0, 256, (64, 96, 3), dtype=np.uint8)
            return ef

    t0 = time.monotonic()
    with pytest.raises(PipelineError) as ei:
        Pipeline(FakeFileSource(400), Noise(), [sink], PipelineConfig(), progress=False).run()
    assert time.monotonic() - t0 < 30
    err = ei.value
    assert err.stage == "encode" and isinstance(err.__cause__, SinkError)
    assert "No space left on device" in str(err) and str(out) in str(err)
    assert_accounted(err.summary)
    kept = sink.frames_kept
    assert kept is not None and kept == (bad_at // FRAGMENT) * FRAGMENT  # every fragment completed before it
    assert decoded_indices(out, FPS) == list(range(kept))
    assert redi_threads() == []
