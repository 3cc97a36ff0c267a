"""Long-run memory: RSS must not grow with the number of frames (no per-frame leak in the pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from redi_stream.capture import SyntheticSource
from redi_stream.stream import ClassicEnhancer, NullSink, Pipeline, PipelineConfig


@pytest.mark.slow
def test_rss_flat_over_2000_frames():
    n = 2000
    image = np.random.default_rng(0).random((80, 120, 3), dtype=np.float32)
    source = SyntheticSource(image, n_frames=n, size=(64, 96), ratio=100.0, seed=1)
    sink = NullSink()
    summary = Pipeline(source, ClassicEnhancer(), [sink], PipelineConfig(rss_every_frames=100),
                       progress=False).run()
    assert summary.frames_out == n == sink.frames_written
    rss = dict(summary.rss_samples)
    assert sorted(rss) == list(range(100, n + 1, 100))
    growth = rss[n] / rss[100] - 1.0
    assert growth < 0.03, f"RSS grew {growth:.1%} from frame 100 to {n}: {summary.rss_samples}"
    assert summary.stages["encode"].count == n


@pytest.mark.slow
def test_rss_flat_with_the_network_on_the_cpu_gate(tmp_path):
    """The CPU network path as the CLI runs it on an idle machine (reused activation memory, all cores, forwards
    following the CPU gate and changing their thread count between ops): no growth over 1,000 frames to MP4."""
    import os

    from redi_stream.model import TorchRunner
    from redi_stream.stream import RediEnhancer
    from redi_stream.stream.sinks import VideoSink
    from tests.conftest import make_random_redi_net

    n = 1000
    net = make_random_redi_net(2)
    cores = os.cpu_count() or 1
    runner = TorchRunner(net, "cpu", "fp32", num_threads=cores, reuse_memory=True)  # "auto" picks 1 at this size
    with RediEnhancer(runner, None, yuv420p=True) as enh:
        source = SyntheticSource(n_frames=n, size=(96, 160), ratio=150.0, seed=3, motion="pan")
        sink = VideoSink(tmp_path / "out.mp4", fps=24.0, preset="ultrafast", threads=1)
        summary = Pipeline(source, enh, [sink], PipelineConfig(rss_every_frames=100, handle_signals=False),
                           progress=False).run()
        gate = enh.cpu_gate
    assert summary.frames_out == n == sink.frames_written
    rss = dict(summary.rss_samples)
    growth = rss[n] / rss[100] - 1.0
    assert growth < 0.03, f"RSS grew {growth:.1%} from frame 100 to {n}: {summary.rss_samples}"
    assert gate.exclusive_count >= n  # and the warm-up forward
    if cores >= 2:
        assert gate.shrunk_count > 0  # some forwards did start beside an encode and change their thread count
