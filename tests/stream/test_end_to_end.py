"""The real parts together: a DNG sequence (one file truncated) -> RawFileSource -> ClassicEnhancer -> MP4."""

from __future__ import annotations

import av
import numpy as np
import pytest

from redi_stream.capture import RawFileSource, SyntheticSource, write_dark_dng_sequence
from redi_stream.errors import PipelineError
from redi_stream.stream import ClassicEnhancer, Pipeline, PipelineConfig, VideoSink


@pytest.fixture(scope="module")
def dng_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("dng")
    image = np.random.default_rng(0).random((80, 120, 3), dtype=np.float32)
    paths = write_dark_dng_sequence(SyntheticSource(image, n_frames=6, size=(64, 96), seed=2, fps=25.0), d)
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 3])  # truncated mid-image
    return d


def _times(path):
    with av.open(str(path)) as c:
        return [round(float(f.pts * f.time_base) * 25, 3) for f in c.decode(video=0)]


def test_truncated_dng_skip(dng_dir, tmp_path):
    out = tmp_path / "skip.mp4"
    with RawFileSource(dng_dir) as src:
        summary = Pipeline(src, ClassicEnhancer(), [VideoSink(out, fps=src.fps, preset="ultrafast")],
                           PipelineConfig(on_error="skip"), progress=False).run()
    assert [(i, n) for i, n, _ in summary.skipped] == [(3, "frame_000003.dng")]
    assert _times(out) == [0, 1, 2, 4, 5]  # pts from timestamps: the skipped frame leaves its slot empty


def test_truncated_dng_stop(dng_dir, tmp_path):
    out = tmp_path / "stop.mp4"
    with RawFileSource(dng_dir) as src:
        with pytest.raises(PipelineError) as ei:
            Pipeline(src, ClassicEnhancer(), [VideoSink(out, fps=src.fps, preset="ultrafast")],
                     PipelineConfig(on_error="stop", decode_workers=3), progress=False).run()
    assert ei.value.stage == "capture"
    assert str(ei.value).startswith("capture failed: frame 3 (") and "frame_000003.dng" in str(ei.value)
    assert len(_times(out)) <= 3  # frames before the bad one that were already enhanced; playable
