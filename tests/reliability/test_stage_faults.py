"""Stage faults: an exception in any stage (decode pool, live capture, warm-up, infer, encode) at any frame ->
PipelineError naming the stage, every thread joined within the timeout, sinks closed once, every frame accounted
for; a stalled stage (capture read, camera, warm-up) is reported by the watchdog, not waited on forever; through
the app, every resource is closed once. (Infer/encode stalls and the basic stage matrix: tests/stream.)"""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rel_helpers import assert_accounted, decoded_indices
from stream_fakes import FakeEnhancer, FakeFileSource, FakeLiveSource, RecordingSink, make_raw, redi_threads

from redi_stream.errors import FrameError, PipelineError
from redi_stream.stream import Pipeline, PipelineConfig, VideoSink

EXCEPTIONS = {
    "RuntimeError": lambda: RuntimeError("boom"),
    "MemoryError": lambda: MemoryError("host allocation failed"),
    "ValueError": lambda: ValueError("bad value"),
    "OSError": lambda: OSError(5, "Input/output error"),
    "FrameError": lambda: FrameError("corrupt frame"),
}


class Failing:
    """Raise ``exc`` from one stage at frame ``at``."""

    def __init__(self, stage: str, at: int, exc: BaseException) -> None:
        self.stage, self.at, self.exc = stage, at, exc


class FileSrc(FakeFileSource):
    def __init__(self, n, fail: Failing | None, **kw):
        super().__init__(n, **kw)
        self.fail = fail

    def read(self, i):
        if self.fail and self.fail.stage == "decode" and i == self.fail.at:
            raise self.fail.exc
        return super().read(i)


class LiveSrc:
    """Camera-like iterator (``live = True``) that can raise for one frame and go on (unlike a generator)."""

    live = True
    fps = 30.0

    def __init__(self, n, fail: Failing | None):
        self.n, self.fail, self.i = n, fail, 0

    def __iter__(self):
        return self

    def __next__(self):
        i = self.i
        if i >= self.n:
            raise StopIteration
        self.i += 1
        if self.fail and self.fail.stage == "live" and i == self.fail.at:
            raise self.fail.exc
        return make_raw(i, fps=self.fps)


class Enh(FakeEnhancer):
    def __init__(self, fail: Failing | None):
        super().__init__()
        self.fail = fail
        self.close_calls = 0

    def warm_up(self, shape, meta):
        if self.fail and self.fail.stage == "warm-up":
            raise self.fail.exc
        super().warm_up(shape, meta)

    def process(self, frame):
        if self.fail and self.fail.stage == "infer" and frame.index == self.fail.at:
            raise self.fail.exc
        return super().process(frame)


class Sink(RecordingSink):
    def __init__(self, fail: Failing | None):
        super().__init__()
        self.fail = fail

    def write(self, frame):
        if self.fail and self.fail.stage == "encode" and frame.index == self.fail.at:
            raise self.fail.exc
        super().write(frame)


PIPELINE_STAGE = {"decode": "capture", "live": "capture", "warm-up": "infer", "infer": "infer", "encode": "encode"}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(sorted(PIPELINE_STAGE)),
    exc_name=st.sampled_from(sorted(EXCEPTIONS)),
    at=st.integers(0, 25),
    on_error=st.sampled_from(["stop", "skip"]),
    queue_size=st.integers(1, 6),
    decode_workers=st.integers(1, 4),
)
def test_exception_in_any_stage_at_any_frame(where, exc_name, at, on_error, queue_size, decode_workers):
    n = 30
    fail = Failing(where, at, EXCEPTIONS[exc_name]())
    src = LiveSrc(n, fail) if where == "live" else FileSrc(n, fail)
    enh, sink = Enh(fail), Sink(fail)
    cfg = PipelineConfig(on_error=on_error, queue_size=queue_size, decode_workers=decode_workers,
                         join_timeout_s=5.0, policy="block")
    t0 = time.monotonic()
    skipped = where in ("decode", "live") and exc_name == "FrameError" and on_error == "skip"
    if skipped:  # the only fault that is not fatal: a bad source frame, skipped by request
        s = Pipeline(src, enh, [sink], cfg, progress=False).run()
        assert [i for i, _, _ in s.skipped] == [at]
        assert sink.indices == [i for i in range(n) if i != at]
        assert_accounted(s, n_source=n)
    else:
        with pytest.raises(PipelineError) as ei:
            Pipeline(src, enh, [sink], cfg, progress=False).run()
        err = ei.value
        assert err.stage == PIPELINE_STAGE[where], str(err)
        assert err.__cause__ is fail.exc
        assert str(err).startswith(f"{err.stage} failed: ")
        assert str(fail.exc) in str(err)
        if where != "warm-up":
            assert f"frame {at}" in str(err)
        s = err.summary
        assert_accounted(s)
        assert s.ended_by == "error"
        assert sink.indices == list(range(s.frames_out))  # in order, nothing missing before the fault
        if where in ("decode", "live"):  # a source fault keeps every frame read before it
            assert s.frames_out == at and s.frames_discarded == 0
        if where == "warm-up":
            assert s.frames_out == 0
    assert sink.close_calls == 1 and sink.closed_by == [threading.current_thread().name]
    assert time.monotonic() - t0 < 10
    assert redi_threads() == []


class HangingRead(FakeFileSource):
    """``read(hang_at)`` blocks until released (a dead network share, a stuck USB disk)."""

    def __init__(self, n, hang_at, release, **kw):
        super().__init__(n, **kw)
        self.hang_at, self.release = hang_at, release

    def read(self, i):
        if i == self.hang_at:
            self.release.wait(30)
        return super().read(i)


class HangingCamera(FakeLiveSource):
    """A camera whose driver call never returns after ``hang_at`` frames."""

    def __init__(self, hang_at, release):
        super().__init__(None)
        self.hang_at, self.release = hang_at, release

    def __iter__(self):
        for f in super().__iter__():
            if f.index == self.hang_at:
                self.release.wait(30)
                return
            yield f


def _wait_threads_gone(timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while redi_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redi_threads() == []


@pytest.mark.parametrize("kind", ["file", "live"])  # (an id "camera" would match the camera marker)
def test_stalled_capture_is_reported_and_the_output_finalised(tmp_path, kind):
    release = threading.Event()
    hang_at = 9
    src = HangingRead(40, hang_at, release) if kind == "file" else HangingCamera(hang_at, release)
    out = tmp_path / "stall.mp4"
    sink = VideoSink(out, fps=24, preset="ultrafast", pts_from="index")
    t0 = time.monotonic()
    try:
        with pytest.raises(PipelineError) as ei:
            Pipeline(src, FakeEnhancer(), [sink], PipelineConfig(stall_timeout_s=0.5, join_timeout_s=1.0,
                                                                  policy="block"), progress=False).run()
        elapsed = time.monotonic() - t0
        err = ei.value
        assert err.stage == "capture" and isinstance(err.__cause__, TimeoutError)
        assert str(err).startswith("capture stalled: no progress for") and f"on frame {hang_at}" in str(err)
        assert elapsed < 5.0
        s = err.summary
        assert_accounted(s)
        assert s.frames_out == hang_at  # every frame read before the hang is enhanced and kept
        assert decoded_indices(out, 24) == list(range(hang_at))
    finally:
        release.set()
    _wait_threads_gone()


def test_stalled_warm_up_is_reported():
    release = threading.Event()

    class SlowWarm(FakeEnhancer):
        def warm_up(self, shape, meta):
            release.wait(30)

    sink = RecordingSink()
    try:
        with pytest.raises(PipelineError, match=r"infer stalled: no progress for .* warming up frame 0") as ei:
            Pipeline(FakeFileSource(10), SlowWarm(), [sink], PipelineConfig(warmup_timeout_s=0.5, join_timeout_s=1.0),
                     progress=False).run()
        assert ei.value.stage == "infer" and sink.close_calls == 1 and sink.indices == []
        assert_accounted(ei.value.summary)
    finally:
        release.set()
    _wait_threads_gone()


def test_app_closes_every_resource_once_when_a_stage_fails(tmp_path, monkeypatch):
    """Through ``app.run`` (the CLI's composition): source, sink and enhancer are each finalised exactly once,
    in reverse order of opening, whichever stage failed."""
    from redi_stream import app
    from redi_stream.config import RunConfig

    events: list[str] = []

    class Src(FakeFileSource):
        name = "fake"

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.close()

        def close(self):
            events.append("source.close")

    class CountingSink(VideoSink):
        def close(self):
            if not self._closed:
                events.append("sink.finalise")
            super().close()

    class E(Enh):
        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.close()

        def close(self):
            events.append("enhancer.close")

    out = tmp_path / "o.mp4"
    monkeypatch.setattr(app, "open_source", lambda cfg: Src(20))
    monkeypatch.setattr(app, "build_sinks", lambda cfg, source, stack, **kw: [
        stack.enter_context(CountingSink(out, fps=source.fps, preset="ultrafast"))])
    monkeypatch.setattr(app, "build_enhancer",
                        lambda cfg, stack, **kw: stack.enter_context(E(Failing("infer", 7, RuntimeError("x")))))
    with pytest.raises(PipelineError, match="infer failed: frame 7"):
        app.run(RunConfig(source="unused", out=out, progress=False))
    assert events == ["sink.finalise", "enhancer.close", "source.close"]
    assert decoded_indices(out, 24) == list(range(7))
    assert redi_threads() == []
