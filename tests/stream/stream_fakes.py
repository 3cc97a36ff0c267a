"""Small synthetic stand-ins for sources, enhancers and sinks, for lifecycle tests that need no model or file."""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from redi_stream.errors import FrameError
from redi_stream.frames import CFA, EnhancedFrame, RawFrame, RawMeta

META = RawMeta(cfa=CFA.RGGB, black_level=(64.0, 64.0, 64.0, 64.0), white_level=1023.0)


def make_raw(index: int, shape=(64, 96), fps: float = 24.0) -> RawFrame:
    """A frame whose top-left pixel encodes its index (so order can be checked after enhancement)."""
    data = np.full(shape, 64 + (index % 900), dtype=np.uint16)
    return RawFrame(data=data, meta=META, index=index, t_ns=int(round(index * 1e9 / fps)), name=f"f{index:04d}.dng")


class FakeFileSource:
    """File-like source: ``live = False``, ``len``, thread-safe ``read(i)`` with optional random delays/failures."""

    live = False

    def __init__(self, n: int, shape=(64, 96), *, fps: float = 24.0, max_delay_s: float = 0.0,
                 bad: set[int] | None = None, seed: int = 0, delay_s: float = 0.0) -> None:
        self.n, self.shape, self.fps = n, shape, fps
        self.names = [f"f{i:04d}.dng" for i in range(n)]
        self.max_delay_s, self.delay_s = max_delay_s, delay_s
        self.bad = set(bad or ())
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.reads: list[int] = []

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> RawFrame:
        with self._lock:
            d = self._rng.uniform(0, self.max_delay_s) if self.max_delay_s else 0.0
            self.reads.append(i)
        time.sleep(d + self.delay_s)
        if i in self.bad:
            raise FrameError(f"frame {i} ({self.names[i]}): truncated file", index=i, name=self.names[i])
        return make_raw(i, self.shape, self.fps)

    def __iter__(self):
        for i in range(self.n):
            yield self.read(i)

    def close(self) -> None:
        pass


class FakeLiveSource:
    """Camera-like source: ``live = True``, iteration only, one frame every ``period_s``."""

    live = True

    def __init__(self, n: int | None, shape=(64, 96), *, period_s: float = 0.0, fps: float = 30.0) -> None:
        self.n, self.shape, self.period_s, self.fps = n, shape, period_s, fps

    def __iter__(self):
        i = 0
        while self.n is None or i < self.n:
            if self.period_s:
                time.sleep(self.period_s)
            yield make_raw(i, self.shape, self.fps)
            i += 1


class FakeEnhancer:
    """Maps the raw frame to grey RGB (index readable from pixel [0, 0]); optional per-frame delay or failure."""

    def __init__(self, *, delay_s: float = 0.0, fail_at: int | None = None, stall_at: int | None = None,
                 release: threading.Event | None = None) -> None:
        self.delay_s, self.fail_at, self.stall_at = delay_s, fail_at, stall_at
        self.release = release or threading.Event()
        self.warmed: list[tuple] = []
        self.threads: set[str] = set()
        self.processed: list[int] = []

    def warm_up(self, shape, meta) -> None:
        self.warmed.append(tuple(shape))

    def process(self, frame: RawFrame) -> EnhancedFrame:
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if frame.index == self.fail_at:
            raise RuntimeError("network exploded")
        if frame.index == self.stall_at:
            self.release.wait(30)
        v = frame.data.astype(np.int64) - 64
        rgb = np.stack([v % 256, (v // 256) % 256, np.zeros_like(v)], axis=-1).astype(np.uint8)
        self.processed.append(frame.index)
        return EnhancedFrame(rgb=rgb, index=frame.index, t_ns=frame.t_ns, name=frame.name,
                             timings_ns={"infer": 1000})

    def close(self) -> None:
        pass


def frame_value(rgb: np.ndarray) -> int:
    """Index encoded by :class:`FakeEnhancer` (R + 256 G of the top-left pixel)."""
    return int(rgb[0, 0, 0]) + 256 * int(rgb[0, 0, 1])


class RecordingSink:
    """Keeps indices written; optional failure or stall at one index; counts close calls."""

    def __init__(self, *, fail_at: int | None = None, stall_at: int | None = None,
                 release: threading.Event | None = None) -> None:
        self.indices: list[int] = []
        self.values: list[int] = []
        self.close_calls = 0
        self.fail_at, self.stall_at = fail_at, stall_at
        self.release = release or threading.Event()
        self.frames_written = 0
        self.closed_by: list[str] = []

    def write(self, frame: EnhancedFrame) -> None:
        if frame.index == self.fail_at:
            from redi_stream.errors import SinkError

            raise SinkError("cannot write out.mp4: No space left on device")
        if frame.index == self.stall_at:
            self.release.wait(30)
        self.indices.append(frame.index)
        self.values.append(frame_value(frame.rgb))
        self.frames_written += 1

    def close(self) -> None:
        self.close_calls += 1
        self.closed_by.append(threading.current_thread().name)


def redi_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("redi-")]
