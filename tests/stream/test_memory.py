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
