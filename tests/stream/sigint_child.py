"""Child process for the signal tests: a pipeline on a slow source, printing each encoded frame.

Usage: python sigint_child.py OUT.mp4 [stuck_at]
Prints ``PROGRESS n`` after each frame written and ``ENCODED n`` at the end; exits 128 + signum on Interrupted
(130 for SIGINT, 143 for SIGTERM), which is what the CLI is expected to do.
"""

import sys
import threading

import numpy as np

from redi_stream.errors import Interrupted
from redi_stream.frames import CFA, EnhancedFrame, RawFrame, RawMeta
from redi_stream.stream import Pipeline, PipelineConfig, VideoSink

_SAY = threading.Lock()


def say(line: str) -> None:
    """Print one whole line: the enhancer and encoder threads both print, and ``print`` writes the text and the
    newline in two calls, so unguarded lines can interleave ("STUCKPROGRESS 4")."""
    with _SAY:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


META = RawMeta(cfa=CFA.RGGB, black_level=(0.0,) * 4, white_level=255.0)


class SlowSource:
    live = False
    names = [f"s{i}" for i in range(10_000)]

    def __len__(self):
        return 10_000

    def read(self, i):
        threading.Event().wait(0.03)
        return RawFrame(np.full((64, 96), i % 256, np.uint16), META, i, round(i * 1e9 / 24), self.names[i])


class Enh:
    def __init__(self, stuck_at):
        self.stuck_at = stuck_at

    def process(self, f):
        if f.index == self.stuck_at:
            say("STUCK")
            threading.Event().wait(60)
        rgb = np.repeat(f.data.astype(np.uint8)[..., None], 3, axis=2)
        return EnhancedFrame(rgb, f.index, f.t_ns, f.name)


class Printing(VideoSink):
    def write(self, frame):
        super().write(frame)
        say(f"PROGRESS {self.frames_written}")


def main():
    out = sys.argv[1]
    stuck_at = int(sys.argv[2]) if len(sys.argv) > 2 else -1
    sink = Printing(out, fps=24, preset="ultrafast")
    try:
        summary = Pipeline(SlowSource(), Enh(stuck_at), [sink], PipelineConfig(), progress=False).run()
    except Interrupted as exc:
        say(f"ENCODED {exc.summary.frames_out}")
        say(f"INTERRUPTED {exc}")
        sys.exit(128 + exc.signum)
    say(f"ENCODED {summary.frames_out}")


if __name__ == "__main__":
    main()
