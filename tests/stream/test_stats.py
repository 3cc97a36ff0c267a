"""Latency histogram percentiles, RSS recorder, rate meter."""

from __future__ import annotations

import math

import pytest

from redi_stream.stream.stats import LatencyStats, RateMeter, RssRecorder, StageTimers


def test_percentiles_within_histogram_resolution():
    s = LatencyStats()
    for ms in range(1, 101):
        s.add(ms * 1_000_000)
    sm = s.summary()
    assert sm.count == 100 and sm.mean_ms == pytest.approx(50.5)
    assert sm.p50_ms == pytest.approx(50, rel=0.03) and sm.p95_ms == pytest.approx(95, rel=0.03)
    assert sm.max_ms == 100


def test_extremes_and_empty():
    assert math.isnan(LatencyStats().summary().p50_ms)
    s = LatencyStats()
    s.add(10)  # below 1 us
    s.add(5_000 * 10**9)  # above 1000 s
    assert s.percentile(0) <= 1_000 and s.percentile(100) == 5_000 * 10**9


def test_stage_timers_and_rss_and_rate():
    t = StageTimers()
    t.add_many({"infer": 2_000_000, "isp": 1_000_000})
    t.add("infer", 4_000_000)
    assert t.summaries()["infer"].count == 2 and t.summaries()["isp"].mean_ms == pytest.approx(1.0)
    r = RssRecorder(every_frames=2)
    for i in range(1, 6):
        r.tick(i)
    assert [n for n, _ in r.samples] == [2, 4] and r.max_bytes > 0
    m = RateMeter(window_s=10)
    for i in range(11):
        m.tick(100.0 + i * 0.04)
    assert m.fps == pytest.approx(25.0)
