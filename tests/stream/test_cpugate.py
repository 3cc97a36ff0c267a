"""CpuGate: an all-core forward runs alone or (shrinking) beside only the chunks that started before it; decode reads
and sink writes never start inside one."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest
from stream_fakes import FakeEnhancer, FakeFileSource, RecordingSink

from redi_stream.stream.cpugate import CpuGate
from redi_stream.stream.pipeline import Pipeline, PipelineConfig


class _Chunks:
    """Decode/encode chunks on their own threads, logging start and end; ``held(name)`` starts one that stays inside
    the gate until :meth:`release`."""

    def __init__(self, gate: CpuGate) -> None:
        self.gate = gate
        self.events: list[str] = []
        self._running = threading.Event()
        self._release = threading.Event()
        self.threads: list[threading.Thread] = []

    def _body(self, name: str, hold: bool) -> None:
        with self.gate.shared():
            self.events.append(f"{name} start")
            if hold:
                self._running.set()
                self._release.wait(5)
            self.events.append(f"{name} end")

    def start(self, name: str, hold: bool = False) -> threading.Thread:
        t = threading.Thread(target=self._body, args=(name, hold))
        t.start()
        self.threads.append(t)
        if hold:
            assert self._running.wait(5)
        return t

    def release(self) -> None:
        self._release.set()


def test_exclusive_waits_for_running_chunks_and_blocks_new_ones() -> None:
    gate = CpuGate()
    chunks = _Chunks(gate)
    events = chunks.events

    def forward() -> None:
        with gate.exclusive():
            events.append("forward start")
            time.sleep(0.05)
            events.append("forward end")

    chunks.start("a", hold=True)
    f = threading.Thread(target=forward)
    f.start()
    time.sleep(0.05)  # the forward now waits for chunk a
    chunks.start("b")
    time.sleep(0.05)  # chunk b must wait for the waiting forward (writer preference)
    assert events == ["a start"]
    chunks.release()
    for t in (*chunks.threads, f):
        t.join(5)
    assert events == ["a start", "a end", "forward start", "forward end", "b start", "b end"]
    assert gate.exclusive_count == 1 and gate.exclusive_wait_s > 0.04


def test_shrinking_forward_starts_beside_running_chunks_with_fewer_threads() -> None:
    gate = CpuGate()
    chunks = _Chunks(gate)
    events = chunks.events
    a = chunks.start("a", hold=True)
    with gate.forward(True, shrink=True):
        events.append("forward start")  # at once: chunk a is still running
        assert gate.threads(2) == 1 and gate.threads(4) == 3
        b = chunks.start("b")
        time.sleep(0.05)
        assert events == ["a start", "forward start"]  # no new chunk starts inside the forward
        chunks.release()
        a.join(5)
        assert gate.threads(2) == 2  # chunk a has ended: all threads again
        events.append("forward end")
    b.join(5)
    assert events == ["a start", "forward start", "a end", "forward end", "b start", "b end"]
    assert gate.exclusive_count == 1 and gate.shrunk_count == 1 and gate.exclusive_wait_s < 0.04
    gate.disable()
    assert gate.threads(2) == 2


def test_shared_chunks_run_together() -> None:
    gate = CpuGate()
    inside = threading.Barrier(2, timeout=5)

    def chunk() -> None:
        with gate.shared():
            inside.wait()  # both chunks inside at once, or the barrier times out

    ts = [threading.Thread(target=chunk) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(5)
    assert not inside.broken


class _Intervals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.exclusive: list[tuple[float, float]] = []
        self.shared: list[tuple[float, float]] = []

    def add(self, kind: str, t0: float, t1: float) -> None:
        with self.lock:
            getattr(self, kind).append((t0, t1))


class _GatedEnhancer(FakeEnhancer):
    """A FakeEnhancer whose 'forward' takes the pipeline's gate, as TorchRunner does on all cores."""

    def __init__(self, rec: _Intervals, *, stall_in_forward_at: int | None = None,
                 release: threading.Event | None = None, shrink: bool = False) -> None:
        super().__init__(release=release)
        self.cpu_gate = None
        self.rec = rec
        self.stall_in_forward_at = stall_in_forward_at
        self.shrink = shrink

    def process(self, frame):
        with self.cpu_gate.forward(True, shrink=self.shrink):
            t0 = time.perf_counter()
            time.sleep(0.004)
            if frame.index == self.stall_in_forward_at:
                self.release.wait(30)
            self.rec.add("exclusive", t0, time.perf_counter())
        return super().process(frame)


class _TimedSource(FakeFileSource):
    def __init__(self, n: int, rec: _Intervals) -> None:
        super().__init__(n, max_delay_s=0.003, seed=1)
        self.rec = rec

    def read(self, i: int):
        t0 = time.perf_counter()
        frame = super().read(i)
        self.rec.add("shared", t0, time.perf_counter())
        return frame


class _TimedSink(RecordingSink):
    def __init__(self, rec: _Intervals) -> None:
        super().__init__()
        self.rec = rec

    def write(self, frame) -> None:
        t0 = time.perf_counter()
        time.sleep(0.002)
        super().write(frame)
        self.rec.add("shared", t0, time.perf_counter())


@pytest.mark.parametrize("queue_size, workers, shrink", [(1, 1, False), (4, 3, False), (1, 1, True), (4, 3, True)])
def test_pipeline_never_starts_a_decode_or_encode_inside_a_gated_forward(queue_size: int, workers: int,
                                                                        shrink: bool) -> None:
    rec = _Intervals()
    enh = _GatedEnhancer(rec, shrink=shrink)
    sink = _TimedSink(rec)
    cfg = PipelineConfig(queue_size=queue_size, decode_workers=workers, handle_signals=False)
    summary = Pipeline(_TimedSource(30, rec), enh, [sink], cfg, progress=False).run()
    assert summary.frames_out == 30 and sink.indices == list(range(30))
    assert isinstance(enh.cpu_gate, CpuGate) and enh.cpu_gate.exclusive_count == 30
    assert len(rec.exclusive) == 30 and len(rec.shared) == 60
    # A chunk never starts inside a forward; without shrinking, one never runs inside one at all.
    started_inside = [(e, s) for e in rec.exclusive for s in rec.shared if e[0] < s[0] < e[1]]
    overlaps = [(e, s) for e in rec.exclusive for s in rec.shared if s[0] < e[1] and e[0] < s[1]]
    assert started_inside == []
    if not shrink:
        assert overlaps == [] and enh.cpu_gate.shrunk_count == 0


def test_pipeline_without_the_gate_leaves_the_enhancer_alone() -> None:
    enh = FakeEnhancer()
    Pipeline(FakeFileSource(3), enh, [RecordingSink()], PipelineConfig(handle_signals=False), progress=False).run()
    assert not hasattr(enh, "cpu_gate")
    rec = _Intervals()
    gated = _GatedEnhancer(rec)
    gated.cpu_gate = CpuGate()  # what a previous owner set; cpu_gate=False keeps it
    keep = gated.cpu_gate
    Pipeline(FakeFileSource(2), gated, [RecordingSink()], PipelineConfig(handle_signals=False, cpu_gate=False),
             progress=False).run()
    assert gated.cpu_gate is keep


class _CountingGate:
    def __init__(self) -> None:
        self.forwards: list[bool] = []
        self.asked: list[int] = []

    def forward(self, exclusive: bool, shrink: bool = False):
        import contextlib

        assert shrink  # TorchRunner's forward can change its thread count between ops
        self.forwards.append(exclusive)
        return contextlib.nullcontext()

    def threads(self, n: int) -> int:
        self.asked.append(n)
        return 1 if len(self.asked) <= 5 else n  # one thread for the first ops, as beside a running encode


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell an all-core forward from a 1-thread one")
def test_torch_runner_takes_the_gate_only_for_all_core_forwards() -> None:
    torch = pytest.importorskip("torch")
    from redi_stream.model import RediNet, TorchRunner

    torch.manual_seed(0)
    net = RediNet(weight_norm=False).eval()
    x = np.zeros((1, 1, 32, 32), np.float32)
    threads_before = torch.get_num_threads()
    try:
        for threads, exclusive in ((1, False), (os.cpu_count(), True)):
            with TorchRunner(net, "cpu", "fp32", num_threads=threads) as runner:
                gate = _CountingGate()
                runner.cpu_gate = gate
                runner.run(x)
                runner.run(x)
                assert gate.forwards == [exclusive, exclusive], threads
                # Only all-core forwards follow the gate's thread count, and the count is restored after each.
                assert (len(gate.asked) == 2 * 28) == exclusive and set(gate.asked) <= {threads}
                assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(threads_before)


def test_encode_of_a_frame_waits_for_the_next_forward_or_an_idle_infer() -> None:
    gate = CpuGate()
    with gate.exclusive():
        pass
    made_in = gate.epoch
    started = threading.Event()

    def encode() -> None:
        with gate.shared(after_epoch=made_in):
            started.set()

    t = threading.Thread(target=encode)
    t.start()
    assert not started.wait(0.1)  # the infer thread is busy (ISP, pack): the next forward comes first
    with gate.exclusive():
        assert not started.wait(0.05)  # and runs alone
    assert started.wait(5)  # then the encode runs, beside the next frame's ISP
    t.join(5)

    started.clear()
    t = threading.Thread(target=encode_after(gate, gate.epoch, started))
    t.start()
    assert not started.wait(0.1)
    with gate.waiting():  # the infer thread waits on a channel: nothing to wait for
        assert started.wait(5)
    t.join(5)


def encode_after(gate: CpuGate, epoch: int, started: threading.Event):
    def body() -> None:
        with gate.shared(after_epoch=epoch):
            started.set()
    return body


def test_without_an_exclusive_forward_encodes_never_wait_for_epochs() -> None:
    gate = CpuGate()
    with gate.forward(exclusive=False):  # e.g. the tuner chose 1 thread: cores are free
        pass
    done = threading.Event()
    t = threading.Thread(target=encode_after(gate, gate.epoch, done))
    t.start()
    assert done.wait(5)
    t.join(5)


def test_forward_stalled_inside_the_gate_still_finalises_encoded_frames() -> None:
    from redi_stream.errors import PipelineError

    release = threading.Event()
    rec = _Intervals()
    sink = RecordingSink()
    try:
        with pytest.raises(PipelineError, match="infer stalled"):
            cfg = PipelineConfig(stall_timeout_s=0.5, handle_signals=False)
            Pipeline(FakeFileSource(20), _GatedEnhancer(rec, stall_in_forward_at=5, release=release), [sink], cfg,
                     progress=False).run()
        assert sink.indices == [0, 1, 2, 3, 4] and sink.close_calls == 1
    finally:
        release.set()


def test_a_forward_hung_in_the_gate_is_blamed_not_the_decode_it_holds_up(monkeypatch) -> None:
    # The decode read of a later frame waits for the gate the hung forward holds, so it too is busy past the limit.
    # With the watchdog polling rarely, both are over it at the same poll: the one stuck longest (infer) is the
    # cause. Blaming capture left encode waiting for the stuck infer thread and the output unfinalised.
    import redi_stream.stream.pipeline as pipeline_module
    from redi_stream.errors import PipelineError

    monkeypatch.setattr(pipeline_module, "_POLL_S", 1.0)
    release = threading.Event()
    sink = RecordingSink()
    try:
        with pytest.raises(PipelineError, match="infer stalled"):
            cfg = PipelineConfig(stall_timeout_s=0.5, handle_signals=False)
            Pipeline(FakeFileSource(20), _GatedEnhancer(_Intervals(), stall_in_forward_at=5, release=release), [sink],
                     cfg, progress=False).run()
        assert sink.indices == [0, 1, 2, 3, 4] and sink.close_calls == 1
    finally:
        release.set()


def test_the_watchdog_blames_infer_over_the_stages_it_holds_up() -> None:
    from redi_stream.stream.pipeline import _StageState, stalled_stage

    cfg = PipelineConfig(stall_timeout_s=1.0, warmup_timeout_s=5.0)
    states = {name: _StageState(name) for name in ("capture", "infer", "encode")}
    assert stalled_stage(states, 100.0, cfg) is None  # all idle
    states["capture"].busy(8, "f0008.dng")
    states["capture"].busy_since = 98.9  # a decode read waiting for the gate
    states["encode"].busy(4)
    states["encode"].busy_since = 98.0  # a sink write waiting for the gate, since before the forward began
    assert stalled_stage(states, 100.0, cfg) == ("encode", 2.0)  # infer not over its limit: the longest busy
    states["infer"].busy(5, "f0005.dng")
    states["infer"].busy_since = 98.5  # the forward that holds the gate
    assert stalled_stage(states, 100.0, cfg) == ("infer", 1.5)  # over its limit: it is the cause
    states["infer"].phase = "warm-up"  # warm-up has its own, longer limit: infer is not over it
    assert stalled_stage(states, 100.0, cfg) == ("encode", 2.0)
