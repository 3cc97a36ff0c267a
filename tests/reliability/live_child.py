"""Child process for the live-run interruption tests: an endless camera-like source -> classic enhancer -> MP4.

Usage: python live_child.py OUT.mp4 REPORT.json
Prints ``READY`` just before ``Pipeline.run()`` and ``PROGRESS n`` after each frame written; on the end of the run
writes REPORT.json (the summary's counts and the source indices written, in order) and exits 0, or 128 + signum
when interrupted (what the CLI does).
"""

import json
import sys
import threading
import time

from redi_stream.capture import SyntheticSource
from redi_stream.errors import Interrupted
from redi_stream.stream import ClassicEnhancer, Pipeline, PipelineConfig, VideoSink

FPS = 50.0


class EndlessCamera:
    """``live = True``; yields frames forever at FPS, timestamps from the monotonic clock (like a camera)."""

    live = True
    fps = FPS
    name = "fake-camera"

    def __init__(self) -> None:
        synth = SyntheticSource(None, n_frames=8, size=(64, 96), ratio=100.0, seed=1)
        self._frames = [synth.read(i) for i in range(8)]

    def __iter__(self):
        i = 0
        t0 = time.monotonic_ns()
        tick = threading.Event()
        while True:
            f = self._frames[i % 8]
            yield type(f)(data=f.data.copy(), meta=f.meta, index=i, t_ns=time.monotonic_ns() - t0, name=f"cam#{i}")
            i += 1
            tick.wait(1.0 / FPS)


class Recording(VideoSink):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.indices = []

    def write(self, frame):
        super().write(frame)
        self.indices.append(frame.index)
        print(f"PROGRESS {self.frames_written}", flush=True)


def main() -> int:
    out, report = sys.argv[1], sys.argv[2]
    sink = Recording(out, fps=FPS, preset="ultrafast")
    pipeline = Pipeline(EndlessCamera(), ClassicEnhancer(), [sink], PipelineConfig(), progress=False)
    code = 0
    print("READY", flush=True)  # run() installs the SIGINT/SIGTERM handlers first thing
    try:
        summary = pipeline.run()
    except Interrupted as exc:
        summary, code = exc.summary, 128 + exc.signum
    with open(report, "w") as f:
        json.dump({"frames_in": summary.frames_in, "frames_out": summary.frames_out,
                   "frames_dropped": summary.frames_dropped, "frames_discarded": summary.frames_discarded,
                   "frames_failed": summary.frames_failed, "ended_by": summary.ended_by,
                   "indices": sink.indices}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
