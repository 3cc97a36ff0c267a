"""Long unattended run: 20,000 synthetic frames through the whole pipeline (decode pool, classic enhancer, x264
fragmented MP4) with flat memory, every frame in the output, in order, with monotonic timestamps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rel_helpers import assert_accounted, decoded_indices

from redi_stream.capture import SyntheticSource
from redi_stream.stream import ClassicEnhancer, Pipeline, PipelineConfig, VideoSink

N = 20_000
FPS = 30
RSS_EVERY = 500
WARM = 2_000  # allocator pools, numba/x264 state settle in the first frames; growth is measured after them


class OrderCheckingSink:
    """Counts frames and checks, as they arrive, that indices are consecutive and timestamps strictly increase.
    Keeps no frame (it must not itself grow with the run)."""

    def __init__(self) -> None:
        self.frames_written = 0
        self.last_index = -1
        self.last_t_ns = -1
        self.violations: list[str] = []
        self.close_calls = 0

    def write(self, frame) -> None:
        if frame.index != self.last_index + 1 and len(self.violations) < 10:
            self.violations.append(f"index {frame.index} after {self.last_index}")
        if frame.t_ns <= self.last_t_ns and len(self.violations) < 10:
            self.violations.append(f"t_ns {frame.t_ns} after {self.last_t_ns} (frame {frame.index})")
        self.last_index, self.last_t_ns = frame.index, frame.t_ns
        self.frames_written += 1

    def close(self) -> None:
        self.close_calls += 1


@pytest.mark.slow
def test_20000_frames_flat_memory_every_frame_in_order(tmp_path):
    image = np.random.default_rng(0).random((96, 144, 3), dtype=np.float32)
    source = SyntheticSource(image, n_frames=N, size=(64, 96), ratio=100.0, seed=7, fps=FPS)
    out = tmp_path / "long.mp4"
    video = VideoSink(out, fps=FPS, preset="ultrafast")
    check = OrderCheckingSink()
    t0 = time.monotonic()
    summary = Pipeline(source, ClassicEnhancer(), [video, check], PipelineConfig(rss_every_frames=RSS_EVERY),
                       progress=False).run()
    wall = time.monotonic() - t0

    assert summary.ended_by == "end"
    assert summary.frames_in == summary.frames_out == N == video.frames_written == check.frames_written
    assert_accounted(summary, n_source=N)
    assert check.violations == [] and check.close_calls == 1

    rss = dict(summary.rss_samples)
    assert sorted(rss) == list(range(RSS_EVERY, N + 1, RSS_EVERY))
    base = rss[WARM]
    later = [v for n, v in rss.items() if n >= WARM]
    growth = max(later) / base - 1.0
    assert growth < 0.05, f"RSS grew {growth:.1%} after frame {WARM} ({wall:.0f} s run): {summary.rss_samples}"

    idx = decoded_indices(out, FPS)  # pts come from t_ns: the decoded frames are exactly 0..N-1, in order
    assert len(idx) == N and idx == list(range(N))
