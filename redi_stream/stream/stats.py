"""Per-stage latency accumulators and memory sampling for the end-of-run summary.

Constant memory however long the run: a :class:`LatencyStats` keeps an exact count, sum and max plus a log-spaced
histogram (100 bins per decade from 1 us to 1000 s, so percentiles are within ~1.2 % of the true value). Each
accumulator is written by one thread; readers (the summary, the preview's fps overlay) may read concurrently and
see a value at most one frame stale.
"""

from __future__ import annotations

import math
import resource
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import psutil

_BINS_PER_DECADE = 100
_LO_NS = 1_000.0  # 1 us
_N_BINS = 9 * _BINS_PER_DECADE  # 1 us .. 1000 s


@dataclass(frozen=True)
class StageSummary:
    """Latency of one stage over a run, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float
    max_ms: float


class LatencyStats:
    """Accumulates per-frame durations (ns) of one stage. Single writer thread."""

    def __init__(self) -> None:
        self._hist = np.zeros(_N_BINS + 2, dtype=np.int64)  # [0] underflow, [-1] overflow
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0

    def add(self, ns: int) -> None:
        ns = int(ns)
        self.count += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        if ns < _LO_NS:
            self._hist[0] += 1
        else:
            b = int(math.log10(ns / _LO_NS) * _BINS_PER_DECADE) + 1
            self._hist[min(b, _N_BINS + 1)] += 1

    def percentile(self, q: float) -> float:
        """Approximate ``q``-th percentile (0..100) in ns: the geometric centre of the bin holding it."""
        if self.count == 0:
            return float("nan")
        rank = q / 100.0 * self.count
        cum = np.cumsum(self._hist)
        b = int(np.searchsorted(cum, max(rank, 1), side="left"))
        if b == 0:
            return min(_LO_NS, float(self.max_ns))
        if b >= _N_BINS + 1:
            return float(self.max_ns)
        centre = _LO_NS * 10 ** ((b - 0.5) / _BINS_PER_DECADE)
        return min(centre, float(self.max_ns))

    def summary(self) -> StageSummary:
        if self.count == 0:
            nan = float("nan")
            return StageSummary(0, nan, nan, nan, nan)
        return StageSummary(
            count=self.count,
            mean_ms=self.total_ns / self.count / 1e6,
            p50_ms=self.percentile(50) / 1e6,
            p95_ms=self.percentile(95) / 1e6,
            max_ms=self.max_ns / 1e6,
        )


class StageTimers:
    """A dict of :class:`LatencyStats` by stage name, safe to add to from several threads (one lock)."""

    def __init__(self) -> None:
        self._stats: dict[str, LatencyStats] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, ns: int) -> None:
        with self._lock:
            s = self._stats.get(stage)
            if s is None:
                s = self._stats[stage] = LatencyStats()
            s.add(ns)

    def add_many(self, timings_ns: dict[str, int]) -> None:
        for k, v in timings_ns.items():
            self.add(k, v)

    def summaries(self) -> dict[str, StageSummary]:
        with self._lock:
            return {k: s.summary() for k, s in self._stats.items()}


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes."""
    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process over its whole life, in bytes (``getrusage``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


class RssRecorder:
    """Records ``(frames_done, rss_bytes)`` every ``every_frames`` frames (0 = never) and tracks the maximum seen.

    :meth:`tick` is called by one thread (the encode stage) after each frame; :meth:`sample` by any thread.
    """

    def __init__(self, every_frames: int = 0) -> None:
        self.every_frames = every_frames
        self.samples: list[tuple[int, int]] = []
        self.max_bytes = 0
        self._proc = psutil.Process()
        self._lock = threading.Lock()

    def sample(self) -> int:
        rss = int(self._proc.memory_info().rss)
        with self._lock:
            self.max_bytes = max(self.max_bytes, rss)
        return rss

    def tick(self, frames_done: int) -> None:
        if self.every_frames and frames_done % self.every_frames == 0:
            rss = self.sample()
            with self._lock:
                self.samples.append((frames_done, rss))


class RateMeter:
    """Frames per second over a sliding window of the last ``window_s`` seconds (for the preview overlay)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: list[float] = []
        self._lock = threading.Lock()

    def tick(self, t_s: float | None = None) -> None:
        t = time.monotonic() if t_s is None else t_s
        with self._lock:
            self._times.append(t)
            cut = t - self.window_s
            i = 0
            while i < len(self._times) and self._times[i] < cut:
                i += 1
            del self._times[:i]

    @property
    def fps(self) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) / span if span > 0 else 0.0
