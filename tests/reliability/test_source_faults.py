"""Source faults: a corrupt, truncated or empty frame in the middle of a sequence (--on-error stop | skip), a frame
file that disappears while the run reads it. Stop keeps exactly the frames before the bad one; skip keeps all the
others and reports each skipped frame by index and name. (The camera that stops delivering: test_camera_faults.)"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from rel_helpers import assert_accounted, decoded_indices
from stream_fakes import redi_threads

from redi_stream.capture import RawFileSource, make_dng
from redi_stream.cli import EXIT_FAILED, main
from redi_stream.errors import FrameError, PipelineError
from redi_stream.stream import ClassicEnhancer, Pipeline, PipelineConfig, VideoSink

N, BAD, FPS = 12, 5, 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("clip")
    make_dng(None, d, n_frames=N, size=(64, 96), fps=FPS, ratio=100)
    return d


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")
    else:
        raise AssertionError(how)


@pytest.fixture(params=["truncated", "garbage", "empty"])
def damaged(request, clip, tmp_path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(clip, src)
    _damage(src / f"frame_{BAD:06d}.dng", request.param)
    return src


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_bad_frame_on_error_stop_keeps_exactly_the_frames_before_it(damaged, tmp_path, capsys):
    out = tmp_path / "stop.mp4"
    assert main([str(damaged), "--out", str(out), "--model", "classic", "--no-progress"]) == EXIT_FAILED
    err = _stderr_lines(capsys)
    errors = [ln for ln in err if "error:" in ln]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"redi-stream: error: capture failed: frame {BAD} (")
    assert f"frame_{BAD:06d}.dng" in errors[0]
    assert f"redi-stream: {out} keeps {BAD} frames, from before the failure" in err
    assert decoded_indices(out, FPS) == list(range(BAD))  # every frame before the bad one, none after


def test_bad_frame_on_error_skip_keeps_all_others_and_names_it(damaged, tmp_path, capsys):
    out = tmp_path / "skip.mp4"
    assert main([str(damaged), "--out", str(out), "--model", "classic", "--no-progress", "--on-error", "skip"]) == 0
    err = _stderr_lines(capsys)
    name = f"frame_{BAD:06d}.dng"
    assert sum(ln.startswith(f"redi-stream: skipping frame {BAD} ({name}): ") for ln in err) == 1, err
    assert not any(f"): frame {BAD} (" in ln for ln in err), err  # the frame named once per line
    assert any(ln.strip().startswith(f"skipped frame {BAD} ({name}): ") for ln in err), err  # in the summary
    assert any(f"{N - 1} frames written" in ln for ln in err) and any("1 skipped" in ln for ln in err), err
    assert decoded_indices(out, FPS) == [i for i in range(N) if i != BAD]  # its time slot left, nothing shifted


class VanishingSource(RawFileSource):
    """A file source whose frame ``gone`` is deleted by someone else just as the run reaches it."""

    def __init__(self, spec, gone: int) -> None:
        super().__init__(spec)
        self.gone = gone

    def read(self, index):
        if index == self.gone and self.paths[index].exists():
            self.paths[index].unlink()
        return super().read(index)


@pytest.mark.parametrize("on_error", ["stop", "skip"])
def test_frame_file_disappears_while_reading(clip, tmp_path, on_error):
    src_dir = tmp_path / "src"
    shutil.copytree(clip, src_dir)
    src = VanishingSource(src_dir, gone=BAD)
    out = tmp_path / "gone.mp4"
    sink = VideoSink(out, fps=FPS, preset="ultrafast")
    p = Pipeline(src, ClassicEnhancer(), [sink], PipelineConfig(on_error=on_error, decode_workers=2), progress=False)
    name = f"frame_{BAD:06d}.dng"
    if on_error == "stop":
        with pytest.raises(PipelineError) as ei:
            p.run()
        err = ei.value
        assert err.stage == "capture" and isinstance(err.__cause__, FrameError)
        assert str(err).startswith(f"capture failed: frame {BAD} (") and name in str(err)
        assert "no such file (removed after the frames were listed)" in str(err)
        s = err.summary
        assert_accounted(s)
        assert s.frames_out == BAD and decoded_indices(out, FPS) == list(range(BAD))
    else:
        s = p.run()
        assert_accounted(s, n_source=N)
        assert [(i, n) for i, n, _ in s.skipped] == [(BAD, name)]
        assert "no such file (removed after the frames were listed)" in s.skipped[0][2]
        assert s.frames_out == N - 1 and decoded_indices(out, FPS) == [i for i in range(N) if i != BAD]
    assert redi_threads() == []


@pytest.mark.parametrize("bad", [0, N - 1])
def test_first_or_last_frame_bad_with_skip(clip, tmp_path, bad):
    """The edges: frame 0 is also the size/CFA reference; the last frame ends the run."""
    src_dir = tmp_path / "src"
    shutil.copytree(clip, src_dir)
    _damage(src_dir / f"frame_{bad:06d}.dng", "truncated")
    out = tmp_path / "edge.mp4"
    s = Pipeline(RawFileSource(src_dir), ClassicEnhancer(), [VideoSink(out, fps=FPS, preset="ultrafast")],
                 PipelineConfig(on_error="skip"), progress=False).run()
    assert_accounted(s, n_source=N)
    assert [i for i, _, _ in s.skipped] == [bad]
    # pts count from the first frame written (frame 1 when frame 0 is skipped), so decoded slots are shifted then.
    first = 1 if bad == 0 else 0
    assert decoded_indices(out, FPS) == [i - first for i in range(N) if i != bad]
