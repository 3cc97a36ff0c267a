"""The threaded pipeline: ``redi-capture`` -> ``redi-infer`` -> ``redi-encode``, run and supervised by the caller.

Threads and what they own::

    caller (main) thread   Pipeline.run(): starts the stages, watchdog, progress bar, preview window, signals;
                           joins the stages and closes (finalises) the sinks in reverse order in a ``finally``.
    redi-capture           reads the source. File sources (``live == False`` with ``read(i)``): a small
                           ThreadPoolExecutor (``redi-decode_*``) decodes ahead, at most ``decode_workers + 2``
                           reads outstanding, results taken strictly in order (no reordering, no drops).
                           Live sources: plain iteration, paused after the first frame until the enhancer
                           has warmed up (the sensor's frames of that time are skipped, not counted as drops:
                           ``source.warmed_up()`` is told when it ends).
    redi-infer             the only thread that calls the enhancer (and so the only one that touches CUDA);
                           ``enhancer.warm_up`` runs here, on the first frame.
    redi-encode            writes every enhanced frame to every sink, in order.

Channels (see :mod:`.channels`), built in ``Pipeline.__init__`` (one run per pipeline):

* ``capture->infer``: ``Policy.BLOCK`` for file sources (no frame lost), ``Policy.DROP_OLDEST`` for live sources
  (drops counted in ``RunSummary.frames_dropped``), capacity ``queue_size``;
* ``infer->encode``: ``Policy.BLOCK`` always (an enhanced frame is never thrown away), capacity ``queue_size``;
* ``preview``: ``Policy.LATEST`` mailbox read by the caller's thread; fed by ``redi-encode`` after writing, or for
  live sources by ``redi-infer`` as soon as a frame is enhanced (display latency without the encoder).

Stopping. One ``threading.Event`` (``stop``) means "capture no more". Whatever sets it -- the first SIGINT/SIGTERM,
:meth:`Pipeline.stop`, the preview window closing, a stage failing or stalling -- the same thing follows: capture
stops reading, frames captured but not yet enhanced are discarded (``RunSummary.frames_discarded``), the frame
being enhanced finishes, every enhanced frame is encoded, the sinks are finalised. (Exception: when *capture*
fails, the frames it read before the bad one are still enhanced and encoded, so ``--on-error stop`` always keeps
exactly the frames before the first bad frame.) Every frame taken in is accounted for:
``frames_in == frames_out + frames_dropped + frames_discarded + frames_failed``. So a stop costs at most one
inference plus ``queue_size`` encodes, and the output holds every frame that was enhanced. Then ``run`` raises
``Interrupted`` (signals; ``.signum`` set, suggested exit status 128 + signum, i.e. 130 for SIGINT, 143 for
SIGTERM), ``PipelineError`` (failures), or returns the summary (``stop()`` / preview closed). A second signal
abandons draining: the channels are cancelled, the sinks closed as they are, and if that has not finished within
1.5 s the process ends with ``os._exit(130)``.

Errors. A stage's exception is stored and re-raised in the caller's thread as ``PipelineError(stage)`` with the
original as ``__cause__`` and the frame named, e.g. ``capture failed: frame 12 (x.dng): truncated file``. With
``on_error="skip"`` a :class:`~redi_stream.errors.FrameError` from the source is logged, recorded in
``RunSummary.skipped`` and the frame left out (a video sink's pts come from timestamps, so the previous frame is
held for its slot and the timing of the clip is kept). A preview that raises fails the run as stage ``preview``. A
stage busy on one frame for longer than ``stall_timeout_s``
(``warmup_timeout_s`` during warm-up) is a stall: ``PipelineError(stage, "<stage> stalled: ...")``. A stalled
thread cannot be killed; it is a daemon thread left behind, and if it is ``redi-encode`` the sinks are not closed
from another thread (that would race the stuck call).

Signal handlers are installed only when ``run()`` is called from the main thread (and ``handle_signals``), and the
previous handlers are restored before it returns.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import logging
import os
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from ..errors import ConfigError, FrameError, Interrupted, PipelineError
from ..frames import EnhancedFrame, RawFrame, frames_text
from .channels import END, Channel, Policy
from .cpugate import CpuGate
from .stats import RateMeter, RssRecorder, StageSummary, StageTimers, peak_rss_bytes

log = logging.getLogger(__name__)

STAGES = ("capture", "infer", "encode")
_FORCE_GRACE_S = 1.5  # after a second signal: time to close the sinks before os._exit(130)
_FORCE_WAIT_S = 0.25  # after a second signal: time the stages get to leave (channels are cancelled) before closing
_POLL_S = 0.05


class OnError(enum.StrEnum):
    """What to do when the source reports one bad frame (:class:`FrameError`)."""

    STOP = "stop"
    SKIP = "skip"


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of one pipeline run.

    Attributes:
        queue_size: capacity of the capture->infer and infer->encode channels (frames).
        policy: overflow policy of capture->infer; ``None`` picks ``BLOCK`` for file sources and ``DROP_OLDEST``
            for live ones (``source.live``).
        decode_workers: threads decoding file frames ahead of the network (1..64).
        on_error: ``"stop"`` (first bad frame fails the run) or ``"skip"`` (bad frames are recorded and left out).
        stall_timeout_s: a stage busy on one frame longer than this is stalled (watchdog).
        warmup_timeout_s: the same limit for ``enhancer.warm_up`` (kernel compilation, CUDA graphs).
        join_timeout_s: after a stop, how long stages get to wind down before they count as stalled.
        max_frames: stop after this many source frames (``None``: until the source ends).
        start: file sources: the first frame to read (0-based; frames keep their source indices, so an image
            sequence resumed with ``start`` continues the names it had).
        rss_every_frames: record ``(frames_out, RSS)`` in ``RunSummary.rss_samples`` every N frames (0: never).
        handle_signals: install SIGINT/SIGTERM handlers during ``run()`` (only effective on the main thread).
        cpu_gate: when the enhancer takes one (``enhancer.cpu_gate``, e.g. ``RediEnhancer`` on a CPU
            ``TorchRunner``), share a :class:`~.cpugate.CpuGate` between its all-core forwards (exclusive) and the
            decode reads and sink writes (shared), so the pipeline's own CPU work starts between forwards instead of
            stalling them, and a forward that starts beside a running chunk uses fewer threads (see :mod:`.cpugate`).
    """

    queue_size: int = 4
    policy: Policy | None = None
    decode_workers: int = 2
    on_error: OnError = OnError.STOP
    stall_timeout_s: float = 60.0
    warmup_timeout_s: float = 600.0
    join_timeout_s: float = 10.0
    max_frames: int | None = None
    start: int = 0
    rss_every_frames: int = 0
    handle_signals: bool = True
    cpu_gate: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.queue_size <= 1024:
            raise ConfigError(f"queue_size must be in 1..1024, got {self.queue_size}")
        if self.policy is not None:
            try:
                object.__setattr__(self, "policy", Policy(self.policy))
            except ValueError:
                raise ConfigError(
                    f"invalid policy {self.policy!r}; valid: {', '.join(p.value for p in Policy)}"
                ) from None
        if not 1 <= self.decode_workers <= 64:
            raise ConfigError(f"decode_workers must be in 1..64, got {self.decode_workers}")
        try:
            object.__setattr__(self, "on_error", OnError(self.on_error))
        except ValueError:
            raise ConfigError(
                f"invalid on_error {self.on_error!r}; valid: {', '.join(o.value for o in OnError)}"
            ) from None
        for name in ("stall_timeout_s", "warmup_timeout_s", "join_timeout_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_frames is not None and self.max_frames < 0:
            raise ConfigError(f"max_frames must be >= 0, got {self.max_frames}")
        if self.start < 0:
            raise ConfigError(f"start must be >= 0, got {self.start}")
        if self.rss_every_frames < 0:
            raise ConfigError(f"rss_every_frames must be >= 0, got {self.rss_every_frames}")


class Enhancer(Protocol):
    """What the infer stage calls, all from the ``redi-infer`` thread (see :mod:`.enhance`)."""

    def warm_up(self, shape: tuple[int, int], meta: Any) -> None: ...

    def process(self, frame: RawFrame) -> EnhancedFrame: ...


class Preview(Protocol):
    """A live window driven from the caller's thread. ``show`` returns False when the user closed it.

    Optional, used when present: ``bind_status(fn)`` (called once in ``Pipeline.__init__`` with
    :meth:`Pipeline.status`, for an overlay), ``poll() -> bool`` (called when no new frame arrived within 50 ms:
    process keys/window events; False = closed), ``paused`` (True: frames shown now are not displayed, so they do
    not count as displayed in the ``display`` latency), ``wants_raw`` (True: ``EnhancedFrame.raw`` is set, for a
    side-by-side view).
    """

    def show(self, frame: EnhancedFrame, fps: float) -> bool: ...


@dataclass(frozen=True)
class PipelineStatus:
    """A snapshot of a running pipeline for overlays (:meth:`Pipeline.status`); counts may be one frame stale.

    Attributes:
        frames_in, frames_out: frames taken from the source / written to the sinks so far.
        frames_dropped: live sources: frames dropped because the pipeline was behind (the source's own hand-off
            plus the capture->infer channel).
        capture_fps: frames per second the source delivers (a camera's own measured rate when it has one, else
            frames entering the pipeline), over the last second.
        output_fps: frames per second written, over the last second.
    """

    frames_in: int
    frames_out: int
    frames_dropped: int
    capture_fps: float
    output_fps: float


@dataclass
class RunSummary:
    """What happened in one run.

    Attributes:
        frames_in: frames taken from the source into the pipeline.
        frames_out: frames written to every sink.
        frames_dropped: frames a live source's ``DROP_OLDEST`` channel dropped.
        frames_dropped_at_source: frames the source itself dropped before the pipeline took them
            (``source.frames_dropped``, e.g. a camera's reader mailbox); not part of ``frames_in``.
        frames_discarded: captured frames thrown away by a stop or failure before they were written (unenhanced, or
            enhanced but refused by an encode stage that had failed).
        frames_failed: frames lost inside a stage: the one infer or encode raised on, or one a stalled (or not
            joined) infer/encode thread still holds.
        skipped: ``(index, name, reason)`` of each bad frame left out (``on_error="skip"``).
        wall_s: seconds from ``run()`` start to end (warm-up included); ``fps = frames_out / wall_s``.
        warmup_s: seconds spent in ``enhancer.warm_up``.
        stages: latency per stage (``decode``, enhancer keys such as ``gain``/``pack``/``infer``/``isp``,
            ``encode``), ``latency`` (capture to encoded: pipeline entry, or for sources with
            ``timestamps_monotonic`` the frame's own capture time) and ``display`` (capture to shown in the
            preview, when there is one; frames shown while the preview is paused are not counted).
        peak_rss_bytes: peak resident memory of the process (``getrusage``).
        rss_samples: ``(frames_out, rss_bytes)`` every ``rss_every_frames`` frames.
        queue_high_water: most frames queued at once per channel.
        ended_by: ``"end"`` (source ended / ``max_frames``), ``"stop"``, ``"preview"``, ``"SIGINT"``, ``"SIGTERM"``,
            ``"error"``.
    """

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: int = 0
    frames_discarded: int = 0
    frames_failed: int = 0
    frames_dropped_at_source: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    wall_s: float = 0.0
    fps: float = 0.0
    warmup_s: float = 0.0
    stages: dict[str, StageSummary] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    rss_samples: list[tuple[int, int]] = field(default_factory=list)
    queue_high_water: dict[str, int] = field(default_factory=dict)
    ended_by: str = "end"

    def format(self) -> str:
        """Multi-line human summary for the end of a run."""
        lines = [
            f"{frames_text(self.frames_out)} written in {self.wall_s:.2f} s ({self.fps:.2f} fps"
            + (f", warm-up {self.warmup_s:.2f} s" if self.warmup_s else "")
            + f"); ended by {self.ended_by}",
        ]
        extra = []
        if self.frames_in != self.frames_out:
            extra.append(f"{self.frames_in} read")
        if self.frames_dropped or self.frames_dropped_at_source:
            extra.append(f"{self.frames_dropped + self.frames_dropped_at_source} dropped (live source too fast)")
        if self.frames_discarded:
            extra.append(f"{self.frames_discarded} discarded on stop")
        if self.frames_failed:
            extra.append(f"{self.frames_failed} lost in the failing stage")
        if self.skipped:
            extra.append(f"{len(self.skipped)} skipped")
        if extra:
            lines.append("  " + ", ".join(extra))
        for index, name, reason in self.skipped[:10]:
            lines.append(f"  skipped frame {index} ({name}): {reason}")
        if len(self.skipped) > 10:
            lines.append(f"  ... and {len(self.skipped) - 10} more skipped")
        if self.stages:
            lines.append(f"  {'stage':<10}{'mean ms':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
            order = ["decode", "gain", "pack", "infer", "isp", "encode", "latency", "display"]
            names = sorted(self.stages, key=lambda k: (order.index(k) if k in order else len(order), k))
            for name in names:
                s = self.stages[name]
                lines.append(f"  {name:<10}{s.mean_ms:9.2f}{s.p50_ms:9.2f}{s.p95_ms:9.2f}{s.max_ms:9.2f}")
        q = ", ".join(f"{k} {v}" for k, v in self.queue_high_water.items())
        lines.append(f"  peak RSS {self.peak_rss_bytes / 2**20:.0f} MiB; queue high-water: {q}")
        return "\n".join(lines)


@dataclass
class _Item:
    """A raw frame on its way to the infer stage, with pipeline bookkeeping."""

    frame: RawFrame
    t_enter_ns: int
    decode_ns: int | None


@dataclass
class _Enhanced:
    """An enhanced frame on its way to the encode stage; ``epoch``: the CPU gate's forward count when it was made
    (None without a gate)."""

    frame: EnhancedFrame
    epoch: int | None


class _StageState:
    """What the watchdog knows about a stage. Written by the stage's thread, read by the caller's."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.busy_since: float | None = None  # time.monotonic() when it started the current frame
        self.phase = "idle"
        self.index = -1
        self.name_of_frame = ""

    def busy(self, index: int, frame_name: str = "", phase: str = "frame") -> None:
        self.index, self.name_of_frame, self.phase = index, frame_name, phase
        self.busy_since = time.monotonic()

    def idle(self) -> None:
        self.busy_since = None
        self.phase = "idle"


def stalled_stage(states: dict[str, _StageState], now: float, cfg: PipelineConfig) -> tuple[str, float] | None:
    """The stage to declare stalled, with how long it has been busy, or None: a stage busy on one frame for longer
    than its limit (``warmup_timeout_s`` while warming up, else ``stall_timeout_s``).

    When infer is one of several, it is the one: capture and encode can be busy waiting for infer (a decode read or a
    sink write waits while a CPU forward holds the gate), while infer, busy, never waits for them (its forwards do
    not wait for running chunks, and its channel waits are not counted as busy). Blaming a stage held up by a hung
    forward would leave encode waiting for the stuck infer thread and the output unfinalised. Otherwise the stage
    busy longest.
    """
    over: dict[str, float] = {}
    for stage, st in states.items():
        since = st.busy_since
        if since is None:
            continue
        limit = cfg.warmup_timeout_s if st.phase == "warm-up" else cfg.stall_timeout_s
        if now - since > limit:
            over[stage] = now - since
    if not over:
        return None
    stage = "infer" if "infer" in over else max(over, key=over.__getitem__)
    return stage, over[stage]


class _StageFailure(Exception):
    """Internal: a stage's exception with the frame it was working on."""

    def __init__(self, detail: str, exc: BaseException) -> None:
        super().__init__(detail)
        self.detail = detail
        self.exc = exc


def _frame_detail(index: int, name: str, exc: BaseException) -> str:
    msg = str(exc) or type(exc).__name__
    if index < 0 or msg.startswith((f"frame {index} ", f"frame {index}:")):  # capture's errors name it already
        return msg
    if name and name not in msg:
        return f"frame {index} ({name}): {msg}"
    return f"frame {index}: {msg}"


class Pipeline:
    """Runs ``source -> enhancer -> sinks`` on three named threads; see the module docstring for the contract.

    Args:
        source: a capture source (``RawFileSource``, ``SyntheticSource``, a camera): ``live: bool``, and either
            ``__len__`` + ``read(i)`` (files; decoded ahead in parallel) or iteration. Owned by the caller.
        enhancer: ``warm_up(shape, meta)`` and ``process(RawFrame) -> EnhancedFrame`` (:mod:`.enhance`); called
            only from ``redi-infer``. Owned by the caller.
        sinks: outputs (:mod:`.sinks`). The pipeline takes them over: it closes (finalises) each exactly once, in
            reverse order, when ``run()`` ends however it ends.
        config: :class:`PipelineConfig`.
        progress: show a tqdm bar on stderr (only when stderr is a TTY).
        preview: optional :class:`Preview`, driven from the caller's thread with the newest frame. Owned by the
            caller.
        frame_filter: optional ``RawFrame -> RawFrame`` applied to each frame where it is read (on the decode
            workers, concurrently, for a random-access source; on ``redi-capture`` otherwise), e.g.
            :class:`~.hotpixels.HotPixelFilter`; its time counts as decode time.

    ``run()`` may be called once. :meth:`stop` may be called from any thread.
    """

    def __init__(
        self,
        source: Any,
        enhancer: Enhancer,
        sinks: Sequence[Any],
        config: PipelineConfig | None = None,
        *,
        progress: bool = True,
        preview: Preview | None = None,
        frame_filter: Callable[[RawFrame], RawFrame] | None = None,
    ) -> None:
        self.source = source
        self.enhancer = enhancer
        self.sinks = list(sinks)
        self.config = config or PipelineConfig()
        self.progress = progress
        self.preview = preview
        # Applied to every frame where it is read (decode workers, or the capture thread), e.g. --hot-pixels.
        self._filter = frame_filter

        self._live = bool(getattr(source, "live", False))
        self._random_access = not self._live and hasattr(source, "read") and hasattr(source, "__len__")
        if self.config.start and not self._random_access:
            raise ConfigError("start applies to file sources (random access), not to a live or iterated source")
        policy = self.config.policy or (Policy.DROP_OLDEST if self._live else Policy.BLOCK)
        self._stop = threading.Event()
        # Capture->infer: BLOCK for files (no frame lost), DROP_OLDEST for cameras (never fall behind the sensor).
        self._cap_ch = Channel("capture->infer", self.config.queue_size, policy, stop=self._stop)
        # Infer->encode: always BLOCK: an enhanced frame is never thrown away.
        self._enc_ch = Channel("infer->encode", self.config.queue_size, Policy.BLOCK)
        # Preview mailbox: LATEST, the window shows the newest frame and never slows the pipeline.
        self._preview_ch = Channel("preview", 1, Policy.LATEST)
        # Live sources that stamp frames with time.monotonic_ns() at capture: latency counts from that instant.
        self._source_clock = self._live and bool(getattr(source, "timestamps_monotonic", False))
        self._preview_wants_raw = bool(getattr(preview, "wants_raw", False))
        # Live: the window gets each frame as soon as it is enhanced, so capture->display latency does not include
        # the encoder (files: after encoding, so the window shows what was written).
        self._preview_from_infer = preview is not None and self._live

        # The CPU gate: no decode read or sink write starts inside an all-core CPU forward, and a forward that
        # starts beside one uses a thread fewer until it ends (.cpugate).
        self._gate: CpuGate | None = None
        if self.config.cpu_gate and hasattr(enhancer, "cpu_gate"):
            self._gate = CpuGate()
            enhancer.cpu_gate = self._gate

        self._states = {s: _StageState(s) for s in STAGES}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._failures: list[tuple[str, BaseException, str]] = []  # (stage, exc, detail), first wins
        self._stall: str | None = None
        self._ended_by: str | None = None
        self._halted_at: float | None = None
        self._timers = StageTimers()
        self._rss = RssRecorder(self.config.rss_every_frames)
        self._rate = RateMeter(1.0)
        self._in_rate = RateMeter(1.0)
        self._frames_in = 0
        self._frames_out = 0
        self._frames_failed = 0  # written by the failing stage's thread only
        # A frame taken by infer/encode and not yet handed on: lost if that stage stalls or is abandoned.
        self._holding = {"infer": False, "encode": False}  # each written by its own stage's thread only
        self._refused = 0  # enhanced frames the encode channel refused (encode had failed); infer thread only
        self._held_next = 0  # 1 while infer holds the next frame for look-ahead (discarded if the run stops)
        self._skipped: list[tuple[int, str, str]] = []
        self._warned: set[str] = set()  # metadata warnings already logged (capture thread only)
        self._warmup_s = 0.0
        # Set by infer once the enhancer is warm (or infer has ended); a live source is not read meanwhile.
        self._warmed = threading.Event()
        self._signals: list[int] = []  # appended by the signal handler only (no locks in a handler)
        self._force_event = threading.Event()  # set by the handler only; waited on by the guard thread only
        self._guard_quit = False
        self._guard: threading.Thread | None = None
        self._preview_closed = False
        self._ran = False
        bind = getattr(preview, "bind_status", None)
        if callable(bind):
            bind(self.status)

    # -- public control ---------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the run to end early and cleanly (capture stops, in-flight frames are encoded). Any thread."""
        self._halt("stop")

    @property
    def frames_out(self) -> int:
        """Frames written so far (any thread; may be one frame stale)."""
        return self._frames_out

    def status(self) -> PipelineStatus:
        """Counts and rates so far, for a live overlay. Any thread."""
        src_fps = getattr(self.source, "capture_fps", None)
        return PipelineStatus(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            frames_dropped=self._frames_dropped(),
            capture_fps=float(src_fps) if src_fps is not None else self._in_rate.fps,
            output_fps=self._rate.fps,
        )

    def _frames_dropped(self) -> int:
        return self._cap_ch.dropped + self._source_dropped()

    def _source_dropped(self) -> int:
        return int(getattr(self.source, "frames_dropped", 0) or 0)

    # -- run ----------------------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run to the end of the source (or a stop) and return the summary.

        Raises:
            PipelineError: a stage failed or stalled (``.stage``; ``__cause__`` is the stage's exception);
                ``.summary`` holds the partial :class:`RunSummary`.
            Interrupted: SIGINT/SIGTERM; raised after the output was finalised; ``.signum`` and ``.summary``.
        """
        if self._ran:
            raise RuntimeError("Pipeline.run() may be called only once")
        self._ran = True
        t_start = time.monotonic()
        old_handlers = self._install_signals()
        bar = self._make_progress_bar()
        close_error: tuple[BaseException, str] | None = None
        try:
            self._start_threads()
            self._supervise(bar)
        except BaseException:
            # E.g. KeyboardInterrupt when no handler is installed: the stages must still wind down before the join.
            self._halt("error")
            self._enc_ch.cancel()
            raise
        finally:
            self._join_all(self.config.join_timeout_s if not self._forced() else _FORCE_WAIT_S)
            close_error = self._close_sinks()
            if bar is not None:
                bar.update(self._frames_out - bar.n)
                bar.close()
            self._guard_quit = True  # only now: a forced exit stays armed while the sinks are being closed
            if self._guard is not None:
                self._guard.join(1.0)
            self._restore_signals(old_handlers)
        summary = self._summary(time.monotonic() - t_start)
        self._raise_outcome(summary, close_error)
        return summary

    def _start_threads(self) -> None:
        targets = {"capture": self._capture, "infer": self._infer, "encode": self._encode}
        for stage in reversed(STAGES):  # consumers first, so nothing is produced into a void
            t = threading.Thread(target=self._stage_main, args=(stage, targets[stage]), name=f"redi-{stage}",
                                 daemon=True)
            self._threads[stage] = t
            t.start()

    def _stage_main(self, stage: str, body) -> None:
        try:
            body()
        except _StageFailure as f:
            self._fail(stage, f.exc, f.detail)
        except BaseException as exc:  # noqa: BLE001 -- carried to the caller's thread and re-raised there
            self._fail(stage, exc, str(exc) or type(exc).__name__)

    def _fail(self, stage: str, exc: BaseException, detail: str) -> None:
        with self._lock:
            self._failures.append((stage, exc, detail))
            first = len(self._failures) == 1
        if first:
            log.debug("%s failed: %s", stage, detail, exc_info=exc)
        else:
            log.warning("%s also failed (after an earlier failure): %s", stage, detail)
        # A capture failure leaves infer and encode healthy: the frames read before the bad one drain in order
        # (capture closes its channel on the way out), so a stop-on-error run keeps exactly those frames.
        self._halt("error", discard=stage != "capture")

    def _halt(self, reason: str, *, discard: bool = True) -> None:
        """Stop capturing; drop captured-but-unenhanced frames (unless ``discard`` is False); let the rest drain.
        Any thread except a handler."""
        with self._lock:
            if self._ended_by is None:
                self._ended_by = reason
            if self._halted_at is None:
                self._halted_at = time.monotonic()
        self._stop.set()
        if discard:
            self._cap_ch.cancel()

    def _forced(self) -> bool:
        return len(self._signals) >= 2

    # -- stages ---------------------------------------------------------------------------------------------
    def _capture(self) -> None:
        try:
            if self._random_access:
                self._capture_random_access()
            else:
                self._capture_iter()
        finally:
            self._states["capture"].idle()
            self._cap_ch.close()

    def _frame_range(self) -> range:
        """The indices a random-access source is read at: ``start`` on, at most ``max_frames`` of them."""
        cfg = self.config
        stop = len(self.source)
        if cfg.max_frames is not None:
            stop = min(stop, cfg.start + cfg.max_frames)
        return range(min(cfg.start, stop), stop)

    def _timed_read(self, i: int) -> tuple[RawFrame, int]:
        with self._cpu_shared():
            t0 = time.perf_counter_ns()
            frame = self.source.read(i)
            if self._filter is not None:
                frame = self._filter(frame)
            return frame, time.perf_counter_ns() - t0

    def _cpu_shared(self, after_epoch: int | None = None):
        """A decode or encode chunk: waits while an all-core forward holds the CPU gate (if there is one); an encode
        (``after_epoch``) also waits for the next forward to start (:mod:`.cpugate`)."""
        return self._gate.shared(after_epoch) if self._gate is not None else contextlib.nullcontext()

    def _infer_waiting(self):
        """The infer thread waits on a channel: encodes need not wait for its next forward."""
        return self._gate.waiting() if self._gate is not None else contextlib.nullcontext()

    def _skip_or_raise(self, index: int, name: str, exc: BaseException) -> None:
        if isinstance(exc, FrameError) and self.config.on_error is OnError.SKIP:
            index = exc.index if exc.index >= 0 else index
            name = exc.name or name
            reason = str(exc) or type(exc).__name__
            # A source's FrameError already names the frame ("frame 4 (dir/x.dng): ..."); say it once.
            if reason.startswith(f"frame {index} (") and "): " in reason:
                reason = reason.partition("): ")[2]
            log.warning("skipping frame %d (%s): %s", index, name, reason)
            with self._lock:
                self._skipped.append((index, name, reason))
            return
        raise _StageFailure(_frame_detail(index, name, exc), exc) from exc

    def _report_meta_warnings(self, frame: RawFrame) -> None:
        """Log each distinct metadata fallback (no colour matrix, no WB, ...) once per run. Capture thread."""
        for text in frame.meta.warnings:
            if text not in self._warned:
                self._warned.add(text)
                log.warning("%s", text)

    def _capture_random_access(self) -> None:
        src, cfg, st = self.source, self.config, self._states["capture"]
        frames = self._frame_range()
        names = list(getattr(src, "names", []) or [])
        ahead = cfg.decode_workers + 2
        pending: collections.deque[tuple[int, Future]] = collections.deque()
        pool = ThreadPoolExecutor(max_workers=cfg.decode_workers, thread_name_prefix="redi-decode")
        try:
            next_i = frames.start
            while not self._stop.is_set():
                while next_i < frames.stop and len(pending) < ahead:
                    pending.append((next_i, pool.submit(self._timed_read, next_i)))
                    next_i += 1
                if not pending:
                    break
                i, fut = pending.popleft()  # strictly in order: the oldest outstanding read
                name = names[i] if i < len(names) else ""
                st.busy(i, name)
                result = None
                while result is None and not self._stop.is_set():
                    try:
                        result = fut.result(timeout=_POLL_S)
                    except FutureTimeout:
                        continue
                    except Exception as exc:  # noqa: BLE001 -- a decode error: skip or fail the stage
                        st.idle()
                        self._skip_or_raise(i, name, exc)
                        break
                st.idle()
                if result is None:
                    continue
                frame, decode_ns = result
                self._report_meta_warnings(frame)
                if not self._cap_ch.put(_Item(frame, time.monotonic_ns(), decode_ns)):
                    break
                self._frames_in += 1
                self._in_rate.tick()
        finally:
            for _, fut in pending:
                fut.cancel()
            # Reads still running finish (a file decode is bounded); nothing new starts.
            pool.shutdown(wait=True, cancel_futures=True)

    def _capture_iter(self) -> None:
        cfg, st = self.config, self._states["capture"]
        frames = getattr(self.source, "iter_frames", None)
        # A source that takes the stop event (a camera) leaves a blocked read within ~50 ms of a stop.
        it = frames(self._stop) if frames is not None else iter(self.source)
        count = 0
        try:
            while not self._stop.is_set():
                if cfg.max_frames is not None and count >= cfg.max_frames:
                    break
                st.busy(count)
                t0 = time.perf_counter_ns()
                try:
                    frame = next(it)
                    if self._filter is not None:
                        frame = self._filter(frame)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 -- skip a bad frame or fail the stage
                    st.idle()
                    index = getattr(exc, "index", -1)
                    self._skip_or_raise(index if isinstance(index, int) and index >= 0 else count,
                                        getattr(exc, "name", ""), exc)
                    count += 1
                    continue
                decode_ns = time.perf_counter_ns() - t0
                st.idle()
                count += 1
                self._report_meta_warnings(frame)
                t_capture_ns = frame.t_ns if self._source_clock else time.monotonic_ns()
                if self._source_clock:
                    decode_ns = None  # a camera's next() is mostly waiting for the sensor: not a decode time
                if not self._cap_ch.put(_Item(frame, t_capture_ns, decode_ns)):
                    break
                self._frames_in += 1
                self._in_rate.tick()
                if self._live and self._frames_in == 1:  # the first frame handed on (not the first read)
                    self._wait_for_warm_up()
        finally:
            close = getattr(it, "close", None)
            if close is not None and it is not self.source:
                close()

    def _wait_for_warm_up(self) -> None:
        """A live source is read no further until the enhancer has warmed up on its first frame (kernel
        compilation, thread probing, CUDA graphs: up to seconds). The sensor's frames of that time are never taken,
        so they are not counted as dropped, and the run starts when the enhancer can keep up."""
        while not self._warmed.wait(0.05) and not self._stop.is_set():
            pass
        warmed_up = getattr(self.source, "warmed_up", None)
        if callable(warmed_up):
            warmed_up()  # a camera's reader kept reading: what it replaced so far is not a drop

    def _infer(self) -> None:
        st = self._states["infer"]
        enhancer = self.enhancer
        warmed = False
        # File sources: the enhancer sees each frame's successor before the frame (``look_ahead``), so a scene cut
        # takes effect on the cut's own frame. Not for live sources: it would add a frame of latency.
        look_ahead = getattr(enhancer, "look_ahead", None) if not self._live else None
        held = None  # the next item, taken early for look_ahead
        try:
            while True:
                if held is not None:
                    if self._cap_ch.cancelled:
                        break  # a stop: the held frame counts as discarded (self._held_next)
                    item, held, self._held_next = held, None, 0
                else:
                    with self._infer_waiting():
                        item = self._cap_ch.get()
                if item is END:
                    break
                if callable(look_ahead):
                    with self._infer_waiting():
                        held = self._cap_ch.get()
                    if held is END:
                        held = None
                    else:
                        self._held_next = 1
                self._holding["infer"] = True
                frame = item.frame
                warm_up_frame = not warmed
                try:
                    if not warmed:
                        st.busy(frame.index, frame.name, phase="warm-up")
                        t0 = time.monotonic()
                        warm_up = getattr(enhancer, "warm_up", None)
                        if warm_up is not None:
                            warm_up(frame.shape, frame.meta)
                        self._warmup_s = time.monotonic() - t0
                        warmed = True
                        self._warmed.set()
                    st.busy(frame.index, frame.name)
                    if held is not None:
                        look_ahead(held.frame)
                    out = enhancer.process(frame)
                except Exception as exc:  # noqa: BLE001 -- carried to the caller with the frame named
                    self._frames_failed += 1
                    self._holding["infer"] = False
                    raise _StageFailure(_frame_detail(frame.index, frame.name, exc), exc) from exc
                finally:
                    st.idle()
                # A live source's first frame waited for the warm-up: the run's latency figures leave it out.
                out.t_capture_ns = 0 if self._live and warm_up_frame else item.t_enter_ns
                if self._preview_wants_raw:
                    out.raw = frame
                if item.decode_ns is not None:
                    out.timings_ns.setdefault("decode", item.decode_ns)
                if self._preview_from_infer:
                    self._preview_ch.put(out)  # LATEST: never waits
                epoch = self._gate.epoch if self._gate is not None else None
                with self._infer_waiting():
                    accepted = self._enc_ch.put(_Enhanced(out, epoch))
                if not accepted:
                    self._refused += 1  # encode is gone (it failed or was abandoned): counted as discarded
                    self._holding["infer"] = False
                    break
                self._holding["infer"] = False
        finally:
            self._warmed.set()
            if self._gate is not None:
                self._gate.infer_done()
            self._enc_ch.close()
            self._cap_ch.cancel()  # wake capture if it waits on a full channel we no longer read
            if self._preview_from_infer:
                self._preview_ch.close()

    def _encode(self) -> None:
        st = self._states["encode"]
        try:
            while True:
                item = self._enc_ch.get()
                if item is END:
                    break
                out = item.frame
                self._holding["encode"] = True
                st.busy(out.index, out.name)
                try:
                    with self._cpu_shared(item.epoch):
                        t0 = time.perf_counter_ns()
                        for sink in self.sinks:
                            sink.write(out)
                        t1 = time.perf_counter_ns()
                except Exception as exc:  # noqa: BLE001 -- carried to the caller with the frame named
                    self._frames_failed += 1
                    self._holding["encode"] = False
                    raise _StageFailure(_frame_detail(out.index, out.name, exc), exc) from exc
                finally:
                    st.idle()
                self._timers.add_many(out.timings_ns)
                self._timers.add("encode", t1 - t0)
                if out.t_capture_ns:
                    self._timers.add("latency", time.monotonic_ns() - out.t_capture_ns)
                self._frames_out += 1
                self._holding["encode"] = False
                self._rss.tick(self._frames_out)
                self._rate.tick()
                if self.preview is not None and not self._preview_from_infer:
                    self._preview_ch.put(out)
        finally:
            self._enc_ch.cancel()  # infer's next put returns False at once
            self._preview_ch.close()

    # -- supervision (caller's thread) ---------------------------------------------------------------------
    def _alive(self) -> list[str]:
        return [s for s, t in self._threads.items() if t.is_alive()]

    def _supervise(self, bar) -> None:
        cfg = self.config
        handled_signals = 0
        forced_at: float | None = None
        last_rss = 0.0
        while True:
            alive = self._alive()
            if not alive:
                break
            # Signals (recorded by the handler; acted on here, outside the handler).
            if len(self._signals) > handled_signals:
                handled_signals = len(self._signals)
                name = signal.Signals(self._signals[0]).name
                if handled_signals == 1:
                    log.warning("%s: stopping; finishing frames in flight (again to force)", name)
                    self._halt(name)
                elif forced_at is None:
                    forced_at = time.monotonic()
                    log.warning("second signal: abandoning frames in flight")
                    self._halt(name)
                    self._enc_ch.cancel()
            if forced_at is not None and (time.monotonic() - forced_at > _FORCE_WAIT_S or not alive):
                break
            # Watchdog: a stage busy on one frame for too long.
            now = time.monotonic()
            if self._stall is None:
                stalled = stalled_stage(self._states, now, cfg)
                if stalled is not None:
                    stage, busy_s = stalled
                    self._on_stall(stage, self._states[stage], busy_s)
            # A stop that stages do not honour within join_timeout_s: stop waiting for them.
            halted_at = self._halted_at
            if halted_at is not None:
                grace_s = cfg.join_timeout_s + (cfg.stall_timeout_s if self._stall is None else 0)
                if now - halted_at > grace_s:
                    break
            if self._stall is not None and alive == [self._stall]:
                break
            # Preview, progress, memory.
            if self.preview is not None and not self._preview_closed:
                self._pump_preview()
            else:
                time.sleep(_POLL_S)
            if bar is not None and self._frames_out != bar.n:
                bar.update(self._frames_out - bar.n)
            if now - last_rss > 0.5:
                self._rss.sample()
                last_rss = now

    def _pump_preview(self) -> None:
        try:
            frame = self._preview_ch.get(timeout_s=_POLL_S)
        except TimeoutError:
            frame = None
        if frame is None or frame is END:
            if frame is END:
                time.sleep(_POLL_S)
            poll = getattr(self.preview, "poll", None)  # keys and window events while no frame comes
            if poll is None:
                return
            try:
                keep_open = poll()
            except Exception as exc:  # noqa: BLE001 -- a preview failure ends the run like a stage failure
                self._preview_closed = True
                self._fail("preview", exc, str(exc) or type(exc).__name__)
                return
        else:
            try:
                keep_open = self.preview.show(frame, self._rate.fps)
            except Exception as exc:  # noqa: BLE001 -- a preview failure ends the run like a stage failure
                self._preview_closed = True
                self._fail("preview", exc, _frame_detail(frame.index, frame.name, exc))
                return
            if frame.t_capture_ns and not getattr(self.preview, "paused", False):
                self._timers.add("display", time.monotonic_ns() - frame.t_capture_ns)
        if not keep_open:
            self._preview_closed = True  # never shown again: the user closed it
            self._halt("preview")

    def _on_stall(self, stage: str, st: _StageState, busy_s: float) -> None:
        if self._gate is not None:
            self._gate.disable()  # a forward stuck holding the CPU must not keep encode from finishing
        what = "warming up" if st.phase == "warm-up" else "on"
        where = f"frame {st.index}" + (f" ({st.name_of_frame})" if st.name_of_frame else "")
        detail = f"{stage} stalled: no progress for {busy_s:.1f} s {what} {where}"
        exc = TimeoutError(detail)
        with self._lock:
            self._stall = stage
            self._failures.insert(0, (stage, exc, detail))
        log.error("%s", detail)
        if stage == "capture":
            # Like a capture failure: what was read before the hang is still enhanced and encoded. The stuck
            # thread cannot close its channel, so the supervisor does.
            self._halt("error", discard=False)
            self._cap_ch.close()
        else:
            self._halt("error")
        if stage == "infer":
            self._enc_ch.close()  # encode drains what was enhanced, then finalises
        elif stage == "encode":
            self._enc_ch.cancel()

    def _join_all(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for stage in STAGES:
            t = self._threads.get(stage)
            if t is not None:
                # A stage already declared stalled gets a token wait: it is stuck, not winding down.
                t.join(0.05 if stage == self._stall else max(0.0, deadline - time.monotonic()))
        for stage in self._alive():
            log.error("thread redi-%s did not stop within %.1f s; left running (daemon)", stage, timeout_s)

    def _close_sinks(self) -> tuple[BaseException, str] | None:
        enc = self._threads.get("encode")
        if enc is not None and enc.is_alive():
            log.error("redi-encode is still running; sinks not closed from another thread (output not finalised)")
            return None
        first: tuple[BaseException, str] | None = None
        for sink in reversed(self.sinks):
            try:
                sink.close()
            except Exception as exc:  # noqa: BLE001 -- every sink gets its close; the first error is reported
                log.error("closing %r failed: %s", sink, exc)
                if first is None:
                    first = (exc, f"closing {sink!r}: {exc}")
        return first

    # -- outcome -------------------------------------------------------------------------------------------
    def _summary(self, wall_s: float) -> RunSummary:
        stages = self._timers.summaries()
        return RunSummary(
            frames_in=self._frames_in,
            frames_out=self._frames_out,
            frames_dropped=self._cap_ch.dropped,
            frames_dropped_at_source=self._source_dropped(),
            frames_discarded=self._cap_ch.discarded + self._enc_ch.discarded + self._refused + self._held_next,
            frames_failed=self._frames_failed + sum(
                1 for stage, held in self._holding.items() if held and self._threads[stage].is_alive()),
            skipped=list(self._skipped),
            wall_s=wall_s,
            fps=self._frames_out / wall_s if wall_s > 0 else 0.0,
            warmup_s=self._warmup_s,
            stages=stages,
            peak_rss_bytes=max(peak_rss_bytes(), self._rss.max_bytes),
            rss_samples=list(self._rss.samples),
            queue_high_water={ch.name: ch.high_water for ch in (self._cap_ch, self._enc_ch)},
            ended_by=self._ended_by or "end",
        )

    def _raise_outcome(self, summary: RunSummary, close_error: tuple[BaseException, str] | None) -> None:
        if self._failures:
            stage, exc, detail = self._failures[0]
            err = PipelineError(stage, detail if detail.startswith(f"{stage} stalled") else f"{stage} failed: {detail}")
            err.summary = summary  # type: ignore[attr-defined]
            if close_error is not None:
                err.add_note(f"also: {close_error[1]}")
            raise err from exc
        if self._signals:
            signum = self._signals[0]
            name = signal.Signals(signum).name
            exc_i = Interrupted(
                f"interrupted by {name}: {frames_text(summary.frames_out)} written"
                + ("; output finalised" if close_error is None else f"; {close_error[1]}")
            )
            exc_i.signum = signum  # type: ignore[attr-defined]
            exc_i.summary = summary  # type: ignore[attr-defined]
            raise exc_i
        if close_error is not None:
            err = PipelineError("encode", f"encode failed: {close_error[1]}")
            err.summary = summary  # type: ignore[attr-defined]
            raise err from close_error[0]

    # -- signals, progress -------------------------------------------------------------------------------------
    def _install_signals(self) -> dict[int, Any] | None:
        if not self.config.handle_signals or threading.current_thread() is not threading.main_thread():
            return None
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                old[sig] = signal.signal(sig, self._on_signal)
            except (ValueError, OSError):  # not supported here (e.g. some embedded interpreters)
                pass
        self._force_event.clear()
        self._guard = threading.Thread(target=self._guard_main, name="redi-guard", daemon=True)
        self._guard.start()
        return old

    def _on_signal(self, signum: int, _frame) -> None:
        # Runs on the main thread between bytecodes: no locks the main thread might hold. list.append is atomic;
        # _force_event is touched only here and by the guard thread.
        self._signals.append(signum)
        if len(self._signals) == 2:
            self._force_event.set()

    def _guard_main(self) -> None:
        """Second signal: if run() has not finished within the grace period, end the process (exit status 130)."""
        while not self._guard_quit:
            if self._force_event.wait(0.1):
                deadline = time.monotonic() + _FORCE_GRACE_S
                while time.monotonic() < deadline:
                    if self._guard_quit:
                        return
                    time.sleep(0.05)
                sys.stderr.write("redi-stream: forced exit\n")
                sys.stderr.flush()
                os._exit(130)

    def _restore_signals(self, old: dict[int, Any] | None) -> None:
        if old is None:
            return
        for sig, handler in old.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError):
                pass

    def _make_progress_bar(self):
        if not self.progress or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        total = len(self._frame_range()) if self._random_access else None
        return tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True, leave=True)
