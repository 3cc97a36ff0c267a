"""``--hot-pixels``: the hot-pixel filter (:mod:`redi_stream.kernels.hotpix`) applied to every raw frame as it is
read, before the amplifier and the network see it.

The pipeline calls it where it reads frames (:class:`~redi_stream.stream.pipeline.Pipeline` ``frame_filter``): on
the decode workers for files, so it runs beside the network, and on the capture thread for a camera.
:class:`redi_stream.Enhancer` calls it before each frame.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from redi_stream import kernels
from redi_stream.frames import RawFrame


class HotPixelFilter:
    """``RawFrame -> RawFrame`` with its isolated hot samples replaced from their own colour.

    Safe to call from several threads at once (each call writes a new array, which the returned frame owns; the
    counters are locked). A frame with nothing to replace is returned as it came.
    """

    def __init__(self) -> None:
        kernels.warm_up()  # here, not on the first decode worker that calls it (cached: fast after the first time)
        self._lock = threading.Lock()
        self.frames = 0  #: frames seen
        self.replaced = 0  #: samples replaced, in all of them
        self.most = 0  #: the most replaced in one frame

    def __call__(self, frame: RawFrame) -> RawFrame:
        meta = frame.meta
        out = np.empty_like(frame.data)
        n = kernels.fix_hot_pixels(frame.data, meta.black_level_array, meta.white_level, meta.cfa, out)
        with self._lock:
            self.frames += 1
            self.replaced += n
            self.most = max(self.most, n)
        return dataclasses.replace(frame, data=out) if n else frame

    def summary(self) -> str:
        """One line for the end of a run."""
        per = self.replaced / self.frames if self.frames else 0.0
        return (f"hot pixels: {self.replaced} replaced in {self.frames} frames ({per:.1f} per frame, at most "
                f"{self.most} in one)")
