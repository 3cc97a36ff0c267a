"""Runners: execute a RediNet on host arrays, on the CPU or on CUDA (three streams, optional CUDA graphs).

Threading: a runner is created, used and closed on one thread (the pipeline's ``redi-infer`` thread); CUDA work
is only ever issued from it. Only host arrays go in and come out.

* :class:`TorchRunner` is what the pipeline uses: ``run(x: f32[N, 1, H, W]) -> f32[N, H, W, 3]`` (NHWC host).
  On the CPU it runs :class:`~redi_stream.model.fast.FastRediNet` (same function as ``RediNet.forward``, NHWC,
  fewer copies); on CUDA it delegates to :class:`StreamedRunner`.
* :class:`StreamedRunner` (CUDA only) owns three CUDA streams and their events, created once. Its ``forward``
  writes the fork/join of SPEC §2: HSE, MSE and LSE on their own streams after ``s2`` is ready, the main stream
  waits for all three, then FB1 and FB2. Optionally the whole device program (cast, forward, NHWC float32) is
  captured once per input shape as a CUDA graph and replayed.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from redi_stream.errors import ConfigError, RediStreamError
from redi_stream.glibc import keep_freed_memory
from redi_stream.model.fast import FastRediNet
from redi_stream.model.net import SIZE_MULTIPLE, RediNet, check_input


class Precision(enum.StrEnum):
    """Arithmetic precision of the network's weights and activations (inputs and outputs stay float32)."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def dtype(self) -> torch.dtype:
        return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[self]


#: Precisions each device type runs. fp16 convolutions on the CPU have no fast kernels here (no AVX512-FP16).
VALID_PRECISIONS = {"cpu": (Precision.FP32, Precision.BF16), "cuda": tuple(Precision)}


class RunnerClosedError(RediStreamError, ValueError):
    """``run`` was called on a closed runner (like I/O on a closed file)."""


def parse_precision(precision: str | Precision, device_type: str) -> Precision:
    """Validate ``precision`` for ``device_type`` ('cpu' or 'cuda'); ConfigError lists the valid choices."""
    valid = VALID_PRECISIONS[device_type]
    names = ", ".join(p.value for p in valid)
    try:
        p = Precision(precision)
    except ValueError:
        raise ConfigError(f"unknown precision {precision!r}; valid on {device_type}: {names}") from None
    if p not in valid:
        raise ConfigError(f"precision {p.value!r} needs CUDA; valid on {device_type}: {names}")
    return p


def parse_device(device: str | torch.device) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> torch.device (CUDA index resolved); ConfigError when unknown or unavailable."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; valid: cpu, cuda, cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {device!r}; valid: cpu, cuda, cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__}); "
                              "valid here: cpu")
        index = torch.cuda.current_device() if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", index)
    return dev


def check_host_input(x: np.ndarray) -> np.ndarray:
    """Validate a host batch and return it as C-contiguous float32 (no copy when it already is).

    Raises:
        ConfigError: not a (N, 1, H, W) array with H, W positive multiples of 32.
    """
    if not isinstance(x, np.ndarray):
        raise ConfigError(f"runner input must be a NumPy array, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] == 0:
        raise ConfigError(f"runner input must be (N, 1, H, W) float32, got shape {x.shape}")
    h, w = x.shape[2:]
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or h == 0 or w == 0:
        raise ConfigError(f"runner input height and width must be positive multiples of {SIZE_MULTIPLE}, got {h}x{w}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _follow_gate(gate, threads: int) -> None:
    """Between two ops of a gated forward: use as many of ``threads`` as the gate allows now (``CpuGate.threads``:
    one fewer while a decode/encode chunk that started before the forward still runs)."""
    n = gate.threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@contextlib.contextmanager
def serial_thread() -> Iterator[None]:
    """While inside: torch's CPU ops on the calling thread run on one thread, so this thread never starts an OpenMP
    thread team; threads started meanwhile still get the process-wide count. On leaving, the caller's count is back.

    Why: the pipeline runs the network on its ``redi-infer`` thread. If the main thread also owns a team (it does
    after any large torch op, e.g. converting the weights), libgomp manages more threads than there are cores and
    cuts every barrier's spin-wait from ~300,000 spins to 100: the forward's threads then sleep and wake at each of
    its ops. Measured on the 2-core Intel machine (1080p, ``docs/PERF_NOTES.md``): a forward on another thread takes
    50 ms in bf16 and 97 ms in fp32 while the main thread owns a team, 40 and 87 ms while it does not.
    ``redi-stream``'s run and its bench hold this around everything the main thread does.
    """
    before = torch.get_num_threads()  # torch's once-per-thread setup happens here, so it cannot undo the 1 later
    try:
        torch.set_num_threads(1)  # this thread's OpenMP count, and the count threads started later begin with
        _set_threads_for_new_threads(before)
        yield
    finally:
        torch.set_num_threads(before)


def _set_threads_for_new_threads(n: int) -> None:
    """``torch.set_num_threads(n)`` from a short-lived thread: with OpenMP it sets the calling thread's count (which
    dies with that thread) and the count that threads started later begin with, which is the part wanted here."""
    t = threading.Thread(target=torch.set_num_threads, args=(n,), name="redi-threads")
    t.start()
    t.join()


class ThreadTuner:
    """Chooses torch's intra-op thread count on the CPU by timing whole forwards (``num_threads="auto"``).

    Why: on a small shared machine the best count depends on what else runs. Measured at 1088x1920 on the 2-core
    development machine: idle, 2 threads are ~1.7x faster than 1; with one core busy (a training job, or the
    pipeline's own decode/encode threads), 2 threads are ~3.5x *slower* than 1, because every OpenMP parallel
    region waits at its barrier for the thread that shares a core with the other process (PERF_NOTES.md).

    Protocol (one thread): ``threads = begin()`` before a forward (it calls ``torch.set_num_threads``), then
    ``end(seconds)``. The first ``2 * len(candidates)`` forwards after :meth:`reset` try each candidate twice in
    turn (the first of all is not counted: it allocates); then the fewest threads whose best time is within
    ``margin`` (1.2x) of the fastest candidate's are used. A re-probe (each candidate once)
    happens every ``reprobe_every`` forwards, and early when the chosen count's time drifts above ``drift`` times its
    probed time for 3 forwards in a row (the machine's load changed). A re-probe costs at most one forward at the
    slower count (~1% at the default period with one core busy).
    """

    def __init__(self, candidates: tuple[int, ...] | None = None, *, reprobe_every: int = 200, drift: float = 1.3,
                 margin: float = 1.2):
        if candidates is None:
            cores = os.cpu_count() or 1
            candidates = tuple(sorted({1, max(1, cores // 2), cores}))
        if not candidates or any(not isinstance(c, int) or c < 1 for c in candidates):
            raise ConfigError(f"thread candidates must be positive integers, got {candidates!r}")
        self.candidates = tuple(candidates)
        self.reprobe_every = int(reprobe_every)
        self.drift = float(drift)
        self.margin = float(margin)
        self.chosen = self.candidates[-1]
        self.probed_s: dict[int, float] = {}
        self.reset()

    def reset(self) -> None:
        """Start over (a new input shape): probe every candidate again."""
        self._queue = [self.candidates[0]] + [c for _ in range(2) for c in self.candidates]
        self._skip_first = True
        self._times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self._since_probe = 0
        self._slow_streak = 0
        self._current = self.chosen

    def begin(self) -> int:
        self._current = self._queue[0] if self._queue else self.chosen
        if torch.get_num_threads() != self._current:
            torch.set_num_threads(self._current)
        return self._current

    def end(self, seconds: float) -> None:
        if self._queue:
            self._queue.pop(0)
            if self._skip_first:
                self._skip_first = False
            else:
                self._times[self._current].append(seconds)
            if not self._queue:
                self.probed_s = {c: min(v) for c, v in self._times.items() if v}
                best = min(self.probed_s.values())
                # The fewest threads within ``margin`` of the fastest: more threads win only when clearly faster,
                # since their failure mode under load (~3.5x slower) is far worse than one thread's (~1.7x).
                self.chosen = min(c for c, t in self.probed_s.items() if t <= self.margin * best)
                self._times = {c: [] for c in self.candidates}
                self._since_probe = 0
                self._slow_streak = 0
            return
        self._since_probe += 1
        ref = self.probed_s.get(self.chosen)
        self._slow_streak = self._slow_streak + 1 if ref is not None and seconds > self.drift * ref else 0
        if self._since_probe >= self.reprobe_every or self._slow_streak >= 3:
            self._queue = list(self.candidates)


@functools.lru_cache(maxsize=None)
def cpu_has_amx_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bf16 matrices in AMX tiles (Intel Xeon from the 4th generation on), where oneDNN
    runs the network's bf16 convolutions about twice as fast as fp32 (``docs/PERF_NOTES.md``, "bf16 on AMX").
    Read from the kernel's CPU flags; False where they cannot be read (other systems)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def auto_cpu_precision(bits_out: int) -> str:
    """What ``--precision auto`` runs the CPU network in: bf16 where the CPU has AMX and the output is 8-bit (bf16
    keeps 8 significant bits: finer than an 8-bit code, coarser than a 16-bit one), else fp32."""
    return "bf16" if bits_out == 8 and cpu_has_amx_bf16() else "fp32"


class TorchRunner:
    """Run a RediNet on host batches: ``run(f32[N, 1, H, W]) -> f32[N, H, W, 3]`` in [0, 1].

    Args:
        model: a RediNet (weight-normalised or folded). The runner works on its own folded copy; ``model`` is not
            modified.
        device: 'cpu', 'cuda' or 'cuda:N'.
        precision: 'fp32', 'fp16' (CUDA only) or 'bf16'.
        streams: on CUDA, run HSE/MSE/LSE on three streams (``StreamedRunner``); False runs them in sequence.
        cuda_graph: on CUDA, capture the device program once per input shape and replay it.
        fast: on CUDA, run :class:`FastRediNet` on one stream instead of the spec forward (``streams`` then does
            not apply); the fastest of the measured CUDA forms (``docs/PERF_NOTES.md``). The CPU always runs it.
        num_threads: CPU only: torch intra-op threads, set on the thread that calls :meth:`run` (OpenMP's count is
            per thread): an int, ``"auto"`` (a :class:`ThreadTuner` times the candidates on the first frames and
            re-checks now and then), or None to leave torch's setting alone.
        reuse_memory: CPU only: call :func:`keep_freed_memory` (process-wide glibc malloc setting) so activations
            are not page-faulted in afresh on every forward (~25% of the CPU forward's time at 1080p otherwise).

    Buffer ownership: the returned array belongs to the runner and is overwritten by the next ``run`` call with
    the same shape (one output buffer per shape is kept); copy it to keep it longer. On CUDA it lives in pinned
    host memory. The input array is only read during the call.

    Threads: create, ``warm_up``, ``run`` and ``close`` on one thread. ``close()`` is idempotent; the runner is a
    context manager.

    ``cpu_gate`` (attribute, default None): an object whose ``forward(exclusive, shrink=True)`` context manager wraps
    every CPU forward (``stream.cpugate.CpuGate``: it keeps new decode and encode chunks out of forwards that use
    every core, ``exclusive=True`` when the forward runs on ``os.cpu_count()`` threads), and whose ``threads(n)`` the
    forward asks between its ops (``FastRediNet.between_ops``) how many threads to use while chunks that started
    before it still run. The thread count is back to the chosen one after each forward. The tuner's timing starts
    after the gate is entered.

    CPU: runs :class:`FastRediNet` (NHWC, H/2 convs moved to H/4, fewer copies). ``redi-stream bench`` and
    ``python -m redi_stream.model.bench`` measure it against the plain forward on the machine at hand; the figures
    and what each step bought are in ``docs/PERF_NOTES.md``.
    """

    def __init__(
        self,
        model: RediNet,
        device: str | torch.device = "cpu",
        precision: str | Precision = "fp32",
        streams: bool = True,
        cuda_graph: bool = True,
        *,
        fast: bool = False,
        num_threads: int | str | None = None,
        reuse_memory: bool = False,
    ) -> None:
        if not isinstance(model, RediNet):
            raise ConfigError(f"TorchRunner needs a RediNet, got {type(model).__name__}")
        self.device = parse_device(device)
        self.precision = parse_precision(precision, self.device.type)
        self.meta = getattr(model, "meta", None)
        self._closed = False
        self._streamed: StreamedRunner | None = None
        self._fast: FastRediNet | None = None
        self._tuner: ThreadTuner | None = None
        self._fixed_threads: int | None = None
        self._outputs: dict[tuple[int, ...], np.ndarray] = {}
        self.cpu_gate = None
        if self.device.type == "cuda":
            self._streamed = StreamedRunner(model, self.device, self.precision, cuda_graph=cuda_graph,
                                            sequential=fast or not streams, fast=fast)
        else:
            if num_threads == "auto":
                self._tuner = ThreadTuner()
            elif num_threads is not None:
                if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
                    raise ConfigError(f"num_threads must be a positive integer, 'auto' or None, got {num_threads!r}")
                self._fixed_threads = num_threads  # applied in run(), on the thread that runs the network
            if reuse_memory:
                keep_freed_memory(True)
            self._fast = FastRediNet(model).to(self.precision.dtype).eval()

    @property
    def num_threads(self) -> int | None:
        """CPU: the intra-op thread count in use (the tuner's choice with ``"auto"``); None on CUDA."""
        if self.device.type == "cuda":
            return None
        if self._tuner is not None:
            return self._tuner.chosen
        return self._fixed_threads if self._fixed_threads is not None else torch.get_num_threads()

    def warm_up(self, shape: tuple[int, ...]) -> None:
        """Prepare for inputs of ``shape`` ((H, W) or (N, 1, H, W)): buffers, CUDA graph, thread choice.

        Runs the network on zeros: once on CUDA (graph capture happens there), on the CPU until the thread tuner
        (``num_threads="auto"``) has chosen. Call on the thread that will call ``run``.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) == 2:
            shape = (1, 1) + shape
        x = np.zeros(shape, dtype=np.float32)
        self.run(x)
        while self._tuner is not None and self._tuner._queue:
            self.run(x)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Enhance one batch. ``x``: f32 (N, 1, H, W), H and W multiples of 32. Returns f32 (N, H, W, 3) (NHWC).

        The result is owned by the runner and valid until the next ``run`` call (see the class docstring).

        Raises:
            ConfigError: bad shape; RunnerClosedError: the runner is closed.
        """
        if self._closed:
            raise RunnerClosedError("TorchRunner is closed")
        x = check_host_input(x)
        if self._streamed is not None:
            return self._streamed.run(x)
        n, _, h, w = x.shape
        out = self._outputs.get((n, h, w))
        if out is None:
            self._outputs.clear()  # keep one output buffer: a new shape usually means a new source
            out = self._outputs[(n, h, w)] = np.empty((n, h, w, 3), dtype=np.float32)
            if self._tuner is not None:
                self._tuner.reset()
        tuner = self._tuner
        if tuner is not None:
            threads = tuner.begin()
        else:
            if self._fixed_threads is not None and torch.get_num_threads() != self._fixed_threads:
                torch.set_num_threads(self._fixed_threads)  # this thread's count (OpenMP's is per thread)
            threads = torch.get_num_threads()
        gate = self.cpu_gate
        all_cores = threads >= (os.cpu_count() or 1)
        with gate.forward(all_cores, shrink=True) if gate is not None else contextlib.nullcontext():
            t0 = time.perf_counter()
            if gate is not None and all_cores:
                self._fast.between_ops = functools.partial(_follow_gate, gate, threads)
            try:
                with torch.inference_mode():
                    self._fast(torch.from_numpy(x).to(self.precision.dtype), out=torch.from_numpy(out))
            finally:
                self._fast.between_ops = None
                if torch.get_num_threads() != threads:
                    torch.set_num_threads(threads)
            seconds = time.perf_counter() - t0
        if tuner is not None:
            tuner.end(seconds)
        return out

    def close(self) -> None:
        """Release the model, buffers and (on CUDA) streams and graphs. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._streamed is not None:
            self._streamed.close()
        self._streamed = None
        self._fast = None
        self._outputs.clear()

    def __enter__(self) -> "TorchRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class _Program:
    """Device buffers (and the graph, when captured) for one input shape."""

    host_in: Tensor  # pinned f32 (N, 1, H, W)
    host_out: Tensor  # pinned f32 (N, H, W, 3)
    dev_in: Tensor  # f32 (N, 1, H, W) on the device: the graph's static input
    dev_out: Tensor | None = None  # f32 (N, H, W, 3): the graph's static output
    graph: "torch.cuda.CUDAGraph | None" = None
    keep: tuple[Tensor, ...] = ()  # memory the graph writes that the program does not otherwise own


class StreamedRunner:
    """CUDA only: HSE, MSE and LSE on three streams, joined before FB1/FB2; optional CUDA graph per input shape.

    Args:
        model: a RediNet; the runner keeps its own folded copy on ``device`` in ``precision``.
        device: a CUDA device ('cuda', 'cuda:N').
        precision: 'fp32', 'fp16' or 'bf16' (weights and activations converted with ``.to(dtype)``). 'fp32'
            follows torch's process-wide TF32 switch for cuDNN convolutions (``torch.backends.cudnn.allow_tf32``,
            on by default); the runner does not change it.
        cuda_graph: capture the device program (cast, forward, NHWC float32 output) once per input shape. The
            first call with a new shape warms up on a side stream (cuDNN/cuBLAS initialise lazily and must not do
            so during capture), then captures; later calls copy into the static input and replay.
        sequential: run the three trunks one after the other on the current stream (``RediNet.forward``).
        channels_last: keep the weights (and the trunks' input) in channels-last memory, so that cuDNN picks its
            NHWC kernels (the tensor cores' native layout in fp16).
        fast: run :class:`~redi_stream.model.fast.FastRediNet` (the NHWC rewrite made for the CPU: H/2 convs at H/4,
            LSE folded into FB2) instead of the spec forward; one stream, so it needs ``sequential=True``.

    The streams and events are created once here and reused; ``forward`` is the one place that forks and joins.
    Threads: construct, call and close from one thread. ``close()`` is idempotent.
    """

    def __init__(
        self,
        model: RediNet,
        device: str | torch.device = "cuda",
        precision: str | Precision = "fp16",
        *,
        cuda_graph: bool = True,
        sequential: bool = False,
        channels_last: bool = False,
        fast: bool = False,
    ) -> None:
        self.device = parse_device(device)
        if self.device.type != "cuda":
            raise ConfigError(f"StreamedRunner needs a CUDA device, got {device!r}; use TorchRunner on the CPU")
        if fast and not sequential:
            raise ConfigError("StreamedRunner: fast=True runs one stream; pass sequential=True with it")
        self.precision = parse_precision(precision, "cuda")
        self.cuda_graph = bool(cuda_graph)
        self.sequential = bool(sequential)
        self.channels_last = bool(channels_last)
        self._closed = False
        net = model.folded_copy()
        net.requires_grad_(False)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net: RediNet | None = net.to(self.device, self.precision.dtype)
        self.fast_net: FastRediNet | None = None
        if fast:
            self.fast_net = FastRediNet(model).eval().to(self.device, self.precision.dtype)
        with torch.cuda.device(self.device):
            self._streams = tuple(torch.cuda.Stream(self.device) for _ in range(3))
            self._fork = torch.cuda.Event()
            self._done = tuple(torch.cuda.Event() for _ in range(3))
        self._programs: dict[tuple[int, ...], _Program] = {}

    # --- device-side ------------------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """(N, 1, H, W) device tensor in the runner's dtype -> (N, 3, H, W) in [0, 1], same dtype.

        Issued on the current stream, which is the "main" stream of the fork/join (also while capturing a graph,
        when it is the capture stream and the side streams join the capture through the fork event).
        """
        net = self._net()
        if self.fast_net is not None:
            return self.fast_net(x).permute(0, 3, 1, 2)  # NHWC memory: the permute back in _program_step is free
        if self.sequential:
            return net(x)
        check_input(x)
        main = torch.cuda.current_stream(self.device)
        s2 = net.unshuffle(x)
        if self.channels_last:
            s2 = s2.contiguous(memory_format=torch.channels_last)
        self._fork.record(main)
        outs = []
        for stream, done, branch in zip(self._streams, self._done, (net.hse, net.mse, net.lse)):
            stream.wait_event(self._fork)
            with torch.cuda.stream(stream):
                outs.append(branch(s2))
                done.record(stream)
        for done in self._done:
            main.wait_event(done)
        if not torch.cuda.is_current_stream_capturing():
            # Cross-stream uses: s2 (made on main) is read on the side streams, the outputs (made there) are read
            # on main. The fork/join above already orders every later reuse of their memory, but telling the
            # caching allocator keeps that true even if a caller keeps these tensors around.
            for stream in self._streams:
                s2.record_stream(stream)
            for y in outs:
                y.record_stream(main)
        hse_out, mse_out, lse_out = outs
        return net.fb2(lse_out, net.fb1(mse_out, hse_out)).clamp_(0.0, 1.0)

    def _program_step(self, x_f32: Tensor) -> Tensor:
        """The whole device program: f32 (N, 1, H, W) -> f32 (N, H, W, 3) contiguous."""
        y = self.forward(x_f32.to(self.precision.dtype))
        return y.permute(0, 2, 3, 1).to(torch.float32).contiguous()

    def run_device(self, x: Tensor) -> Tensor:
        """Device f32 (N, 1, H, W) -> device f32 (N, H, W, 3), on the current stream (graph replay if enabled).

        With graphs the result is the graph's static output tensor: overwritten by the next call of this shape.
        """
        if self._closed:
            raise RunnerClosedError("StreamedRunner is closed")
        with torch.cuda.device(self.device):
            if not self.cuda_graph:
                return self._program_step(x)
            prog = self._program(tuple(x.shape))
            prog.dev_in.copy_(x)
            prog.graph.replay()
            return prog.dev_out

    # --- host-side ----------------------------------------------------------------------------------------------
    def run(self, x: np.ndarray) -> np.ndarray:
        """Host f32 (N, 1, H, W) -> host f32 (N, H, W, 3) (pinned; owned by the runner, valid until the next run).

        Waits for the device: when it returns, the pinned input slot is free again (its H2D copy has completed).
        """
        if self._closed:
            raise RunnerClosedError("StreamedRunner is closed")
        x = check_host_input(x)
        with torch.cuda.device(self.device):
            prog = self._program(tuple(x.shape))
            prog.host_in.numpy()[...] = x
            prog.dev_in.copy_(prog.host_in, non_blocking=True)
            if prog.graph is not None:
                prog.graph.replay()
                y = prog.dev_out
            else:
                y = self._program_step(prog.dev_in)
            prog.host_out.copy_(y, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
        return prog.host_out.numpy()

    def _program(self, shape: tuple[int, ...]) -> _Program:
        prog = self._programs.get(shape)
        if prog is not None:
            return prog
        n, _, h, w = shape
        prog = _Program(
            host_in=torch.empty(shape, dtype=torch.float32, pin_memory=True),
            host_out=torch.empty((n, h, w, 3), dtype=torch.float32, pin_memory=True),
            dev_in=torch.zeros(shape, dtype=torch.float32, device=self.device),
        )
        if self.cuda_graph:
            self._capture(prog)
        self._programs[shape] = prog
        return prog

    def _capture(self, prog: _Program) -> None:
        main = torch.cuda.current_stream(self.device)
        warm = torch.cuda.Stream(self.device)
        warm.wait_stream(main)
        with torch.cuda.stream(warm):
            for _ in range(3):
                self._program_step(prog.dev_in)
        main.wait_stream(warm)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            prog.dev_out = self._program_step(prog.dev_in)
        prog.graph = graph
        if self.fast_net is not None:
            prog.keep = self.fast_net.scratch_tensors()  # replaced in fast_net by the next shape's, still ours

    def _net(self) -> RediNet:
        if self.net is None:
            raise RunnerClosedError("StreamedRunner is closed")
        return self.net

    def close(self) -> None:
        """Wait for the device, then free graphs, buffers, streams and the model. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        torch.cuda.synchronize(self.device)
        for prog in self._programs.values():
            if prog.graph is not None:
                prog.graph.reset()
        self._programs.clear()
        self._streams = ()
        self._done = ()
        self.net = None
        self.fast_net = None

    def __enter__(self) -> "StreamedRunner":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
