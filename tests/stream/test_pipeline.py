"""Pipeline lifecycle: order, errors naming the stage, joins, stalls, skip, sinks closed once, live drops."""

from __future__ import annotations

import threading
import time

import av
import pytest
from stream_fakes import (
    FakeEnhancer,
    FakeFileSource,
    FakeLiveSource,
    RecordingSink,
    redi_threads,
)

from redi_stream.errors import ConfigError, PipelineError, SinkError
from redi_stream.stream.channels import Policy
from redi_stream.stream.pipeline import OnError, Pipeline, PipelineConfig, RunSummary
from redi_stream.stream.sinks import VideoSink


def _run(source, enhancer, sinks, **cfg) -> RunSummary:
    return Pipeline(source, enhancer, sinks, PipelineConfig(**cfg), progress=False).run()


def test_source_ends_gives_valid_mp4_with_n_frames(tmp_path):
    out = tmp_path / "out.mp4"
    n = 12
    summary = _run(FakeFileSource(n, fps=25.0), FakeEnhancer(), [VideoSink(out, fps=25, preset="ultrafast")])
    assert summary.frames_in == summary.frames_out == n and summary.ended_by == "end"
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        frames = list(c.decode(s))
        rate = s.average_rate
    assert len(frames) == n
    assert rate == 25
    assert [f.pts * f.time_base * 25 for f in frames] == list(range(n))
    assert redi_threads() == []
    assert "frames written" in summary.format()


def test_order_preserved_with_decode_pool_and_random_delays():
    src = FakeFileSource(40, max_delay_s=0.02, seed=3)
    sink = RecordingSink()
    summary = _run(src, FakeEnhancer(), [sink], decode_workers=4, queue_size=2)
    assert sink.indices == list(range(40))
    assert sink.values == list(range(40))  # pixel content follows its index: no frame swapped
    assert sorted(src.reads) == list(range(40))
    assert summary.queue_high_water["capture->infer"] <= 2
    assert summary.stages["decode"].count == 40 and summary.stages["encode"].count == 40


def test_infer_runs_on_its_thread_and_warms_up_once():
    enh = FakeEnhancer()
    _run(FakeFileSource(5, shape=(32, 48)), enh, [RecordingSink()])
    assert enh.threads == {"redi-infer"} and enh.warmed == [(32, 48)]


@pytest.mark.parametrize("stage", ["capture", "infer", "encode"])
def test_stage_raises_pipeline_error_naming_it(stage):
    src = FakeFileSource(30, bad={12} if stage == "capture" else None)
    enh = FakeEnhancer(fail_at=12 if stage == "infer" else None)
    sink = RecordingSink(fail_at=12 if stage == "encode" else None)
    with pytest.raises(PipelineError) as ei:
        _run(src, enh, [sink])
    err = ei.value
    assert err.stage == stage
    assert str(err).startswith(f"{stage} failed: frame 12")
    assert "f0012.dng" in str(err)
    assert err.__cause__ is not None
    if stage == "capture":
        assert str(err) == "capture failed: frame 12 (f0012.dng): truncated file"
    assert redi_threads() == []
    assert sink.close_calls == 1
    assert sink.indices == list(range(len(sink.indices))) and len(sink.indices) <= 12
    assert err.summary.ended_by == "error"


def test_sinks_closed_once_in_reverse_order_by_the_caller():
    order = []

    class S(RecordingSink):
        def __init__(self, tag):
            super().__init__()
            self.tag = tag

        def close(self):
            super().close()
            order.append(self.tag)

    a, b = S("a"), S("b")
    _run(FakeFileSource(3), FakeEnhancer(), [a, b])
    assert order == ["b", "a"] and a.close_calls == b.close_calls == 1
    assert a.closed_by == [threading.current_thread().name]


def test_on_error_skip_records_and_leaves_frames_out():
    sink = RecordingSink()
    summary = _run(FakeFileSource(10, bad={2, 7}), FakeEnhancer(), [sink], on_error="skip")
    assert sink.indices == [0, 1, 3, 4, 5, 6, 8, 9]
    assert [(i, n) for i, n, _ in summary.skipped] == [(2, "f0002.dng"), (7, "f0007.dng")]
    assert "truncated" in summary.skipped[0][2]
    assert summary.frames_out == 8 and "2 skipped" in summary.format()


def test_on_error_skip_mp4_has_n_minus_k_frames(tmp_path):
    out = tmp_path / "skip.mp4"
    _run(FakeFileSource(10, bad={4}), FakeEnhancer(), [VideoSink(out, fps=24, preset="ultrafast")],
         on_error=OnError.SKIP)
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 9


def test_stalled_consumer_stops_within_the_timeout():
    release = threading.Event()
    sink = RecordingSink(stall_at=3, release=release)
    t0 = time.monotonic()
    try:
        with pytest.raises(PipelineError) as ei:
            _run(FakeFileSource(20), FakeEnhancer(), [sink], stall_timeout_s=0.5, join_timeout_s=1.0)
        elapsed = time.monotonic() - t0
        assert ei.value.stage == "encode"
        assert "encode stalled" in str(ei.value) and "frame 3" in str(ei.value)
        assert elapsed < 4.0
        assert redi_threads() == ["redi-encode"]  # the stuck one is left (daemon), the others stopped
        assert sink.close_calls == 0  # never closed under a stuck write
    finally:
        release.set()
    deadline = time.monotonic() + 3
    while redi_threads() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert redi_threads() == []


def test_stalled_infer_still_finalises_encoded_frames():
    release = threading.Event()
    sink = RecordingSink()
    try:
        with pytest.raises(PipelineError, match="infer stalled") as ei:
            _run(FakeFileSource(20), FakeEnhancer(stall_at=5, release=release), [sink], stall_timeout_s=0.4)
        assert ei.value.stage == "infer"
        assert sink.indices == [0, 1, 2, 3, 4] and sink.close_calls == 1
    finally:
        release.set()


def test_stop_from_another_thread_drains_and_returns():
    sink = RecordingSink()
    p = Pipeline(FakeFileSource(1000, delay_s=0.002), FakeEnhancer(), [sink], PipelineConfig(), progress=False)
    threading.Timer(0.2, p.stop).start()
    summary = p.run()
    assert summary.ended_by == "stop" and 0 < summary.frames_out < 1000
    assert sink.indices == list(range(summary.frames_out)) and sink.close_calls == 1
    assert summary.frames_in == summary.frames_out + summary.frames_discarded


def test_live_source_drops_oldest_and_counts():
    sink = RecordingSink()
    summary = _run(FakeLiveSource(60), FakeEnhancer(delay_s=0.01), [sink], queue_size=2)
    assert summary.frames_dropped > 0
    assert summary.frames_out + summary.frames_dropped == 60
    assert sink.indices == sorted(sink.indices)  # dropped, never reordered


def test_max_frames_and_rss_samples():
    summary = _run(FakeLiveSource(None), FakeEnhancer(), [RecordingSink()], max_frames=20, rss_every_frames=5,
                   policy=Policy.BLOCK)
    assert summary.frames_out == 20 and [n for n, _ in summary.rss_samples] == [5, 10, 15, 20]
    assert summary.peak_rss_bytes > 0


def test_zero_frame_source(tmp_path):
    sink = VideoSink(tmp_path / "empty.mp4")
    summary = _run(FakeFileSource(0), FakeEnhancer(), [sink])
    assert summary.frames_out == 0 and not (tmp_path / "empty.mp4").exists()


def test_close_failure_is_reported_as_encode_error():
    class BadClose(RecordingSink):
        def close(self):
            super().close()
            raise SinkError("cannot finalise out.mp4: disk full")

    sink = BadClose()
    with pytest.raises(PipelineError, match="encode failed: closing") as ei:
        _run(FakeFileSource(3), FakeEnhancer(), [sink])
    assert isinstance(ei.value.__cause__, SinkError) and sink.close_calls == 1


def test_run_only_once():
    p = Pipeline(FakeFileSource(1), FakeEnhancer(), [RecordingSink()], progress=False)
    p.run()
    with pytest.raises(RuntimeError):
        p.run()


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"decode_workers": 0}, {"on_error": "ignore"},
                                    {"stall_timeout_s": 0}, {"policy": "random"}])
def test_config_validation_lists_choices(kwargs):
    with pytest.raises(ConfigError):
        PipelineConfig(**kwargs)
    if "on_error" in kwargs:
        with pytest.raises(ConfigError, match="stop, skip"):
            PipelineConfig(**kwargs)


def test_preview_runs_on_the_callers_thread_and_can_stop_the_run():
    class Preview:
        def __init__(self):
            self.shown, self.threads = [], set()

        def show(self, frame, fps):
            self.shown.append(frame.index)
            self.threads.add(threading.current_thread().name)
            return len(self.shown) < 3

    preview = Preview()
    sink = RecordingSink()
    p = Pipeline(FakeFileSource(500, delay_s=0.005), FakeEnhancer(), [sink], PipelineConfig(), progress=False,
                 preview=preview)
    summary = p.run()
    assert summary.ended_by == "preview" and len(preview.shown) == 3
    assert preview.threads == {threading.current_thread().name}
    assert preview.shown == sorted(preview.shown)
    assert sink.indices == list(range(summary.frames_out)) and summary.frames_out < 500


def test_null_preview_and_make_preview_disabled():
    from redi_stream.stream.preview import NullPreview, make_preview

    with make_preview(False) as pv:
        assert isinstance(pv, NullPreview)
    summary = Pipeline(FakeFileSource(5), FakeEnhancer(), [RecordingSink()], progress=False,
                       preview=NullPreview()).run()
    assert summary.frames_out == 5


@pytest.mark.display
def test_window_preview_shows_and_closes():
    import numpy as np

    from redi_stream.frames import EnhancedFrame
    from redi_stream.stream.preview import WindowPreview

    pv = WindowPreview("redi-stream test")
    frame = EnhancedFrame(rgb=np.zeros((2160, 3840, 3), np.uint16), index=0, t_ns=0)
    assert pv.show(frame, 12.5) is True
    pv.close()
    pv.close()
    assert pv.show(frame, 12.5) is False


def test_preview_failure_is_a_pipeline_error_and_output_is_finalised():
    class Broken:
        def show(self, frame, fps):
            raise RuntimeError("window system gone")

    sink = RecordingSink()
    with pytest.raises(PipelineError, match=r"preview failed: frame \d+") as ei:
        Pipeline(FakeFileSource(50, delay_s=0.002), FakeEnhancer(), [sink], progress=False, preview=Broken()).run()
    assert ei.value.stage == "preview" and sink.close_calls == 1 and redi_threads() == []


def test_keyboard_interrupt_without_handlers_still_stops_the_stages():
    import _thread
    import signal

    # Python's own SIGINT handler, as in an interactive run: a shell starts background jobs with SIGINT ignored,
    # and interrupt_main() then does nothing.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sink = RecordingSink()
        p = Pipeline(FakeFileSource(10_000, delay_s=0.002), FakeEnhancer(), [sink],
                     PipelineConfig(handle_signals=False, join_timeout_s=5), progress=False)
        threading.Timer(0.2, _thread.interrupt_main).start()
        t0 = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            p.run()
        assert time.monotonic() - t0 < 3 and redi_threads() == [] and sink.close_calls == 1
    finally:
        signal.signal(signal.SIGINT, previous)


def test_start_reads_from_that_index_and_keeps_the_numbers():
    sink = RecordingSink()
    summary = Pipeline(FakeFileSource(8), FakeEnhancer(), [sink], PipelineConfig(start=3, max_frames=2),
                       progress=False).run()
    assert sink.indices == [3, 4] and summary.frames_in == summary.frames_out == 2
    summary = Pipeline(FakeFileSource(8), FakeEnhancer(), [sink := RecordingSink()], PipelineConfig(start=6),
                       progress=False).run()
    assert sink.indices == [6, 7]
    with pytest.raises(ConfigError, match="start applies to file sources"):
        Pipeline(FakeLiveSource(4), FakeEnhancer(), [], PipelineConfig(start=1), progress=False)
    with pytest.raises(ConfigError, match="start must be >= 0"):
        PipelineConfig(start=-1)


class _LookingEnhancer(FakeEnhancer):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.told: list[tuple[int, int]] = []  # (frame processed next, the one told ahead)
        self._ahead: int | None = None

    def look_ahead(self, frame) -> None:
        self._ahead = frame.index

    def process(self, frame):
        self.told.append((frame.index, self._ahead))
        self._ahead = None
        return super().process(frame)


def test_file_frames_are_told_one_ahead_and_live_ones_are_not():
    enh, sink = _LookingEnhancer(), RecordingSink()
    Pipeline(FakeFileSource(6, max_delay_s=0.005), enh, [sink], PipelineConfig(), progress=False).run()
    assert enh.told == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, None)] and sink.indices == list(range(6))
    live = _LookingEnhancer()
    Pipeline(FakeLiveSource(4), live, [RecordingSink()], PipelineConfig(), progress=False).run()
    assert [ahead for _, ahead in live.told] == [None] * len(live.told)


def test_a_stop_discards_the_frame_held_for_look_ahead_and_the_counts_add_up():
    enh, sink = _LookingEnhancer(delay_s=0.05), RecordingSink()
    p = Pipeline(FakeFileSource(200), enh, [sink], PipelineConfig(), progress=False)
    threading.Timer(0.3, p.stop).start()
    s = p.run()
    assert 0 < s.frames_out < 200 and s.frames_discarded >= 1
    assert s.frames_in == s.frames_out + s.frames_dropped + s.frames_discarded + s.frames_failed
    assert sink.indices == list(range(s.frames_out))  # nothing after the stop, nothing skipped


class _HotSpotEnhancer(FakeEnhancer):
    """Records the raw value at (20, 30) of each frame it gets, and the threads the filter ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.spot: list[int] = []

    def process(self, frame):
        self.spot.append(int(frame.data[20, 30]))
        return super().process(frame)


@pytest.mark.parametrize("live", [False, True])
def test_the_frame_filter_runs_where_frames_are_read_and_the_enhancer_gets_its_frames(live: bool) -> None:
    from redi_stream.stream.hotpixels import HotPixelFilter

    class Hot(FakeLiveSource if live else FakeFileSource):
        def read(self, i):  # file source
            frame = super().read(i)
            frame.data[20, 30] = 900  # one hot sample in a flat frame
            return frame

        def __iter__(self):  # live source
            for frame in super().__iter__():
                frame.data[20, 30] = 900
                yield frame

    filt = HotPixelFilter()
    threads: set[str] = set()

    def filter_(frame):
        threads.add(threading.current_thread().name)
        return filt(frame)

    enh = _HotSpotEnhancer()
    cfg = PipelineConfig(decode_workers=2, **({"policy": Policy.BLOCK} if live else {}))
    Pipeline(Hot(6), enh, [RecordingSink()], cfg, progress=False, frame_filter=filter_).run()
    assert enh.spot == [64 + i for i in range(6)]  # the flat value of each frame, not 900
    assert filt.frames == 6 and filt.replaced == 6 and "6 replaced in 6 frames" in filt.summary()
    assert all(t.startswith("redi-capture" if live else "redi-decode") for t in threads), threads
