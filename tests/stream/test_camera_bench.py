"""Acceptance: live mode on a 720p 30 fps fake Bayer device with the classic model on a small CPU -- median
capture->display latency <= 100 ms, drops counted, bounded queues and memory over 3,000 frames (slow: ~100 s)."""

from __future__ import annotations

import pytest

from redi_stream.stream import ClassicEnhancer, NullPreview, Pipeline, PipelineConfig
from redi_stream.stream.camera import live_report, open_camera


@pytest.mark.slow
def test_720p30_fake_camera_classic_latency_drops_and_bounded_growth():
    frames = 3000
    src = open_camera("fake:720p30")
    with ClassicEnhancer() as enh, NullPreview() as preview:
        summary = Pipeline(src, enh, [], PipelineConfig(queue_size=1, max_frames=frames, rss_every_frames=250),
                           progress=False, preview=preview).run()
    src.close()
    print(summary.format())
    print(live_report(summary, src, window=False))
    assert summary.frames_in == frames and summary.ended_by == "end"
    assert summary.stages["display"].p50_ms <= 100.0
    # Drops are counted, exactly: every frame the device delivered was taken in, dropped at the source, or was
    # in flight at the end.
    assert src.frames_read - summary.frames_in - summary.frames_dropped_at_source in (0, 1, 2)
    assert summary.frames_in == summary.frames_out + summary.frames_dropped + summary.frames_discarded
    # Bounded: one frame waits for the network at most, and memory is flat after warm-up.
    assert summary.queue_high_water == {"capture->infer": 1, "infer->encode": 1}
    rss = [b for n, b in summary.rss_samples if n >= 500]
    assert len(rss) >= 5 and max(rss) - min(rss) < 64 * 2**20
